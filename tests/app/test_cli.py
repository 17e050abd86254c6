import gzip
import json
import os
import subprocess
import sys
import time
from functools import partial

import pytest

import sae_core.cli
from app import crud
from app.cli import WORKER_STARTUP_S, app
from app.db import make_engine, session_factory
from app.settings import Settings
from sae_core.provenance import Provenance
from sae_core.saes import SAEConfig, build_sae
from sae_core.sites import parse_site
from tests.conftest import invoke_cli, listed_commands, pretend_cpu
from tests.spawn import free_port, serving

invoke = partial(invoke_cli, app)


@pytest.fixture()
def sae_dir(tmp_path):
    cfg = SAEConfig(architecture="relu", d_in=32, d_sae=24,
                    provenance=Provenance(model="tiny", site=parse_site("layers.1.resid_post")))
    sae = build_sae(cfg, seed=0)
    sae.W_enc.data *= 40.0
    return sae.save(tmp_path / "tiny-sae")


def test_saescope_lists_the_library_commands_then_the_stores():
    assert listed_commands(app) == ["sites", "harvest", "train", "eval", "contrast", "convert", "attribute", "import",
                                    "record", "map", "export", "demo", "serve", "explain", "db", "user"]
    assert listed_commands(sae_core.cli.app) == ["sites", "harvest", "train", "eval", "contrast", "convert",
                                                 "attribute"]


def test_saescope_runs_the_library_commands_own_code():
    library = {command.name: command.callback for command in sae_core.cli.app.registered_commands}
    ours = {command.name: command.callback for command in app.registered_commands}
    replaced = {"attribute"}  # saescope's also takes a stored set (--sae-set), then runs the library's
    assert library and all(ours[name] is callback for name, callback in library.items() if name not in replaced)


def test_db_upgrade_is_idempotent(db_url):
    assert invoke("db", "upgrade", "--db", db_url) == (0, f"database at {db_url} is up to date\n")
    assert invoke("db", "upgrade", "--db", db_url)[0] == 0


