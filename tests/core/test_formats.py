"""Loading SAEs written by other tools, checked against each tool's own forward semantics.

Each reference below restates the tool's documented forward pass (SAELens, sparsify, Gemma Scope,
dictionary_learning) on the raw stored tensors, independently of saescope's conversion.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sae_core.saes import SAEFormatError, load_sae

D, F, K = 12, 40, 5


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed + sum(shape)))


def x_batch():
    return rand(64, D, seed=99)


def test_saelens_standard_v5_flat_cfg(tmp_path):
    W_enc, b_enc, W_dec, b_dec = rand(D, F), rand(F) * 0.1, rand(F, D), rand(D)
    save_file({"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}, tmp_path / "sae_weights.safetensors")
    cfg = {"architecture": "standard", "d_in": D, "d_sae": F, "dtype": "float32", "model_name": "gpt2",
           "hook_name": "blocks.3.hook_resid_pre", "hook_layer": 3, "apply_b_dec_to_input": True,
           "normalize_activations": "none", "context_size": 128}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    sae = load_sae(tmp_path)
    x = x_batch()
    f = ((x - b_dec) @ W_enc + b_enc).relu()
    assert torch.allclose(sae.encode(x), f, atol=1e-5)
    assert torch.allclose(sae(x), f @ W_dec + b_dec, atol=1e-4)
    assert sae.cfg.architecture == "relu" and sae.cfg.provenance.site.name == "layers.3.resid_pre"
    assert sae.cfg.provenance.model == "gpt2"


def test_saelens_topk_and_jumprelu_v6_metadata(tmp_path):
    W_enc, b_enc, W_dec, b_dec = rand(D, F), rand(F) * 0.1, rand(F, D), rand(D)
    x = x_batch()
    save_file({"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}, tmp_path / "sae_weights.safetensors")
    meta = {"model_name": "m", "hook_name": "blocks.1.hook_resid_post"}
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "topk", "d_in": D, "d_sae": F, "k": K,
                                                   "apply_b_dec_to_input": True, "metadata": meta}))
    pre = (x - b_dec) @ W_enc + b_enc
    top = pre.topk(K, dim=-1)
    expected = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    sae = load_sae(tmp_path)
    assert sae.cfg.k == K and sae.cfg.provenance.hook_name == "blocks.1.hook_resid_post"
    assert torch.allclose(sae.encode(x), expected, atol=1e-5)

    threshold = rand(F).abs()
    save_file({"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "threshold": threshold},
              tmp_path / "sae_weights.safetensors")
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "jumprelu", "d_in": D, "d_sae": F,
                                                   "apply_b_dec_to_input": False, "metadata": meta}))
    pre = x @ W_enc + b_enc
    expected = pre.relu() * (pre > threshold)
    sae = load_sae(tmp_path)
    assert torch.allclose(sae.encode(x), expected, atol=1e-5)
    assert torch.allclose(sae(x), expected @ W_dec + b_dec, atol=1e-4)


def test_saelens_runtime_normalisation_rejected(tmp_path):
    save_file({"W_enc": rand(D, F), "b_enc": rand(F), "W_dec": rand(F, D), "b_dec": rand(D)},
              tmp_path / "sae_weights.safetensors")
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": D, "d_sae": F,
                                                   "normalize_activations": "layer_norm"}))
    with pytest.raises(SAEFormatError, match="normalize_activations"):
        load_sae(tmp_path)


def write_sparsify(path, **cfg_extra):
    path.mkdir()
    enc_w, enc_b, W_dec, b_dec = rand(F, D), rand(F) * 0.1, rand(F, D), rand(D)
    save_file({"encoder.weight": enc_w, "encoder.bias": enc_b, "W_dec": W_dec, "b_dec": b_dec}, path / "sae.safetensors")
    cfg = {"expansion_factor": 32, "normalize_decoder": True, "num_latents": F, "k": K, "multi_topk": False,
           "d_in": D, **cfg_extra}
    (path / "cfg.json").write_text(json.dumps(cfg))
    return enc_w, enc_b, W_dec, b_dec


def test_sparsify(tmp_path):
    enc_w, enc_b, W_dec, b_dec = write_sparsify(tmp_path / "layers.2")
    x = x_batch()
    # sparsify: top-k of relu(encoder(x - b_dec)), decoded as sum of acts * W_dec rows + b_dec.
    post = torch.nn.functional.linear(x - b_dec, enc_w, enc_b).relu()
    top = post.topk(K, dim=-1)
    recon = torch.stack([(top.values[i, :, None] * W_dec[top.indices[i]]).sum(0) for i in range(len(x))]) + b_dec
    sae = load_sae(tmp_path / "layers.2")
    assert sae.cfg.architecture == "topk" and sae.cfg.k == K
    assert torch.allclose(sae(x), recon, atol=1e-4)


def test_sparsify_unsupported_variants_rejected(tmp_path):
    write_sparsify(tmp_path / "t", transcode=True)
    with pytest.raises(SAEFormatError, match="transcoders"):
        load_sae(tmp_path / "t")
    write_sparsify(tmp_path / "g", activation="groupmax")
    with pytest.raises(SAEFormatError, match="groupmax"):
        load_sae(tmp_path / "g")


def test_gemma_scope_npz(tmp_path):
    W_enc, W_dec, b_enc, b_dec, threshold = rand(D, F), rand(F, D), rand(F) * 0.1, rand(D), rand(F).abs() * 0.5
    np.savez(tmp_path / "params.npz", W_enc=W_enc.numpy(), W_dec=W_dec.numpy(), b_enc=b_enc.numpy(),
             b_dec=b_dec.numpy(), threshold=threshold.numpy())
    x = x_batch()
    # Gemma Scope's JumpReLU: mask(pre > threshold) * relu(pre), pre = x @ W_enc + b_enc (no b_dec on input).
    pre = x @ W_enc + b_enc
    acts = (pre > threshold) * pre.relu()
    for path in (tmp_path, tmp_path / "params.npz"):
        sae = load_sae(path)
        assert sae.cfg.architecture == "jumprelu" and not sae.cfg.apply_b_dec_to_input
        assert torch.allclose(sae.encode(x), acts, atol=1e-5)
        assert torch.allclose(sae(x), acts @ W_dec + b_dec, atol=1e-4)


def test_gemma_scope_malformed(tmp_path):
    np.savez(tmp_path / "params.npz", W_enc=rand(D, F).numpy(), W_dec=rand(F, D).numpy(), b_enc=rand(F).numpy(),
             b_dec=rand(D).numpy())
    with pytest.raises(SAEFormatError, match="missing tensor 'threshold'"):
        load_sae(tmp_path)
    (tmp_path / "params.npz").write_bytes(b"not a zip")
    with pytest.raises(SAEFormatError, match="unreadable"):
        load_sae(tmp_path)


def write_dl(path, dict_class, state, **trainer):
    path.mkdir()
    torch.save(state, path / "ae.pt")
    config = {"trainer": {"dict_class": dict_class, "activation_dim": D, "dict_size": F, "lm_name": "lm", "layer": 4, **trainer}}
    (path / "config.json").write_text(json.dumps(config))


def test_dictionary_learning_autoencoder(tmp_path):
    state = {"bias": rand(D), "encoder.weight": rand(F, D), "encoder.bias": rand(F) * 0.1, "decoder.weight": rand(D, F)}
    write_dl(tmp_path / "ae", "AutoEncoder", state)
    x = x_batch()
    f = torch.nn.functional.linear(x - state["bias"], state["encoder.weight"], state["encoder.bias"]).relu()
    recon = torch.nn.functional.linear(f, state["decoder.weight"]) + state["bias"]
    sae = load_sae(tmp_path / "ae")
    assert sae.cfg.architecture == "relu" and sae.cfg.provenance.model == "lm"
    assert sae.cfg.provenance.site.name == "layers.4.resid_post"
    assert torch.allclose(sae.encode(x), f, atol=1e-5) and torch.allclose(sae(x), recon, atol=1e-4)


def test_dictionary_learning_topk_and_batchtopk(tmp_path):
    state = {"encoder.weight": rand(F, D), "encoder.bias": rand(F) * 0.1, "decoder.weight": rand(D, F),
             "b_dec": rand(D), "k": torch.tensor(K, dtype=torch.int), "threshold": torch.tensor(0.3)}
    x = x_batch()
    post = torch.nn.functional.linear(x - state["b_dec"], state["encoder.weight"], state["encoder.bias"]).relu()
    write_dl(tmp_path / "topk", "AutoEncoderTopK", state, k=K)
    top = post.topk(K, dim=-1)
    expected = torch.zeros_like(post).scatter(-1, top.indices, top.values)
    sae = load_sae(tmp_path / "topk")
    assert sae.cfg.architecture == "topk" and torch.allclose(sae.encode(x), expected, atol=1e-5)

    write_dl(tmp_path / "batch", "BatchTopKSAE", state, k=K)
    sae = load_sae(tmp_path / "batch")
    expected = post * (post > 0.3)
    assert sae.cfg.architecture == "batchtopk" and torch.allclose(sae.encode(x), expected, atol=1e-5)
    recon = torch.nn.functional.linear(expected, state["decoder.weight"]) + state["b_dec"]
    assert torch.allclose(sae(x), recon, atol=1e-4)


def test_dictionary_learning_jumprelu_is_a_plain_jumprelu(tmp_path):
    state = {"W_enc": rand(D, F), "b_enc": rand(F) * 0.1, "W_dec": rand(F, D) * 3, "b_dec": rand(D),
             "threshold": rand(F).abs() * 0.3}
    write_dl(tmp_path / "j", "JumpReluAutoEncoder", state)
    x = x_batch()
    # dictionary_learning (checked against the tool itself in test_peer_formats): no b_dec on the input,
    # f = pre * (pre > threshold), decoder rows used as they are, whatever their norms.
    pre = x @ state["W_enc"] + state["b_enc"]
    f = (pre * (pre > state["threshold"])).relu()
    recon = f @ state["W_dec"] + state["b_dec"]
    sae = load_sae(tmp_path / "j")
    assert not sae.cfg.apply_b_dec_to_input
    assert torch.allclose(sae.encode(x), f, atol=1e-4) and torch.allclose(sae(x), recon, atol=1e-4)


def test_dictionary_learning_rejects_unknown_and_unsafe(tmp_path):
    write_dl(tmp_path / "gated", "GatedAutoEncoder", {"encoder.weight": rand(F, D)})
    with pytest.raises(SAEFormatError, match="'GatedAutoEncoder' is not supported"):
        load_sae(tmp_path / "gated")
    (tmp_path / "pickle").mkdir()
    torch.save({"obj": object}, tmp_path / "pickle" / "ae.pt")  # not loadable with weights_only
    with pytest.raises(SAEFormatError, match="unreadable state dict"):
        load_sae(tmp_path / "pickle")
    write_dl(tmp_path / "nan", "AutoEncoder", {"bias": rand(D), "encoder.weight": rand(F, D) * float("nan"),
                                              "encoder.bias": rand(F), "decoder.weight": rand(D, F)})
    with pytest.raises(SAEFormatError, match="NaN"):
        load_sae(tmp_path / "nan")


def test_config_without_weights(tmp_path):
    (tmp_path / "cfg.json").write_text("{}")
    with pytest.raises(SAEFormatError, match=r"no sae_weights\.safetensors"):
        load_sae(tmp_path)
