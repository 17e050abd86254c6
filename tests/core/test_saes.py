"""SAE architectures: shapes, semantics, loss terms, save/load round trips and the sparse kernels."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from sae_core.provenance import Provenance
from sae_core.saes import (
    ARCHITECTURES,
    SAE,
    Runtime,
    SAEConfig,
    SAEFormatError,
    build_sae,
    load_sae,
    sae_class,
    takes_k,
    transcodes,
)
from sae_core.sites import Site

D_IN, D_SAE, K = 16, 64, 4
ARCHS = sorted(ARCHITECTURES)
SET_THRESHOLD = {"batchtopk": 0.2}
"""Architectures whose learned threshold starts at zero: set so round trips test it."""


def _topk_reference(pre, sae):
    kth = pre.topk(K, dim=1).values[:, -1:]
    return torch.where(pre >= kth, pre, 0).relu()


REFERENCE_ENCODE = {
    "relu": lambda pre, sae: pre.relu(),
    "topk": _topk_reference,
    "batchtopk": lambda pre, sae: torch.where(pre > sae.threshold, pre, 0),
    "jumprelu": lambda pre, sae: torch.where(pre > sae.threshold, pre, 0),
    "relu_transcoder": lambda pre, sae: pre.relu(),
    "transcoder": _topk_reference,
    "jumprelu_transcoder": lambda pre, sae: torch.where(pre > sae.threshold, pre, 0),
}
"""Each architecture's encoder written out by hand from its paper, from the pre-activations."""
SAELENS_NAMES = {"relu": "standard", "batchtopk": "jumprelu", "transcoder": "topk_transcoder",
                 "relu_transcoder": "transcoder"}
"""The architecture cfg.json gives SAELens, where it is not saescope's own name."""


def make(arch: str, seed: int = 0, runtime: Runtime | None = None, d_sae: int = D_SAE, **kw):
    site = Site(2, "mlp_in" if transcodes(arch) else "resid_post")
    cfg = SAEConfig(architecture=arch, d_in=D_IN, d_sae=d_sae, k=K if takes_k(arch) else None,
                    provenance=Provenance(model="tiny", site=site), **{**sae_class(arch).config_defaults, **kw})
    sae = build_sae(cfg, seed=seed, runtime=runtime)
    with torch.no_grad():  # non-trivial biases and thresholds so round trips test them
        sae.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed))
        sae.b_dec.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 1))
        if arch in SET_THRESHOLD:
            sae.threshold.fill_(SET_THRESHOLD[arch])
    return sae


def x_batch(n: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_nonnegative_features(arch):
    sae = make(arch)
    x = x_batch()
    f = sae.encode(x)
    assert f.shape == (32, D_SAE) and (f >= 0).all()
    assert sae.decode(f).shape == (32, D_IN)
    assert torch.allclose(sae(x), sae.decode(f))
    assert sae.W_enc.shape == (D_IN, D_SAE) and sae.W_dec.shape == (D_SAE, D_IN)


@pytest.mark.parametrize("arch", ARCHS)
def test_encode_matches_formula(arch):
    sae = make(arch)
    x = x_batch()
    pre = ((x - sae.b_dec) if sae.cfg.apply_b_dec_to_input else x) @ sae.W_enc + sae.b_enc
    assert torch.allclose(sae.encode(x), REFERENCE_ENCODE[arch](pre, sae), atol=1e-6)


def test_topk_keeps_the_k_largest_preactivations_of_each_row():
    sae = make("topk")
    x = x_batch()
    top = ((x - sae.b_dec) @ sae.W_enc + sae.b_enc).topk(K, dim=1)
    assert (top.values > 0).all()  # else fewer than K could rightly fire
    expected_active = torch.zeros(len(x), D_SAE, dtype=torch.bool).scatter(1, top.indices, True)
    assert torch.equal(sae.encode(x) > 0, expected_active)


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_terms_are_named_and_differentiable(arch):
    sae = make(arch)
    rows = torch.randn(32, sae.row_width, generator=torch.Generator().manual_seed(1))
    out = sae.training_forward(rows, dead_F=torch.ones(D_SAE, dtype=torch.bool))
    expected = {"relu": {"mse", "l1"}, "jumprelu": {"mse", "l0"}, "relu_transcoder": {"mse", "l1"},
                "jumprelu_transcoder": {"mse", "l0"}}.get(arch, {"mse", "aux_k"})
    assert set(out.losses) == expected
    assert all(v.ndim == 0 and torch.isfinite(v) for v in out.losses.values())
    out.loss.backward()
    assert all(p.grad is not None for p in sae.parameters())
    assert out.fired_F.shape == (D_SAE,) and out.fired_F.dtype == torch.bool
    assert sae.loss(rows).keys() <= expected


def test_registry_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown SAE architecture 'gated'"):
        sae_class("gated")
    with pytest.raises(ValueError, match="choose one of"):
        build_sae(SAEConfig(architecture="nope", d_in=4, d_sae=8))


def test_config_rejects_bad_sizes():
    with pytest.raises(ValueError):
        SAEConfig(architecture="topk", d_in=4, d_sae=8, k=9)
    with pytest.raises(ValueError, match="needs k"):
        build_sae(SAEConfig(architecture="topk", d_in=4, d_sae=8))


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip(arch, tmp_path):
    sae = make(arch)
    sae.save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == SAELENS_NAMES.get(arch, arch)
    assert cfg["d_in"] == D_IN and cfg["d_sae"] == D_SAE and cfg["metadata"]["hook_name"] == sae.cfg.provenance.hook_name
    weights = load_file(tmp_path / "sae_weights.safetensors")
    assert weights["W_enc"].shape == (D_IN, D_SAE) and weights["W_dec"].shape == (D_SAE, D_IN)
    assert ("threshold" in weights) == (arch in ("jumprelu", "batchtopk", "jumprelu_transcoder"))
    loaded = load_sae(tmp_path)
    assert type(loaded) is type(sae) and loaded.cfg == sae.cfg
    x = x_batch()
    assert torch.allclose(loaded.encode(x), sae.encode(x), atol=1e-6)
    assert torch.allclose(loaded(x), sae(x), atol=1e-6)
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


@pytest.mark.parametrize("arch", ARCHS)
def test_input_scale_folds_into_weights(arch):
    sae, scale = make(arch), 3.0
    x = x_batch()
    expected = sae(x * scale) / scale
    sae.fold_input_scale_(scale)
    assert torch.allclose(sae(x), expected, atol=1e-5)


@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
def test_decoder_norm_folds_into_encoder(arch):
    sae = make(arch)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(D_SAE, 1, generator=torch.Generator().manual_seed(3)) + 0.5)
    x = x_batch()
    expected = sae(x)
    sae.fold_decoder_norm_()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(D_SAE), atol=1e-5)
    assert torch.allclose(sae(x), expected, atol=1e-5)


