"""Streaming training: the model's rows, shuffled by position-addressed windows, resumable, and the CLI path."""

from __future__ import annotations

import json

import pytest
import torch

import sae_core.streaming
from sae_core.cli import app
from sae_core.data import iter_contexts, iter_documents
from sae_core.distributed import Dist
from sae_core.finite import NonFiniteError
from sae_core.hooks import truncated_forward
from sae_core.lm import load_model
from sae_core.saes import load_sae
from sae_core.sites import parse_site
from sae_core.streaming import ModelStream, stream_from_corpus
from tests.conftest import run_cli

SITE = parse_site("layers.1.resid_post")
BUFFER = 6 * 24
"""A shuffle buffer of six 24-token contexts."""


@pytest.fixture(scope="module")
def stream(tiny_model_dir, corpus) -> ModelStream:
    lm = load_model(str(tiny_model_dir))
    return ModelStream(lm, SITE, lambda: iter_contexts(iter_documents(corpus), lm.tokenizer, 24))


def all_rows(stream: ModelStream) -> torch.Tensor:
    """Every non-special row of the corpus, computed one context at a time (the reference)."""
    rows = []
    for ids_T in stream.contexts():
        keep_T = ids_T >= 3  # the tiny tokenizer's specials are ids 0..2
        rows.append(truncated_forward(stream.lm.model, SITE, ids_T[None])[0][keep_T])
    return torch.cat(rows)


def test_one_epoch_of_the_stream_is_a_shuffle_of_the_models_rows(stream):
    reference = all_rows(stream)
    n = len(reference)
    got = torch.cat([b for b, _ in zip(stream.rank_batches(8, 0, 0, BUFFER, Dist()), range(n // 8))])
    assert len(got) == n - n % 8
    assert not torch.allclose(got, reference[: len(got)])  # shuffled
    matched = torch.cdist(got, reference).min(dim=1).values
    assert matched.max() < 1e-3  # every streamed row is one of the model's rows (batched forward: float noise)
    assert torch.allclose(stream.head(40), reference[:40], atol=1e-5)


def test_resuming_at_a_row_continues_the_same_stream(stream):
    whole = stream.rank_batches(8, 3, 0, BUFFER, Dist())
    first = [next(whole) for _ in range(30)]
    resumed = stream.rank_batches(8, 3, 8 * 17, BUFFER, Dist())
    for expected in first[17:]:
        torch.testing.assert_close(next(resumed), expected)


def test_ranks_stream_disjoint_contexts(stream):
    one, other = (next(stream.rank_batches(16, 0, 0, BUFFER, Dist(rank, 2))) for rank in (0, 1))
    assert one.shape == other.shape == (8, 32)
    assert torch.cdist(one, other).min() > 0


def test_cli_trains_straight_from_the_model(tiny_model_dir, corpus, tmp_path):
    result = run_cli(app, "train", "--model", tiny_model_dir, "--dataset", corpus, "--site", "layers.1.resid_post",
                     "--context", 24, "--tokens", 2048, "--batch-size", 128, "--features", 64, "--k", 4,
                     "--holdout-contexts", 4, "--out", tmp_path / "sae")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "sae" / "metrics.json").read_text())
    assert metrics["eval_rows"].startswith("first 4 contexts") and metrics["fvu"] < 1
    assert load_sae(tmp_path / "sae").cfg.provenance.site.name == "layers.1.resid_post"


def test_held_out_contexts_are_not_streamed(tiny_model_dir, corpus):
    lm = load_model(str(tiny_model_dir))
    train_rows, held = stream_from_corpus(lm, SITE, corpus, context_len=24, holdout_contexts=2)
    first_two = list(iter_contexts(iter_documents(corpus), lm.tokenizer, 24))[:2]
    assert held.n_rows == sum(int((c >= 3).sum()) for c in first_two)
    assert torch.allclose(train_rows.head(5), all_rows(train_rows)[:5], atol=1e-5)
    assert not torch.allclose(train_rows.head(5), held.head(5), atol=1e-3)


def test_a_non_finite_model_row_stops_the_stream(stream, monkeypatch):
    """A streamed row cannot be skipped (group sizes come from token ids), so a NaN one is an error naming the site."""
    real = sae_core.streaming.token_rows

    def overflowing(*args):
        rows_RD, keep_BT = real(*args)
        return rows_RD.index_fill(0, torch.tensor([4]), float("inf")), keep_BT

    monkeypatch.setattr(sae_core.streaming, "token_rows", overflowing)
    with pytest.raises(NonFiniteError, match=r"NaN or infinite activations at layers\.1\.resid_post \(token 5 "):
        next(stream.rank_batches(16, seed=0, start_row=0, buffer_rows=BUFFER, dist=Dist()))
    with pytest.raises(NonFiniteError):
        stream.head(10)
