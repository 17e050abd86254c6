"""Store fixtures: every store test runs on SQLite and on a throw-away PostgreSQL database."""

from __future__ import annotations

import os
import re
import uuid

import psycopg
import pytest
import torch

from app import crud
from app.db import make_engine, session_factory
from app.migrate import upgrade
from app.models import Base
from sae_core.records import RecordConfig, record_sae
from sae_core.sites import parse_site
from tests.core.tiny_sae import TinySAE
from tests.factories import tiny_model, tiny_tokenizer

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"


def pg_admin() -> psycopg.Connection:
    """An autocommit connection to the server's `test` database; skips (fails under CI's
    SAESCOPE_REQUIRE_POSTGRES=1) where no server answers."""
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as err:
        reason = f"PostgreSQL at 127.0.0.1:5432 is not reachable ({str(err).strip().splitlines()[0]})"
        if os.environ.get("SAESCOPE_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " and SAESCOPE_REQUIRE_POSTGRES=1")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh PostgreSQL database for this test run, dropped at the end."""
    admin = pg_admin()
    name = f"saescope_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path_factory):
    """A migrated database URL on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'test.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    return url


@pytest.fixture()
def engine(db_url):
    engine = make_engine(db_url)
    yield engine
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    engine.dispose()


@pytest.fixture()
def session(engine):
    with session_factory(engine)() as session:
        yield session


def make_record(seed: int = 0, d_sae: int = 24, n_contexts: int = 12):
    """A real recording pass over a tiny model and SAE."""
    gen = torch.Generator().manual_seed(seed)
    ctx = torch.randint(3, 512, (n_contexts, 20), generator=gen)
    ctx[:, 0] = 0
    cfg = RecordConfig(n_top=4, before=5, after=2, n_intervals=3, per_interval=2, batch_size=5)
    return record_sae(tiny_model("llama"), TinySAE(d_sae=d_sae, seed=seed), list(ctx),
                      site=parse_site("layers.1.resid_post"), tokenizer=tiny_tokenizer(), cfg=cfg)


@pytest.fixture(scope="session")
def records():
    """Two different recordings of the same 24-feature SAE shape."""
    return make_record(seed=0), make_record(seed=1)


# Web app fixtures: a real SAE saved on disk, recorded over the saved tiny model, served by create_app.


@pytest.fixture()
def stored_sae(session, web_sae):
    """The web SAE registered and recorded into this test's store."""
    from app.ingest import store_record
    from app.pipeline import register_sae

    loaded, record, model_spec = web_sae
    row = register_sae(session, loaded=loaded, model_spec=model_spec)
    store_record(session, sae_id=row.id, record=record, dataset="random tokens")
    return row


def make_client(db_url: str, **settings):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    return TestClient(create_app(Settings(database_url=db_url, secret_key="test-secret", **settings)))


@pytest.fixture()
def client(engine, db_url):
    """A browser-like client of the app on this test's store (reading open)."""
    with make_client(db_url) as c:
        yield c


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(client) -> str:
    """The CSRF token the app put in this client's forms."""
    return CSRF_RE.search(client.get("/login").text).group(1)


def add_user(session, name: str, role: str = "labeller", password: str = "pw-" + "x" * 8):
    from app.security import hash_password

    return crud.create_user(session, name=name, password_hash=hash_password(password), role=role)


def log_in(client, name: str, password: str = "pw-" + "x" * 8) -> str:
    """Sign the client in through the login form; returns its CSRF token."""
    token = csrf_of(client)
    response = client.post("/login", data={"name": name, "password": password, "csrf_token": token},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    return token


@pytest.fixture()
def labeller(client, session):
    """The client signed in as a labeller; yields (user, csrf token)."""
    user = add_user(session, "ada")
    return user, log_in(client, "ada")


@pytest.fixture()
def mapped_sae(session, stored_sae):
    """The stored web SAE with a feature map (small clusters, so its 24 features make several)."""
    from app.mapping import map_into_store
    from sae_core.maps import MapConfig

    map_into_store(session, sae_row=stored_sae, cfg=MapConfig(n_epochs=50, min_cluster_size=3, min_samples=2))
    return stored_sae