def test_parallel_gradient_is_removed_from_every_decoder_row_whatever_its_norm():
    """Rows of any norm (not just unit ones) keep exactly their gradient's part orthogonal to the row."""
    sae, gen = make("topk"), torch.Generator().manual_seed(4)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(D_SAE, 1, generator=gen) * 2 + 0.1)
    sae.W_dec.grad = torch.randn(sae.W_dec.shape, generator=gen)
    W, grad = sae.W_dec.detach().double(), sae.W_dec.grad.double()
    expected = grad - (grad * W).sum(1, keepdim=True) / (W * W).sum(1, keepdim=True) * W
    sae.remove_parallel_grad_()
    assert torch.allclose(sae.W_dec.grad.double(), expected, atol=1e-5)
    assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max() < 1e-4


def corrupt(tmp_path, arch, edit):
    make(arch).save(tmp_path)
    path = tmp_path / "sae_weights.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


@pytest.mark.parametrize("arch", ARCHS)
def test_malformed_weights_rejected(arch, tmp_path):
    corrupt(tmp_path / "missing", arch, lambda t: t.pop("W_dec"))
    with pytest.raises(SAEFormatError, match="missing tensor 'W_dec'"):
        load_sae(tmp_path / "missing")
    corrupt(tmp_path / "shape", arch, lambda t: t.update(b_enc=torch.zeros(D_SAE + 1)))
    with pytest.raises(SAEFormatError, match="shape"):
        load_sae(tmp_path / "shape")
    corrupt(tmp_path / "nan", arch, lambda t: t["W_enc"].__setitem__((0, 0), float("nan")))
    with pytest.raises(SAEFormatError, match="NaN"):
        load_sae(tmp_path / "nan")


