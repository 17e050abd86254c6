"""Evaluation: no CE figure computed over NaN or infinite activations; reconstruction figures from the k pairs."""

from __future__ import annotations

import pytest
import torch

from sae_core.evaluate import ce_metrics, reconstruction_metrics
from sae_core.finite import NonFiniteError
from sae_core.hooks import splice
from sae_core.metrics import ReconstructionStats
from sae_core.saes import SAEConfig, build_sae
from sae_core.sites import parse_site
from tests.factories import tiny_model

SITE = parse_site("layers.1.resid_post")
SPECIALS = torch.tensor([0, 1, 2])


def batches(n=6, length=16, per_batch=3):
    ids = torch.randint(3, 200, (n, length), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = 0
    return list(ids.split(per_batch))


def overflow_at(context, position, per_batch=3, passes=3):
    """A layer-0 output overflowing at one token of the stream, as an fp16 model's can (in every CE pass)."""
    calls = []

    def fn(x):
        first = len(calls) // passes * per_batch
        calls.append(first)
        if first <= context < first + len(x):
            x = x.clone()
            x[context - first, position] = float("inf")
        return x
    return fn


def test_ce_refuses_non_finite_site_activations_naming_the_context():
    model, sae = tiny_model("llama"), build_sae(SAEConfig(architecture="topk", d_in=32, d_sae=16, k=4), seed=0)
    assert ce_metrics(model, [(sae, SITE)], batches(), SPECIALS)["ce_tokens"] == 6 * 14  # BOS positions are not counted
    # attention spreads the inf over the whole context (0 * inf), so the position named is its first counted one
    with splice(model, parse_site("layers.0.resid_post"), overflow_at(4, 9)), pytest.raises(
            NonFiniteError, match=r"activations at layers\.1\.resid_post are NaN or infinite at context 14, "):
        ce_metrics(model, [(sae, SITE)], batches(), SPECIALS, first_context=10)


def test_ce_refuses_an_sae_whose_reconstruction_is_not_finite():
    model, sae = tiny_model("llama"), build_sae(SAEConfig(architecture="topk", d_in=32, d_sae=16, k=4), seed=0)
    with torch.no_grad():
        sae.b_dec[3] = float("nan")
    with pytest.raises(NonFiniteError, match="the sae next-token loss is NaN or infinite at context 0, position 1"):
        ce_metrics(model, [(sae, SITE)], batches(), SPECIALS)


@pytest.mark.parametrize("arch", ["topk", "transcoder", "batchtopk", "relu"])
def test_reconstruction_metrics_equal_the_dense_encode_and_decode(arch):
    """TopK-style SAEs are evaluated from their k pairs per row (sparse decode, counted firings); the figures equal
    the dense encode-and-decode's, which every other architecture still uses."""
    transcoder = arch == "transcoder"
    sae = build_sae(SAEConfig(architecture=arch, d_in=16, d_sae=2048, k=None if arch == "relu" else 8,
                              apply_b_dec_to_input=not transcoder), seed=0)
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(n, 32 if transcoder else 16, generator=generator) for n in (50, 70)]
    dense = ReconstructionStats()
    with torch.no_grad():
        for rows in batches:
            x, y = sae.split_rows(rows)
            f = sae.encode(x)
            dense.add(y, sae.add_skip(sae.decode(f), x), f)
    got, want = reconstruction_metrics(sae, batches), dense.summary()
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-9), name
