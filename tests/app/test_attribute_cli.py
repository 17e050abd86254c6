"""`saescope attribute --sae-set`: a stored set's SAEs and model, read from the store."""

from __future__ import annotations

from functools import partial

from app import crud
from app.cli import app
from app.db import make_engine, session_factory
from app.migrate import open_store
from app.pipeline import read_sae, register_sae
from tests.conftest import invoke_cli
from tests.core.attribution_setup import SITES, tiny_sae

invoke = partial(invoke_cli, app)


def test_attribute_reads_a_stored_set(tmp_path, tiny_model_dir):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    open_store(url, migrate=True).dispose()
    engine = make_engine(url)
    with session_factory(engine)() as session:
        for i, site in enumerate(SITES):
            directory = tiny_sae(site, model=tiny_model_dir.name, seed=i).save(tmp_path / f"sae{i}")
            row = register_sae(session, loaded=read_sae(directory), model_spec=str(tiny_model_dir))
            crud.add_to_set(session, sae=row, set_name="tiny")
    engine.dispose()
    code, out = invoke("attribute", "--sae-set", "tiny", "--db", url, "--prompt", "hello world", "--target", "x",
                       "--top", 4, "--verify", 4)
    assert code == 0, out
    assert "layers.0.resid_post" in out or "layers.2.resid_post" in out
    assert "Spearman" in out
    code, out = invoke("attribute", "--sae-set", "nope", "--db", url, "--prompt", "hi", "--target", "x")
    assert code == 2 and "no set of SAEs 'nope'" in out
    code, out = invoke("attribute", "--prompt", "hi", "--target", "x")
    assert code == 2 and "give --sae-set (a stored set) or --sae" in out
