"""Transcoders: learning an MLP, the skip term, scale folding, save/load, circuit-tracer's layout, pairing errors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from sae_core.activations import ActivationsError, ActivationSource, open_activations, paired
from sae_core.cli import app
from sae_core.config import HarvestConfig, TrainConfig
from sae_core.evaluate import ce_metrics, reconstruction_metrics
from sae_core.harvest import harvest
from sae_core.hooks import splice_from
from sae_core.lm import load_model
from sae_core.provenance import Provenance
from sae_core.saes import SAEConfig, SAEFormatError, build_sae, load_sae, sae_class, takes_k
from sae_core.saes.circuit_tracer import read_circuit_tracer, write_circuit_tracer
from sae_core.sites import Site, site_module
from sae_core.train import sae_config_for, train
from tests.conftest import invoke_cli
from tests.core.test_replacement import transcoder
from tests.crash import one_thread
from tests.factories import tiny_model

D, D_SAE = 16, 96
TRANSCODERS = ("transcoder", "jumprelu_transcoder", "relu_transcoder")
SETTINGS = {"relu_transcoder": {"l1_coefficient": 0.05}, "jumprelu_transcoder": {"l0_coefficient": 0.005}}
"""Sparsity settings that suit this toy MLP."""


@pytest.fixture(autouse=True)
def on_one_thread():
    with one_thread():
        yield


def mlp_rows(n: int, linear: float = 0.0, seed: int = 0) -> torch.Tensor:
    """(x, MLP(x)) side by side for one random two-layer ReLU MLP, plus `linear` times a random linear map of x;
    `seed` draws the inputs."""
    g = torch.Generator().manual_seed(0)
    W1, W2 = torch.randn(D, 4 * D, generator=g) / D**0.5, torch.randn(4 * D, D, generator=g) / (4 * D) ** 0.5
    A = torch.randn(D, D, generator=g) / D**0.5
    x = torch.randn(n, D, generator=torch.Generator().manual_seed(seed + 100))
    y = (x @ W1 - 0.5).relu() @ W2 * 0.1 + linear * (x @ A)  # an MLP output far smaller than its input, as in LMs
    return torch.cat([x, y], dim=1)


def make(arch: str, skip: bool = False, layer: int = 1, seed: int = 0):
    cfg = SAEConfig(architecture=arch, d_in=D, d_sae=D_SAE, k=4 if takes_k(arch) else None, skip_connection=skip,
                    provenance=Provenance(model="tiny", site=Site(layer, "mlp_in")), **sae_class(arch).config_defaults)
    sae = build_sae(cfg, seed=seed)
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1, generator=g)
        sae.b_dec.normal_(0, 0.1, generator=g)
        if sae.W_skip is not None:
            sae.W_skip.normal_(0, 0.1, generator=g)
    return sae


def fit(arch: str, rows: torch.Tensor, out, skip: bool = False, steps: int = 300):
    data = ActivationSource.in_memory(rows)
    cfg = sae_config_for(data, arch, D_SAE, k=8, skip_connection=skip, **SETTINGS.get(arch, {}))
    tcfg = TrainConfig(tokens=256 * steps, batch_size=256, lr=3e-3, dtype="float32", progress=False, log_every=50)
    return train(cfg, tcfg, data, out)


@pytest.mark.parametrize("arch", TRANSCODERS)
def test_a_transcoder_learns_an_mlp(arch, tmp_path):
    sae = fit(arch, mlp_rows(8192), tmp_path)
    assert sae.cfg.d_in == D and not sae.cfg.apply_b_dec_to_input
    metrics = reconstruction_metrics(sae, [mlp_rows(2048, seed=5)])  # held-out inputs of the same MLP
    assert metrics["fvu"] < 0.35, metrics
    assert metrics["l0"] < 40


def test_the_skip_term_helps_where_the_mlp_has_a_linear_part(tmp_path):
    rows, held = mlp_rows(8192, linear=1.0), mlp_rows(2048, linear=1.0, seed=5)
    plain = reconstruction_metrics(fit("transcoder", rows, tmp_path / "plain"), [held])["fvu"]
    skip_sae = fit("transcoder", rows, tmp_path / "skip", skip=True)
    skip = reconstruction_metrics(skip_sae, [held])["fvu"]
    assert skip <= plain and skip < 0.5 * plain, (skip, plain)
    assert skip_sae.W_skip is not None and skip_sae.W_skip.abs().max() > 0


@pytest.mark.parametrize("arch", TRANSCODERS)
@pytest.mark.parametrize("skip", [False, True])
def test_input_and_output_scales_fold_into_the_weights(arch, skip):
    sae, (s_in, s_out) = make(arch, skip), (3.0, 40.0)
    x = mlp_rows(64)[:, :D]
    expected = sae(x * s_in) / s_out
    sae.fold_scales_(s_in, s_out)
    torch.testing.assert_close(sae(x), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", TRANSCODERS)
@pytest.mark.parametrize("skip", [False, True])
def test_save_and_load_round_trip(arch, skip, tmp_path):
    sae = make(arch, skip)
    sae.save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["hook_name"] == "blocks.1.ln2.hook_normalized" and cfg["hook_name_out"] == "blocks.1.hook_mlp_out"
    assert ("W_skip" in load_file(tmp_path / "sae_weights.safetensors")) == skip
    loaded = load_sae(tmp_path)
    assert type(loaded) is type(sae) and loaded.cfg == sae.cfg
    for name, tensor in sae.saved_tensors().items():
        assert torch.equal(loaded.saved_tensors()[name], tensor), name
    x = mlp_rows(32)[:, :D]
    assert torch.equal(loaded(x), sae(x))


@pytest.mark.parametrize("arch,skip", [("jumprelu_transcoder", True), ("relu_transcoder", False)])
def test_circuit_tracer_layout_round_trips_exactly(arch, skip, tmp_path):
    saes = [make(arch, skip, layer=layer, seed=layer) for layer in (2, 0, 1)]
    write_circuit_tracer(saes, tmp_path)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["model_kind"] == "transcoder_set" and config["model_name"] == "tiny"
    assert (config["feature_input_hook"], config["feature_output_hook"]) == ("mlp.hook_in", "mlp.hook_out")
    layer0 = load_file(tmp_path / "layer_0.safetensors")
    assert layer0["W_enc"].shape == (D_SAE, D) and layer0["W_dec"].shape == (D_SAE, D)
    assert ("W_skip" in layer0) == skip and ("activation_function.threshold" in layer0) == (arch == "jumprelu_transcoder")
    x = mlp_rows(32)[:, :D]
    torch.testing.assert_close(torch.nn.functional.linear(x, layer0["W_enc"], layer0["b_enc"]),
                               x @ saes[1].W_enc + saes[1].b_enc, rtol=0, atol=0)  # circuit-tracer's encoder
    back = read_circuit_tracer(tmp_path)
    for original, read in zip(sorted(saes, key=lambda s: s.cfg.provenance.site.layer), back, strict=True):
        assert type(read) is type(original) and read.cfg.provenance.site == original.cfg.provenance.site
        assert read.cfg.skip_connection == skip and read.cfg.provenance.model == "tiny"
        for name, tensor in original.saved_tensors().items():
            assert torch.equal(read.saved_tensors()[name], tensor), name
        assert torch.equal(read(x), original(x))


def test_circuit_tracer_export_refuses_what_it_cannot_compute(tmp_path):
    with pytest.raises(SAEFormatError, match="only ReLU and JumpReLU"):
        write_circuit_tracer([make("transcoder", layer=0)], tmp_path / "topk")
    with pytest.raises(SAEFormatError, match="layers 1 have none"):
        write_circuit_tracer([make("relu_transcoder", layer=0), make("relu_transcoder", layer=2)], tmp_path / "gap")
    with pytest.raises(SAEFormatError, match="one architecture"):
        write_circuit_tracer([make("relu_transcoder", layer=0), make("relu_transcoder", True, layer=1)], tmp_path / "mix")
    plain = build_sae(SAEConfig(architecture="relu", d_in=D, d_sae=D_SAE, provenance=Provenance(site=Site(0, "resid_post"))))
    with pytest.raises(SAEFormatError, match="transcoders of MLP inputs"):
        write_circuit_tracer([plain], tmp_path / "sae")


def test_pairs_of_mismatched_widths_or_rows_are_refused():
    with pytest.raises(ActivationsError, match="must be equally wide"):
        paired(ActivationSource.in_memory(torch.zeros(8, D)), ActivationSource.in_memory(torch.zeros(8, D + 1)))
    with pytest.raises(ActivationsError, match="not one harvest's rows"):
        paired(ActivationSource.in_memory(torch.zeros(8, D)), ActivationSource.in_memory(torch.zeros(9, D)))
    rows = paired(ActivationSource.in_memory(torch.zeros(8, D)), ActivationSource.in_memory(torch.ones(8, D)))
    assert rows.d_in == 2 * D and torch.equal(rows.head(8), torch.cat([torch.zeros(8, D), torch.ones(8, D)], 1))


def test_a_skip_connection_is_only_for_transcoders_and_rows_must_be_pairs():
    with pytest.raises(ValueError, match="only a transcoder takes a skip connection"):
        build_sae(SAEConfig(architecture="topk", d_in=D, d_sae=D_SAE, k=4, skip_connection=True))
    with pytest.raises(ValueError, match="apply_b_dec_to_input must be false"):
        build_sae(SAEConfig(architecture="transcoder", d_in=D, d_sae=D_SAE, k=4))
    with pytest.raises(ValueError, match="rows 32 wide, got 16"):
        make("transcoder").split_rows(torch.zeros(4, D))


def test_splicing_the_mlp_output_from_its_input_reads_before_it_writes():
    model = tiny_model("llama")
    ids = torch.randint(3, 200, (2, 7))
    base = model(input_ids=ids).logits
    mlp_in, mlp_out = Site(1, "mlp_in"), Site(1, "mlp_out")
    mlp = site_module(model, mlp_in)
    with splice_from(model, mlp_in, mlp_out, lambda x, y: mlp.forward(x)):  # a perfect transcoder: no change
        torch.testing.assert_close(model(input_ids=ids).logits, base)
    with splice_from(model, mlp_in, mlp_out, lambda x, y: torch.zeros_like(y)):
        assert not torch.allclose(model(input_ids=ids).logits, base)
    with pytest.raises(ValueError, match="computed after"), splice_from(model, mlp_out, mlp_in, lambda x, y: y):
        pass


def exact_transcoder(model, layer: int):
    """A transcoder whose output is exactly layer `layer`'s MLP output: the MLP itself standing in."""
    sae = make("relu_transcoder", layer=layer)
    mlp = site_module(model, Site(layer, "mlp_in"))

    class Exact(type(sae)):
        def forward(self, x):
            return mlp.forward(x)  # not mlp(x): that would run the splice's hooks again

    return Exact(sae.cfg)


