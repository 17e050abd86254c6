import platform

import pytest
import torch

from sae_core import allocator
from sae_core.finite import NonFiniteError
from sae_core.hooks import truncated_forward
from sae_core.records import RecordConfig, contexts_per_batch, interval_of, record_sae, recording
from sae_core.records.directions import final_norm_and_unembed, logit_effects
from sae_core.records.neighbours import exact_neighbours
from sae_core.sites import parse_site
from tests.core.test_coactivation import assert_top_matches, brute_jaccard
from tests.core.tiny_sae import TinySAE
from tests.factories import FAMILIES, tiny_model, tiny_tokenizer

SITE = parse_site("layers.1.resid_post")
CFG = RecordConfig(n_top=5, before=6, after=3, n_intervals=4, per_interval=3, batch_size=7)


def contexts(n=30, length=24, seed=1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 512, (n, length), generator=gen)
    ids[:, 0] = 0
    ids[3, 10] = 1  # an EOS in mid-context: special, so never recorded
    return ids


@pytest.fixture(scope="module")
def setup():
    model, sae, ctx = tiny_model("llama"), TinySAE(), contexts()
    record = record_sae(model, sae, list(ctx), site=SITE, tokenizer=tiny_tokenizer(), cfg=CFG)
    f_CTF = sae.encode(truncated_forward(model, SITE, ctx))
    f_CTF[ctx < 3] = 0
    return record, f_CTF, ctx


