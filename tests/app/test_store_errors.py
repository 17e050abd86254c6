"""A store that cannot be used (not a database, an unreachable server, a newer schema, an unreadable URL) is one
line from every command that opens it and from `serve` before it starts: exit 2, no traceback, no password."""

from __future__ import annotations

import sqlite3
from functools import partial

import pytest
import uvicorn

from app.cli import app
from app.migrate import StoreError, open_store, upgrade
from sae_core.provenance import Provenance
from sae_core.saes import SAEConfig, build_sae
from sae_core.sites import parse_site
from tests.conftest import invoke_cli
from tests.spawn import free_port

invoke = partial(invoke_cli, app)
PASSWORD = "s3cret-pw"


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    cfg = SAEConfig(architecture="relu", d_in=32, d_sae=24,
                    provenance=Provenance(model="tiny", site=parse_site("layers.1.resid_post")))
    return build_sae(cfg, seed=0).save(tmp_path_factory.mktemp("sae") / "tiny-sae")


def not_a_database(tmp_path) -> tuple[str, str, str]:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 200)
    url = f"sqlite:///{path}"
    return url, url, "file is not a database"


def unreachable_postgres(_tmp_path) -> tuple[str, str, str]:
    url = f"postgresql://saescope:{PASSWORD}@127.0.0.1:{free_port()}/store"
    return url, url.replace(PASSWORD, "***"), "connection failed"


def newer_schema(tmp_path) -> tuple[str, str, str]:
    path = tmp_path / "newer.db"
    upgrade(f"sqlite:///{path}")
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'f00dfacef00d'")
    url = f"sqlite:///{path}"
    return url, url, "schema revision f00dfacef00d, which this saescope does not know"


def unknown_driver(_tmp_path) -> tuple[str, str, str]:
    url = f"mongodb://saescope:{PASSWORD}@127.0.0.1/store"
    return url, url.replace(PASSWORD, "***"), "cannot read the database URL"


CASES = [not_a_database, unreachable_postgres, newer_schema, unknown_driver]

COMMANDS = {
    "db upgrade": lambda _sae, _tmp: ["db", "upgrade"],
    "import": lambda sae, _tmp: ["import", "--sae", sae],
    "record": lambda sae, _tmp: ["record", "--sae", sae, "--tokens", 64],
    "export": lambda _sae, tmp: ["export", "--sae", "1", "--out", tmp / "out"],
    "demo": lambda _sae, tmp: ["demo", "--out", tmp / "demo", "--no-serve"],
    "serve": lambda _sae, _tmp: ["serve", "--port", free_port()],
    "user add": lambda _sae, _tmp: ["user", "add", "ann", "--generate"],
    "user token": lambda _sae, _tmp: ["user", "token", "ann"],
}


@pytest.fixture(autouse=True)
def no_server(monkeypatch):
    """`serve` must refuse before uvicorn starts any worker."""
    def run(*_args, **_kwargs):
        raise AssertionError("uvicorn started on a store that cannot be used")
    monkeypatch.setattr(uvicorn, "run", run)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_an_unusable_store_in_one_line(tmp_path, sae_dir, case, command):
    url, shown, reason = case(tmp_path)
    code, out = invoke(*COMMANDS[command](sae_dir, tmp_path), "--db", url)
    assert code == 2, out
    assert out.count("\n") == 1 and out.startswith("error: ") and "Traceback" not in out, out
    assert shown in out and reason in out, out
    assert PASSWORD not in out


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_database_url_from_the_environment_is_refused_the_same_way(tmp_path, monkeypatch, case):
    url, shown, reason = case(tmp_path)
    monkeypatch.setenv("DATABASE_URL", url)
    code, out = invoke("serve", "--port", free_port())
    assert code == 2 and out.count("\n") == 1 and shown in out and reason in out and PASSWORD not in out, out


def test_a_newer_store_is_left_as_it_was(tmp_path):
    url, _shown, _reason = newer_schema(tmp_path)
    with pytest.raises(StoreError):
        open_store(url, migrate=True)
    with sqlite3.connect(tmp_path / "newer.db") as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("f00dfacef00d",)]
        assert {r[0] for r in connection.execute("SELECT name FROM sqlite_master")} >= {"saes", "features"}


def test_an_older_or_empty_store_opens_and_a_writing_command_migrates_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0001")
    open_store(url).dispose()
    code, out = invoke("user", "add", "ann", "--generate", "--db", url)
    assert code == 0, out