def test_ce_of_a_transcoder_replaces_the_mlp_output():
    """A transcoder whose output is exactly the MLP's recovers all the loss; the baseline zeroes the MLP output.
    With one per layer (the replacement model) the baseline zeroes every MLP."""
    model = tiny_model("llama")
    contexts = [torch.cat([torch.zeros(2, 1, dtype=torch.long), torch.randint(3, 200, (2, 11))], 1)]
    specials = torch.tensor([0, 1, 2])
    one = ce_metrics(model, [(exact_transcoder(model, 1), Site(1, "mlp_in"))], contexts, specials)
    assert one["ce_sae"] == pytest.approx(one["ce_clean"], abs=1e-5)
    assert one["ce_zero"] != pytest.approx(one["ce_clean"], abs=1e-4)
    every = ce_metrics(model, [(exact_transcoder(model, layer), Site(layer, "mlp_in")) for layer in range(3)],
                       contexts, specials)
    assert every["ce_sae"] == pytest.approx(every["ce_clean"], abs=1e-5)
    assert every["ce_zero"] != pytest.approx(one["ce_zero"], abs=1e-4)
    random_set = [(transcoder(layer), Site(layer, "mlp_in")) for layer in range(3)]
    assert ce_metrics(model, random_set, contexts, specials)["ce_sae"] != pytest.approx(every["ce_clean"], abs=1e-3)
    with pytest.raises(ValueError, match="at least one SAE"):
        ce_metrics(model, [], contexts, specials)