def test_top_examples_are_exactly_the_true_top_activations(setup):
    record, f_CTF, ctx = setup
    _C, T, F = f_CTF.shape
    width = CFG.before + CFG.after + 1
    for j in range(F):
        values, flat = f_CTF[..., j].flatten().topk(CFG.n_top)
        feat = record.feature(j)
        assert [e.value for e in feat.top] == values[values > 0].tolist()
        assert {(e.context, e.start + e.peak) for e in feat.top} == {(int(i) // T, int(i) % T) for i in flat[values > 0]}
        for e in feat.top:
            assert e.token_ids == ctx[e.context, e.start : e.start + width].tolist()
            assert torch.allclose(torch.tensor(e.acts), f_CTF[e.context, e.start : e.start + width, j], rtol=1e-3, atol=1e-6)
            assert 0 <= e.start <= T - width
            assert e.peak == CFG.before or e.start in (0, T - width)


def test_statistics_match_brute_force(setup):
    record, f_CTF, ctx = setup
    fires = f_CTF > 0
    n_tokens = int((ctx >= 3).sum())
    assert record.n_tokens == n_tokens and record.n_contexts == ctx.shape[0]
    assert torch.equal(record.count_F, fires.sum((0, 1)))
    assert torch.allclose(record.max_F, f_CTF.amax((0, 1)))
    mean = f_CTF.sum((0, 1)) / fires.sum((0, 1)).clamp_min(1)
    assert torch.allclose(record.mean_F, mean, rtol=1e-5)
    assert torch.equal(record.hist_FB.sum(1), record.count_F)
    edges, counts = record.feature_hist(0)
    assert len(edges) == len(counts) + 1 and sum(counts) == record.count_F[0]
    assert record.dead_count == int((record.count_F == 0).sum())


def test_the_recording_pass_keeps_the_brute_force_top_coactive_partners(setup):
    record, f_CTF, _ctx = setup
    fires = (f_CTF > 0).reshape(-1, f_CTF.shape[-1])
    assert record.coactive is not None and record.coactive.index_FK.shape == (f_CTF.shape[-1], CFG.n_coactive)
    assert_top_matches(record.coactive, brute_jaccard(fires), CFG.n_coactive)


def test_quantile_samples_fall_in_their_intervals_and_fill_them(setup):
    record, f_CTF, _ = setup
    n = CFG.n_intervals
    for j in range(f_CTF.shape[-1]):
        acts = f_CTF[..., j].flatten()
        acts = acts[acts > 0]
        if acts.numel() == 0:
            continue
        population = torch.bincount(interval_of(acts, acts.max(), n), minlength=n)
        feat = record.feature(j)
        got = torch.bincount(torch.tensor([e.interval for e in feat.quantiles], dtype=torch.long), minlength=n)
        assert torch.equal(got, population.clamp(max=CFG.per_interval))
        for e in feat.quantiles:
            low, high = e.interval / n * feat.max_act, (e.interval + 1) / n * feat.max_act
            assert low <= e.value and (e.value < high or (e.interval == n - 1 and e.value <= high))


def test_batch_size_does_not_change_the_top_examples(setup):
    record, _, ctx = setup
    other = record_sae(tiny_model("llama"), TinySAE(), list(ctx), site=SITE, tokenizer=tiny_tokenizer(),
                       cfg=RecordConfig(**{**CFG.__dict__, "batch_size": 4}))
    assert torch.equal(other.examples.value_E[other.examples.interval_E < 0],
                       record.examples.value_E[record.examples.interval_E < 0])


def test_quantile_sampling_is_roughly_uniform_within_an_interval():
    from sae_core.records import Recorder
    from sae_core.records.firing import Firing

    cfg = RecordConfig(n_top=1, before=0, after=0, n_intervals=1, per_interval=1, seed=0)
    hits = torch.zeros(20)
    for seed in range(400):
        rec = Recorder(1, RecordConfig(**{**cfg.__dict__, "seed": seed}))
        for block in torch.arange(20.0).view(4, 5):
            rec.add(block[None].long(), Firing.from_dense(torch.ones(5, 1)), torch.ones(1, 5, dtype=torch.bool))
        kept = rec.quantile.entries.payload
        hits[int(kept["context"][0]) * 5 + int(kept["start"][0] + kept["peak"][0])] += 1
    assert hits.min() > 5 and hits.max() < 40  # expected 20 each


@pytest.mark.parametrize("family", FAMILIES)
def test_logit_effects_read_through_the_final_norm(family):
    model = tiny_model(family)
    norm, unembed = final_norm_and_unembed(model)
    W_dec = torch.randn(5, 32)
    promoted, suppressed = logit_effects(model, W_dec, 3)
    logits = unembed(norm(W_dec))
    assert torch.equal(promoted.index_FK, logits.topk(3, dim=1).indices)
    assert torch.equal(suppressed.index_FK, (-logits).topk(3, dim=1).indices)
    assert norm is not model.get_output_embeddings()


def test_the_record_names_the_neighbour_search_it_ran(setup):
    record, _, _ = setup
    assert record.config.neighbours == "exact"
    assert torch.equal(record.neighbours.index_FK, exact_neighbours(TinySAE().W_dec, CFG.n_neighbours).index_FK)
    cfg = RecordConfig(**{**CFG.__dict__, "neighbours": "approximate"})
    approx = record_sae(tiny_model("llama"), TinySAE(), list(contexts(4)), site=SITE, tokenizer=tiny_tokenizer(), cfg=cfg)
    assert approx.config.neighbours == "approximate"
    assert approx.neighbours.index_FK.shape == record.neighbours.index_FK.shape


def test_empty_stream_is_a_clear_error():
    with pytest.raises(ValueError, match="no tokens to record"):
        record_sae(tiny_model("llama"), TinySAE(), [], site=SITE, tokenizer=tiny_tokenizer(), cfg=CFG)


@pytest.mark.parametrize("architecture", ["relu", "topk", "batchtopk", "jumprelu"])
def test_every_architecture_records_its_true_top_activations(architecture):
    from sae_core.saes import SAEConfig, build_sae

    sae = build_sae(SAEConfig(architecture=architecture, d_in=32, d_sae=16, k=4), seed=3)
    with torch.no_grad():
        sae.W_enc.mul_(40.0)  # the tiny model's residual stream is small; make features fire
    model, ctx = tiny_model("llama"), contexts(n=10)
    record = record_sae(model, sae, list(ctx), site=SITE, tokenizer=tiny_tokenizer(), cfg=CFG)
    f_CTF = sae.encode(truncated_forward(model, SITE, ctx).reshape(-1, 32)).reshape(10, 24, 16)
    f_CTF[ctx < 3] = 0
    assert record.count_F.sum() > 0
    for j in range(16):
        values = f_CTF[..., j].flatten().topk(CFG.n_top).values
        assert [e.value for e in record.feature(j).top] == values[values > 0].tolist()


def test_batches_are_sized_to_the_dictionary_unless_given():
    assert contexts_per_batch(RecordConfig(), 128, 8192) == 128
    assert contexts_per_batch(RecordConfig(), 128, 131072) == 8
    assert contexts_per_batch(RecordConfig(), 128, 1 << 24) == 1
    assert contexts_per_batch(RecordConfig(), 20, 24) == 256
    assert contexts_per_batch(RecordConfig(batch_size=5), 128, 8192) == 5


def test_topk_sparse_path_records_what_the_dense_path_records():
    """TopK SAEs are recorded from their (row, feature, value) triples; the dense matrix must give the same."""
    from sae_core.saes import SAEConfig, build_sae

    sae = build_sae(SAEConfig(architecture="topk", d_in=32, d_sae=64, k=6), seed=5)
    with torch.no_grad():
        sae.W_enc.mul_(40.0)

    class DenseOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.W_dec = sae.W_dec

        def encode(self, x_ND):
            return sae.encode(x_ND)

    assert sae.row_topk_selection(torch.randn(3, 32)) is not None  # so the sparse path is the one under test
    model, ctx = tiny_model("llama"), list(contexts(n=20))
    sparse, dense = (record_sae(model, s, ctx, site=SITE, tokenizer=tiny_tokenizer(), cfg=CFG) for s in (sae, DenseOnly()))
    assert sparse.count_F.sum() > 0 and torch.equal(sparse.count_F, dense.count_F)
    assert torch.equal(sparse.hist_FB, dense.hist_FB) and torch.equal(sparse.max_F, dense.max_F)
    for name, value in vars(sparse.examples).items():
        assert torch.equal(value, getattr(dense.examples, name)), name


def poisoned_forward(poison):
    """truncated_forward with values planted at {(context, position): value}; contexts come CFG.batch_size a call."""
    calls = []

    def forward(model, site, tokens_BT):
        x_BTD = truncated_forward(model, site, tokens_BT).clone()
        first = len(calls) * CFG.batch_size
        calls.append(first)
        for (context, position), value in poison.items():
            if first <= context < first + len(tokens_BT):
                x_BTD[context - first, position, 0] = value
        return x_BTD
    return forward


def test_non_finite_site_activations_on_a_recorded_token_are_an_error(monkeypatch):
    # Context 9 is the third of the second batch: its global number must survive the batching.
    monkeypatch.setattr(recording, "truncated_forward", poisoned_forward({(9, 5): float("inf")}))
    with pytest.raises(NonFiniteError, match=r"at layers\.1\.resid_post .* at context 9, position 5"):
        record_sae(tiny_model("llama"), TinySAE(), list(contexts()), site=SITE, tokenizer=tiny_tokenizer(), cfg=CFG)


def test_non_finite_values_on_ignored_tokens_change_nothing(setup, monkeypatch):
    """A BOS whose activation overflowed feeds no statistic, and its NaN must not reach the example windows."""
    monkeypatch.setattr(recording, "truncated_forward", poisoned_forward({(2, 0): float("nan"), (3, 10): float("inf")}))
    record = record_sae(tiny_model("llama"), TinySAE(), list(contexts()), site=SITE, tokenizer=tiny_tokenizer(), cfg=CFG)
    clean = setup[0]
    assert torch.equal(record.max_F, clean.max_F) and torch.equal(record.count_F, clean.count_F)
    assert torch.equal(record.examples.acts_EW, clean.examples.acts_EW)
    assert record.examples.acts_EW.isfinite().all()


@pytest.mark.parametrize("architecture", ["topk", "relu"])
def test_a_bfloat16_recording_reads_the_float32_one_to_bf16_precision(architecture):
    """RecordConfig.dtype="bfloat16" runs the encoder under autocast: the same features fire, their maxima agree to
    bf16's precision, and the top examples are the float32 recording's where no near-tie decides them."""
    from dataclasses import replace

    from sae_core.saes import SAEConfig, build_sae

    sae = build_sae(SAEConfig(architecture=architecture, d_in=32, d_sae=64, k=6 if architecture == "topk" else None),
                    seed=5)
    with torch.no_grad():
        sae.W_enc.mul_(40.0)
    model, ctx = tiny_model("llama"), list(contexts(n=20))
    exact, low = (record_sae(model, sae, ctx, site=SITE, tokenizer=tiny_tokenizer(), cfg=replace(CFG, dtype=dtype))
                  for dtype in ("float32", "bfloat16"))
    fired = exact.count_F > 0
    assert fired.sum() > 10
    assert torch.allclose(low.max_F[fired], exact.max_F[fired], rtol=2e-2)
    assert not torch.equal(low.max_F, exact.max_F)  # it did compute in bf16

    def tops(record):
        e = record.examples
        top = e.interval_E == -1
        return set(zip(e.feature_E[top].tolist(), e.context_E[top].tolist(), (e.start_E + e.peak_E)[top].tolist()))

    assert len(tops(low) & tops(exact)) > 0.8 * len(tops(exact))
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        RecordConfig(dtype="float16")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_the_finishing_stages_run_on_glibcs_defaults_and_the_pass_on_the_batch_setting(monkeypatch):
    """A heap that keeps every freed block grew past 18 GB in the logit stage of a 262,144-feature recording."""
    seen = {}
    real_add, real_logits = recording.Recorder.add, recording.logit_effects

    def add(self, *args):
        seen.setdefault("pass", allocator._keeping)
        return real_add(self, *args)

    def logits(*args):
        seen["finish"] = allocator._keeping
        return real_logits(*args)

    monkeypatch.setattr(recording.Recorder, "add", add)
    monkeypatch.setattr(recording, "logit_effects", logits)
    allocator.keep_freed_memory(True)
    try:
        record_sae(tiny_model("llama"), TinySAE(), list(contexts(4)), site=SITE, tokenizer=tiny_tokenizer(), cfg=CFG)
        assert allocator._keeping  # back for the next SAE of a set
    finally:
        allocator.keep_freed_memory(False)
    assert seen == {"pass": True, "finish": False}