def test_db_url_from_environment(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    assert invoke("db", "upgrade")[0] == 0
    assert (tmp_path / "env.db").is_file()


def test_db_wins_over_database_url_which_wins_over_a_commands_own_default(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert Settings.on_store(None).database_url == Settings.model_fields["database_url"].default
    assert Settings.on_store(None, default="sqlite:///demo.db").database_url == "sqlite:///demo.db"
    monkeypatch.setenv("DATABASE_URL", "sqlite:///env.db")
    assert Settings.on_store(None).database_url == "sqlite:///env.db"
    assert Settings.on_store(None, default="sqlite:///demo.db").database_url == "sqlite:///env.db"
    assert Settings.on_store("sqlite:///flag.db", default="sqlite:///demo.db").database_url == "sqlite:///flag.db"


def test_import_record_export(db_url, engine, session, sae_dir, corpus, tiny_model_dir, tmp_path):
    code, out = invoke("import", "--sae", sae_dir, "--db", db_url)
    assert code == 0, out
    assert "relu, 24 features at layers.1.resid_post, saelens layout" in out
    code, out = invoke("record", "--sae", "tiny-sae", "--model", tiny_model_dir, "--dataset", corpus,
                       "--tokens", 600, "--context", 40, "--db", db_url)
    assert code == 0, out
    sae = crud.find_sae(session, ref="tiny-sae")
    assert sae.n_tokens >= 600 and sae.dataset == str(corpus) and sae.model_spec == str(tiny_model_dir)
    page = crud.feature_page(session, sae_id=sae.id, feature_index=0)
    assert len(page.top) == 20 and len(page.top[0].pieces) == 33
    code, out = invoke("export", "--sae", sae.id, "--format", "neuronpedia", "--out", tmp_path / "np", "--db", db_url)
    assert code == 2 and "needs --model-id and --model-layers" in out
    code, out = invoke("export", "--sae", sae.id, "--format", "neuronpedia", "--out", tmp_path / "np", "--db", db_url,
                       "--model-id", "tiny-llama", "--model-layers", 2, "--source-set", "res-tiny")
    assert code == 0, out
    with gzip.open(tmp_path / "np" / "tiny-llama" / "1-res-tiny" / "features" / "batch-0.jsonl.gz", "rt") as f:
        assert len([json.loads(line) for line in f]) == 24
    code, out = invoke("export", "--sae", sae.id, "--out", tmp_path / "np2", "--db", db_url,
                       "--model-id", "Tiny Llama", "--model-layers", 2)
    assert code == 2 and "--model-id 'Tiny Llama' must be" in out


def test_record_by_path_registers_the_sae(db_url, session, sae_dir, corpus, tiny_model_dir):
    code, out = invoke("record", "--sae", sae_dir, "--model", tiny_model_dir, "--dataset", corpus,
                       "--tokens", 200, "--context", 40, "--db", db_url)
    assert code == 0, out
    assert crud.find_sae(session, ref="tiny-sae").recorded_at is not None


def test_recording_in_bfloat16_warns_on_a_cpu_without_fast_bf16(monkeypatch, tmp_path, sae_dir, corpus,
                                                                 tiny_model_dir):
    pretend_cpu(monkeypatch, amx=False)
    code, out = invoke("record", "--sae", sae_dir, "--model", tiny_model_dir, "--dataset", corpus, "--tokens", 100,
                       "--context", 40, "--dtype", "bfloat16", "--device", "cpu", "--no-map",
                       "--db", f"sqlite:///{tmp_path / 'store.db'}")
    assert code == 0 and "warning: bfloat16 on this cpu has no fast bf16 matmuls" in out, out


@pytest.mark.parametrize("args, message", [
    (("import", "--sae", "/no/such/sae"), "no SAE at /no/such/sae"),
    (("record", "--sae", "missing", "--model", "smollm2"), "no SAE 'missing' in the store"),
    (("export", "--sae", "missing", "--out", "/tmp/x"), "no SAE 'missing' in the store"),
])
def test_bad_input_is_one_clear_line(db_url, args, message):
    code, out = invoke(*args, "--db", db_url)
    assert code == 2
    assert message in out and "Traceback" not in out


def test_too_short_contexts_are_a_clear_error(db_url, engine, sae_dir, corpus, tiny_model_dir):
    code, out = invoke("record", "--sae", sae_dir, "--model", tiny_model_dir, "--dataset", corpus,
                       "--tokens", 200, "--context", 16, "--db", db_url)
    assert code == 2 and "shorter than the example window" in out


def test_writing_commands_create_the_schema_of_a_new_store(tmp_path, sae_dir, corpus, tiny_model_dir):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code, out = invoke("record", "--sae", sae_dir, "--model", tiny_model_dir, "--dataset", corpus,
                       "--tokens", 200, "--context", 40, "--db", url)
    assert code == 0, out
    assert invoke("user", "add", "ada", "--role", "labeller", "--generate", "--db", f"sqlite:///{tmp_path / 'u.db'}")[0] == 0


def test_serve_from_the_console_script_keeps_its_workers(tmp_path):
    """Each worker imports the console script (and torch) before its first health check; uvicorn's 5 s
    default once killed and respawned them for ever on a small machine."""
    port = free_port()
    script = os.path.join(os.path.dirname(sys.executable), "saescope")
    with serving([script, "serve", "--db", f"sqlite:///{tmp_path / 'served.db'}", "--port", str(port),
                  "--workers", "2"], port) as server:
        page = server.page("/")
        time.sleep(6)  # past the default health check, which would have killed a worker by now
    assert page is not None and page.status_code == 200, server.output
    assert server.output.count("Started server process") == 2 and "died" not in server.output, server.output


def test_serve_runs_uvicorn_in_factory_mode_with_a_shared_secret(monkeypatch, tmp_path):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.append((target, kw)))
    environ = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DATABASE_URL", "PRELOAD_MODELS")}
    monkeypatch.setattr(os, "environ", environ)  # what serve exports stays out of the real environment
    url = f"sqlite:///{tmp_path / 'served.db'}"
    code, out = invoke("serve", "--db", url, "--port", 8123, "--workers", 3)
    assert code == 0, out
    assert calls == [("app.main:create_app", {"factory": True, "host": "127.0.0.1", "port": 8123, "workers": 3,
                                              "timeout_worker_healthcheck": WORKER_STARTUP_S})]
    assert environ["DATABASE_URL"] == url and len(environ["SECRET_KEY"]) == 64
    assert environ["PRELOAD_MODELS"] == "true"  # each worker loads its models in the background at start-up
    assert (tmp_path / "served.db").is_file()  # migrated before the workers start
    assert invoke("serve", "--db", url, "--no-preload")[0] == 0 and environ["PRELOAD_MODELS"] == "false"


def test_torchrun_record_stores_what_one_process_stores(sae_dir, corpus, tiny_model_dir, tmp_path):
    args = ["record", "--sae", str(sae_dir), "--model", str(tiny_model_dir), "--dataset", str(corpus),
            "--tokens", "600", "--context", "40", "--batch-size", "4", "--device", "cpu"]
    one, two = f"sqlite:///{tmp_path / 'one.db'}", f"sqlite:///{tmp_path / 'two.db'}"
    for url in (one, two):
        assert invoke("db", "upgrade", "--db", url)[0] == 0
    code, out = invoke(*args, "--db", one)
    assert code == 0, out
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(free_port()), "-m", "app", *args, "--distributed", "--db", two],
        env=env, capture_output=True, text=True, timeout=180)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("recorded 'tiny-sae'") == 1  # rank 0 alone registers, stores and reports
    pages = []
    for url in (one, two):
        engine = make_engine(url)
        with session_factory(engine)() as session:
            [sae] = crud.list_saes(session)
            pages.append([(p.feature.fire_count, p.feature.max_act, [(e.context_index, e.start, e.value) for e in p.top])
                          for p in (crud.feature_page(session, sae_id=sae.id, feature_index=i) for i in range(24))])
        engine.dispose()
    assert pages[0] == pages[1]


def test_a_command_run_apart_is_the_whole_clis_command():
    """The console script runs `train` from a CLI holding it alone: the same function, found under the same name."""
    import typer

    from app.entry import APART, apart

    whole = typer.main.get_command(app)
    for name in APART:
        alone = typer.main.get_command(apart(name))
        assert alone.commands[name].callback.__wrapped__ is whole.commands[name].callback.__wrapped__, name


def test_the_console_script_trains_without_importing_the_store_or_transformers(tmp_path):
    """`saescope train` is timed by its imports too: it loads neither the web app, the store nor transformers,
    and still trains (the script is the entry point pip installed)."""
    import numpy as np

    np.save(tmp_path / "acts.npy", np.random.default_rng(0).standard_normal((600, 8), dtype=np.float32))
    script = os.path.join(os.path.dirname(sys.executable), "saescope")
    probe = ("import sys, runpy, atexit; atexit.register(lambda: print('LOADED', sorted(m for m in "
             "('transformers', 'sqlalchemy', 'fastapi', 'app.cli') if m in sys.modules)));"
             f"sys.argv = ['saescope'] + sys.argv[1:]; runpy.run_path({script!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", probe, "train", "--activations", str(tmp_path / "acts.npy"),
                           "--features", "16", "--k", "2", "--batch-size", "64", "--out", str(tmp_path / "sae")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout, done.stdout
    assert (tmp_path / "sae" / "metrics.json").is_file()