@pytest.fixture(scope="module")
def mlp_harvest(tmp_path_factory, tiny_model_dir, corpus):
    """Every layer's MLP input and output of the tiny Llama, from one harvest."""
    out = tmp_path_factory.mktemp("mlp") / "h"
    cfg = HarvestConfig(model=str(tiny_model_dir), site="layers.0-2.mlp", dataset=corpus, tokens=3000,
                        context_len=32, batch_size=8, dtype="float32")
    harvest(cfg, out, lm=load_model(str(tiny_model_dir)), progress=False)
    return out


def test_one_harvest_trains_a_transcoder_per_layer_and_exports_them(mlp_harvest, tmp_path):
    out = tmp_path / "set"
    code, text = invoke_cli(app, "train", "--activations", mlp_harvest, "--out", out, "--arch", "relu_transcoder",
                            "--features", 64, "--tokens", 20000, "--batch-size", 256, "--dtype", "float32",
                            "--l1", 0.05, "--holdout", 300, "--skip")
    assert code == 0, text
    results = json.loads(text[text.index("{"):])
    assert list(results) == ["layers.0.mlp_in", "layers.1.mlp_in", "layers.2.mlp_in"]
    assert all(r["fvu"] < 0.5 for r in results.values()), results
    sae = load_sae(out / "layers.1.mlp_in")
    assert sae.cfg.architecture == "relu_transcoder" and sae.cfg.skip_connection
    # The held-out FVU is the MLP output's, recomputed here by hand from the harvest's last 300 rows.
    x = open_activations(mlp_harvest / "layers.1.mlp_in").head(3000)[-300:]
    y = open_activations(mlp_harvest / "layers.1.mlp_out").head(3000)[-300:]
    with torch.no_grad():
        fvu = float((sae(x) - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum())
    assert fvu == pytest.approx(results["layers.1.mlp_in"]["fvu"], rel=1e-4)
    code, text = invoke_cli(app, "convert", "--sae", out, "--to", "circuit-tracer", "--out", tmp_path / "ct")
    assert code == 0 and "wrote 3 relu_transcoders" in text, text
    assert [s.cfg.provenance.site.layer for s in read_circuit_tracer(tmp_path / "ct")] == [0, 1, 2]


def test_a_transcoder_needs_a_harvest_of_mlp_pairs(mlp_harvest, tmp_path, tiny_model_dir, corpus):
    common = ("--out", tmp_path / "t", "--arch", "transcoder", "--features", 32, "--tokens", 512, "--batch-size", 256)
    code, text = invoke_cli(app, "train", "--activations", mlp_harvest / "layers.0.mlp_in", *common)
    assert code == 2 and "holds one site's rows" in text
    code, text = invoke_cli(app, "train", "--model", tiny_model_dir, *common)
    assert code == 2 and "not on a stream" in text
    code, text = invoke_cli(app, "train", "--activations", mlp_harvest, *common[:2], "--arch", "topk", "--skip",
                            *common[4:])
    assert code == 2 and "only a transcoder takes a skip connection" in text
    mixed = tmp_path / "mixed"
    harvest(HarvestConfig(model=str(tiny_model_dir), site="layers.0.mlp,layers.1.resid_post", dataset=corpus,
                          tokens=300, context_len=32, batch_size=8, dtype="float32"), mixed, progress=False)
    code, text = invoke_cli(app, "train", "--activations", mixed, *common)
    assert code == 2 and "layers.1.resid_post is not an MLP's input or output" in text



def test_residual_attribution_points_a_transcoder_to_the_replacement_graph():
    """Steering a transcoder is tested in test_steering_transcoder; residual-SAE attribution cannot splice one."""
    from sae_core.attribution.config import AttributionError
    from sae_core.attribution.dictionaries import dictionaries

    model = tiny_model("llama")
    sae = build_sae(SAEConfig(architecture="transcoder", d_in=32, d_sae=64, k=4, apply_b_dec_to_input=False,
                              provenance=Provenance(site=Site(1, "mlp_in"))))
    with pytest.raises(AttributionError, match=r"is a transcoder: a set of transcoders .* replacement-model graph"):
        dictionaries(model, "tiny", [("t", sae)])
