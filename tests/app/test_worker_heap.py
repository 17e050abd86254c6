"""A web worker keeps what lives as long as it does (imports, loaded models) out of the collector's full passes
(issue 22): a pass over them took 200-350 ms at a time and set the list pages' p99."""

from __future__ import annotations

import gc

import pytest

from app.migrate import upgrade
from app.services.inference import ModelCache
from tests.app.conftest import make_client


@pytest.fixture()
def empty_store(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    upgrade(url)
    return url


def frozen(obj: object) -> bool:
    """Tracked by the collector, yet in none of its generations: in the permanent one."""
    assert gc.is_tracked(obj)
    return not any(o is obj for o in gc.get_objects())


def test_start_up_freezes_what_is_alive_and_requests_objects_stay_collectable(empty_store):
    before = ["made before start-up", []]
    with make_client(empty_store) as client:
        assert client.get("/").status_code == 200
        after = ["made after start-up", []]
        assert frozen(before)
        assert not frozen(after)


def test_a_loaded_model_is_frozen_with_it(stored_sae):
    runnable = ModelCache().load(stored_sae)
    assert frozen(runnable.lm.model)
    assert frozen(next(runnable.lm.model.parameters()))
