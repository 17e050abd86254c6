"""The team deployment: docker-compose.yml's commands, run outside Docker against PostgreSQL.

No Docker engine runs here, so the test runs what the compose services run (migrations, then the web app
with several workers) on this machine, reading the commands from docker-compose.yml itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from app import crud
from app.db import make_engine, session_factory
from tests.spawn import free_port, serving

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def saescope(command: list[str]) -> list[str]:
    """A compose `command` as this machine runs it: the same CLI under this interpreter."""
    assert command[0] == "saescope"
    return [sys.executable, "-m", "app", *command[1:]]


def test_compose_services_share_the_database_and_the_sae_volume():
    services = COMPOSE["services"]
    assert {"db", "migrate", "web", "job"} <= set(services)
    urls = {services[name]["environment"]["DATABASE_URL"] for name in ("migrate", "web", "job")}
    assert len(urls) == 1 and next(iter(urls)).startswith("postgresql+psycopg://")
    assert "saes:/data" in services["web"]["volumes"] and "saes:/data" in services["job"]["volumes"]
    assert "SECRET_KEY" in services["web"]["environment"]


@pytest.mark.postgres
def test_the_database_service_sets_only_real_postgresql_settings(postgres_url):
    """Each `-c name=value` of the db service names a setting PostgreSQL has (a misspelt one stops the server)."""
    command = COMPOSE["services"]["db"]["command"]
    assert command[0] == "postgres"
    settings = dict(item.split("=", 1) for flag, item in zip(command[1::2], command[2::2]) if flag == "-c")
    assert settings and len(settings) * 2 == len(command) - 1
    engine = make_engine(postgres_url)
    with engine.connect() as connection:
        for name in settings:
            assert connection.execute(text("SELECT count(*) FROM pg_settings WHERE name = :n"), {"n": name}).scalar()
    engine.dispose()


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed")
def test_docker_compose_parses_the_file():
    env = {**os.environ, "SAESCOPE_SECRET_KEY": "test"}
    result = subprocess.run(["docker-compose", "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.postgres
def test_migrate_then_serve_with_several_workers_on_postgresql(postgres_url):
    services = COMPOSE["services"]
    env = {**os.environ, "DATABASE_URL": postgres_url, "SECRET_KEY": "deploy-test"}
    migrate = subprocess.run(saescope(services["migrate"]["command"]), env=env, capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stderr
    engine = make_engine(postgres_url)
    with session_factory(engine)() as session:
        crud.create_sae(session, name="deployed-sae", model_name="tiny", site="layers.1.resid_post",
                        architecture="topk", d_in=32, d_sae=64)
    engine.dispose()

    command = saescope(services["web"]["command"])
    port = free_port()
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    assert int(command[command.index("--workers") + 1]) > 1
    with serving(command, port, env) as server:
        pages = [server.page("/", timeout=90) for _ in range(8)]
    assert all(p is not None for p in pages), f"the server did not answer: {server.output}"
    assert all(p.status_code == 200 and "deployed-sae" in p.text for p in pages)
    assert server.output.count("Started server process") >= 2, server.output
