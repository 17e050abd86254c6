"""Shared fixtures and helpers: tiny models, a corpus, a saved SAE recorded over the tiny model, the CLI runner."""

from __future__ import annotations

import gc
import os
import re
import threading

import pytest
import torch
import typer
from typer.testing import CliRunner, Result

from sae_core import devices
from tests.factories import save_tiny_model


def pytest_configure(config):
    """Under pytest-xdist each worker takes its share of the cores for torch's threads: two workers of two
    threads each on two cores spin against each other in every matmul."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(autouse=True)
def collectable():
    """What a test's web app froze (app.services.heap) goes back to the collector after the test: the suite is one
    process, and frozen garbage would never be freed."""
    yield
    gc.unfreeze()


def run_cli(cli: typer.Typer, *args: object, input: str | None = None) -> Result:
    """Run a CLI in-process as the shell would, every argument as a string."""
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def invoke_cli(cli: typer.Typer, *args: object, input: str | None = None) -> tuple[int, str]:
    """(exit code, stdout and stderr together) of a CLI run in-process."""
    result = run_cli(cli, *args, input=input)
    return result.exit_code, result.output


def pretend_cpu(monkeypatch, amx: bool, avx512_bf16: bool = False, bf16_speedup: float = 2.0) -> None:
    """Make torch report (or deny) the CPU's bf16 instructions, and the bf16 matmul probe measure `bf16_speedup`:
    what `devices.fast_bf16` reads."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(devices, "bf16_speedup", lambda: bf16_speedup)


def listed_commands(cli: typer.Typer) -> list[str]:
    """The command names a CLI's --help shows, in order: the rows of its Commands panel."""
    code, out = invoke_cli(cli, "--help")
    assert code == 0, out
    return re.findall(r"^│ ([a-z]\w*) ", out.split("Commands")[1], flags=re.MULTILINE)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> str:
    """A plain-text corpus of 200 short documents of varied length and wording (about 9700 tokens)."""
    colours = ("red", "blue", "green")
    docs = (f"Note {i}: the {colours[i % 3]} box holds {i * 7} stones." + " The quick brown fox jumps." * (i % 4 == 0)
            for i in range(200))
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n\n".join(docs))
    return str(path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama saved as a Hugging Face directory, loadable through the real loading path."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory):
    """The tiny Llama with a chat template: a local explainer that writes (random) drafts in milliseconds."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-chat"), "llama", chat=True)


@pytest.fixture(scope="session")
def smollm2():
    """The real default model, loaded once per test session (about 20 s)."""
    from sae_core.lm import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def web_sae(tmp_path_factory, tiny_model_dir):
    """A 24-feature ReLU SAE saved in saescope's layout and its real recording over the saved tiny Llama."""
    from app.pipeline import read_sae  # imported here: the core tests never load the app
    from sae_core.lm import load_model
    from sae_core.provenance import Provenance
    from sae_core.records import RecordConfig, record_sae
    from sae_core.saes import SAEConfig, build_sae
    from sae_core.sites import parse_site

    cfg = SAEConfig(architecture="relu", d_in=32, d_sae=24,
                    provenance=Provenance(model="tiny-llama", site=parse_site("layers.1.resid_post")))
    directory = build_sae(cfg, seed=3).save(tmp_path_factory.mktemp("web-sae") / "tiny-sae")
    loaded = read_sae(directory)
    lm = load_model(str(tiny_model_dir))
    gen = torch.Generator().manual_seed(5)
    ctx = torch.randint(3, 512, (16, 24), generator=gen)
    ctx[:, 0] = 0
    record = record_sae(lm.model, loaded.sae, list(ctx), site=parse_site("layers.1.resid_post"),
                        tokenizer=lm.tokenizer,
                        cfg=RecordConfig(n_top=5, before=6, after=3, n_intervals=3, per_interval=2, batch_size=8))
    return loaded, record, str(tiny_model_dir)


GATE_S = 60
"""The longest a gated model load waits: a guard so a broken test fails instead of hanging."""


@pytest.fixture()
def gate(monkeypatch):
    """Model loads of the web app wait until the test sets the returned event (set again at the end, so a load
    still waiting finishes before the next test)."""
    import app.services.inference as inference

    opened = threading.Event()
    real = inference.load_model

    def gated(spec, **kw):
        assert opened.wait(GATE_S), "the test never opened the gate"
        return real(spec, **kw)

    monkeypatch.setattr(inference, "load_model", gated)
    yield opened
    opened.set()