def test_malformed_files_rejected(tmp_path):
    make("topk").save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    del cfg["saescope"]
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "architecture": "gated"}))
    with pytest.raises(SAEFormatError, match="'gated' is not supported"):
        load_sae(tmp_path)
    (tmp_path / "cfg.json").write_text("{not json")
    with pytest.raises(SAEFormatError, match="not valid JSON"):
        load_sae(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    (tmp_path / "sae_weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(SAEFormatError, match="unreadable"):
        load_sae(tmp_path)
    with pytest.raises(SAEFormatError, match="no SAE found"):
        load_sae(tmp_path.parent)
    with pytest.raises(SAEFormatError, match="does not exist"):
        load_sae(tmp_path / "absent")


NATIVE = pytest.mark.parametrize("native", ["1", "0"], ids=["c++ kernels", "pytorch path"])
"""Both ways a CPU can run the sparse kernels: the C++ kernels, and PyTorch's operators as every other device does."""


@NATIVE
@pytest.mark.parametrize("d_sae", [D_SAE, 2048])
@pytest.mark.parametrize("dead_share", ["a third", "two thirds"])
@pytest.mark.parametrize("arch", ["topk", "batchtopk", "transcoder"])
def test_sparse_kernels_equal_dense_reference(arch, dead_share, d_sae, native, monkeypatch):
    """The embedding_bag decoder and sparse encoder gradients give the dense path's loss and gradients, with
    AuxK's latents gathered from a few dead columns or masked from many, and at a width where the grouped top-k
    runs."""
    monkeypatch.setenv("SAESCOPE_NATIVE", native)
    x = x_batch(64)
    if transcodes(arch):
        x = torch.cat([x, x_batch(64, seed=2)], dim=1)
    dead = torch.zeros(d_sae, dtype=torch.bool)
    dead[::3] = True
    if dead_share == "two thirds":
        dead = ~dead
    grads, losses = [], []
    for sparse in (False, True):
        sae = make(arch, runtime=Runtime(sparse_kernels=sparse), d_sae=d_sae)
        out = sae.training_forward(x, dead_F=dead)
        out.loss.backward()
        losses.append({k: float(v.detach()) for k, v in out.losses.items()})
        grads.append({n: p.grad.clone() for n, p in sae.named_parameters()})
    assert set(losses[0]) == {"mse", "aux_k"}
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4), name


@NATIVE
@pytest.mark.parametrize("shape", [(64, 8192, 32), (16, 4096, 8), (8, 1000, 4), (4, 2048, 600)])
def test_row_topk_equals_torch_topk(shape, native, monkeypatch):
    """The grouped top-k finds torch.topk's values at columns holding them, with the winners bunched in one
    column group, with ties, and through its fallbacks (a width not divisible into groups; k too large). Both
    paths: the C++ kernel a CPU takes, and the PyTorch one every other device takes."""
    from sae_core.saes.sparse import GROUPS, row_topk

    monkeypatch.setenv("SAESCOPE_NATIVE", native)
    n, d, k = shape
    pre = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    pre[0, 7::GROUPS] = 10 + torch.arange(len(pre[0, 7::GROUPS]), dtype=torch.float)  # one group holds them all
    pre[1, : 2 * k] = 5.0  # more tied values than k
    pre = pre.bfloat16()
    vals, idx = row_topk(pre, k)
    ref = pre.topk(k, dim=-1).values
    assert torch.equal(vals.sort(-1, descending=True).values, ref)
    assert torch.equal(pre.gather(1, idx), vals)
    assert (idx.sort(-1).values.diff(dim=-1) > 0).all()  # distinct columns


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_training_pre_acts_with_the_bias_as_a_column_equal_addmm(apply_b_dec):
    """The sparse path's pre-activations (bias folded into the product) match `pre_acts`, in float32 and in bf16."""
    sae = make("topk", runtime=Runtime(sparse_kernels=True), d_sae=512, apply_b_dec_to_input=apply_b_dec)
    x = x_batch(32)
    torch.testing.assert_close(sae.training_pre_acts(x), sae.pre_acts(x).detach(), rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        folded, reference = sae.training_pre_acts(x), sae.pre_acts(x)
    assert folded.dtype == reference.dtype == torch.bfloat16
    torch.testing.assert_close(folded.float(), reference.float(), rtol=2e-2, atol=2e-2)


@NATIVE
@pytest.mark.parametrize("arch", ["topk", "transcoder"])
def test_sparse_kernels_under_bfloat16_autocast_give_the_dense_path_gradients(arch, native, monkeypatch):
    """Under autocast the sparse kernels read bfloat16 tables (as autocast's matmuls do) and hand float32
    gradients to float32 parameters, equal to the dense autocast path's within bfloat16's rounding."""
    monkeypatch.setenv("SAESCOPE_NATIVE", native)
    x = x_batch(64)
    if transcodes(arch):
        x = torch.cat([x, x_batch(64, seed=2)], dim=1)
    dead = torch.zeros(2048, dtype=torch.bool)
    dead[::3] = True
    grads = []
    for sparse in (False, True):
        sae = make(arch, runtime=Runtime(sparse_kernels=sparse), d_sae=2048)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = sae.training_forward(x, dead_F=dead)
        out.loss.backward()
        grads.append({n: p.grad for n, p in sae.named_parameters()})
    for name, dense in grads[0].items():
        sparse = grads[1][name]
        assert sparse.dtype == torch.float32, name
        assert torch.nn.functional.cosine_similarity(dense.flatten(), sparse.flatten(), dim=0) > 0.999, name


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_last_value_of_a_bf16_file_is_found(tmp_path, bad):
    def edit(tensors):
        tensors.update({k: v.to(torch.bfloat16) for k, v in tensors.items()})
        tensors["W_dec"][-1, -1] = bad

    corrupt(tmp_path, "topk", edit)
    with pytest.raises(SAEFormatError, match="'W_dec' contains NaN or infinite values"):
        load_sae(tmp_path)


def test_a_bf16_file_loads_as_written_without_the_random_initialisation(tmp_path, monkeypatch):
    corrupt(tmp_path, "topk", lambda t: t.update({k: v.to(torch.bfloat16) for k, v in t.items()}))
    monkeypatch.setattr(SAE, "initialize", lambda *_: pytest.fail("a loaded SAE was initialised first"))
    sae = load_sae(tmp_path)
    for name, tensor in load_file(tmp_path / "sae_weights.safetensors").items():
        assert getattr(sae, name).dtype == torch.float32 and torch.equal(getattr(sae, name), tensor.float())
