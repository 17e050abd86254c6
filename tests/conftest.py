"""Shared fixtures: tiny models and a saved tiny model directory."""

from __future__ import annotations

import pytest

from tests.factories import save_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama saved as a Hugging Face directory, loadable through the real loading path."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def smollm2():
    """The real default model, loaded once per test session (about 20 s)."""
    from sae_core.models import load_model

    return load_model("smollm2")
