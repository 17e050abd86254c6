import json
from dataclasses import replace

import pytest
import torch

import sae_core.harvest as harvest_module
from sae_core.config import HarvestConfig
from sae_core.finite import NonFiniteError
from sae_core.harvest import HarvestError, harvest, harvest_sites, load_shard, read_manifest
from sae_core.hooks import truncated_forward
from sae_core.lm import load_model
from sae_core.sites import Site, SiteError
from tests.files import file_bytes


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir))


def config(tiny_model_dir, corpus, **overrides):
    base = {"model": str(tiny_model_dir), "site": "layers.1.resid_post", "dataset": corpus, "tokens": 700,
                "context_len": 32, "batch_size": 4, "shard_tokens": 200, "dtype": "float32"}
    return HarvestConfig(**{**base, **overrides})


def shards_of(directory):
    """Every listed shard's tensors, in manifest order."""
    manifest = read_manifest(directory)
    return [load_shard(directory, entry, manifest["d_model"]) for entry in manifest["shards"]]


def all_rows(directory):
    shards = shards_of(directory)
    return {k: torch.cat([s[k] for s in shards]) for k in ("activations", "positions")}, shards


def test_harvest_writes_exact_rows_without_special_tokens(tmp_path, tiny_model_dir, corpus, lm):
    manifest = harvest(config(tiny_model_dir, corpus), tmp_path / "h", lm=lm, progress=False)
    assert manifest["complete"] and manifest["n_tokens"] == 700 and manifest["d_model"] == 32
    assert manifest["site"] == "layers.1.resid_post" and manifest["hook_name"] == "blocks.1.hook_resid_post"
    rows, shards = all_rows(tmp_path / "h")
    assert rows["activations"].shape == (700, 32)
    tokens = torch.cat([s["tokens"] for s in shards]).long()
    assert tokens.shape[0] == manifest["n_contexts"] and (tokens[:, 0] == 0).all()
    ctx, pos = rows["positions"].long().T
    assert not torch.isin(tokens[ctx, pos], torch.tensor([0, 1, 2])).any()
    expected = truncated_forward(lm.model, Site(1, "resid_post"), tokens)[ctx, pos]
    torch.testing.assert_close(rows["activations"], expected)


def test_shards_respect_size_and_manifest_lists_them(tmp_path, tiny_model_dir, corpus, lm):
    manifest = harvest(config(tiny_model_dir, corpus), tmp_path / "h", lm=lm, progress=False)
    assert len(manifest["shards"]) > 2
    assert sum(s["rows"] for s in manifest["shards"]) == 700
    assert all(s["rows"] < 200 + 4 * 32 for s in manifest["shards"])
    firsts = [s["first_context"] for s in manifest["shards"]]
    counts = [s["contexts"] for s in manifest["shards"]]
    assert firsts == [sum(counts[:i]) for i in range(len(counts))]


@pytest.mark.parametrize("dies_at_call", [1, 3, 6])
def test_interrupted_run_resumes_to_identical_files(tmp_path, tiny_model_dir, corpus, lm, monkeypatch, dies_at_call):
    cfg = config(tiny_model_dir, corpus)
    harvest(cfg, tmp_path / "whole", lm=lm, progress=False)
    real = harvest_module._activation_rows
    calls = {"n": 0}

    def dying(*args):
        calls["n"] += 1
        if calls["n"] == dies_at_call:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(harvest_module, "_activation_rows", dying)
    with pytest.raises(KeyboardInterrupt):
        harvest(cfg, tmp_path / "cut", lm=lm, progress=False)
    cut = read_manifest(tmp_path / "cut")
    assert not cut["complete"] and 0 <= cut["n_tokens"] < 700
    shards_of(tmp_path / "cut")  # every listed shard is whole
    monkeypatch.setattr(harvest_module, "_activation_rows", real)
    with pytest.raises(HarvestError, match="--resume"):
        harvest(cfg, tmp_path / "cut", lm=lm, progress=False)
    harvest(cfg, tmp_path / "cut", resume=True, lm=lm, progress=False)
    assert file_bytes(tmp_path / "cut") == file_bytes(tmp_path / "whole")


@pytest.mark.parametrize("first", [1, 150, 331, 699])
def test_resume_with_a_larger_budget_writes_what_a_direct_harvest_writes(tmp_path, tiny_model_dir, corpus, lm, first):
    """A budget that ends inside a context (and inside a shard) continues that very context on resume."""
    harvest(config(tiny_model_dir, corpus), tmp_path / "direct", lm=lm, progress=False)
    harvest(config(tiny_model_dir, corpus, tokens=first), tmp_path / "grown", lm=lm, progress=False)
    harvest(config(tiny_model_dir, corpus, tokens=first), tmp_path / "grown", resume=True, lm=lm, progress=False)
    assert read_manifest(tmp_path / "grown")["n_tokens"] == first  # a resume with the same budget has nothing to do
    harvest(config(tiny_model_dir, corpus), tmp_path / "grown", resume=True, lm=lm, progress=False)
    assert file_bytes(tmp_path / "grown") == file_bytes(tmp_path / "direct")


def test_a_run_killed_after_its_last_shard_is_completed_by_resume(tmp_path, tiny_model_dir, corpus, lm):
    cfg = config(tiny_model_dir, corpus)
    harvest(cfg, tmp_path / "h", lm=lm, progress=False)
    manifest = read_manifest(tmp_path / "h")
    (tmp_path / "h" / "manifest.json").write_text(json.dumps({**manifest, "complete": False}, indent=2))
    assert harvest(cfg, tmp_path / "h", resume=True, lm=lm, progress=False)["complete"]
    assert read_manifest(tmp_path / "h") == manifest


def test_resume_with_other_settings_is_refused(tmp_path, tiny_model_dir, corpus, lm):
    harvest(config(tiny_model_dir, corpus, tokens=100), tmp_path / "h", lm=lm, progress=False)
    with pytest.raises(HarvestError, match="site"):
        harvest(config(tiny_model_dir, corpus, site="layers.0.mlp_out"), tmp_path / "h", resume=True, lm=lm)


def test_corrupt_and_missing_shards_give_clear_errors(tmp_path, tiny_model_dir, corpus, lm):
    manifest = harvest(config(tiny_model_dir, corpus), tmp_path / "h", lm=lm, progress=False)
    (tmp_path / "h" / manifest["shards"][1]["file"]).write_bytes(b"garbage")
    with pytest.raises(HarvestError, match="unreadable shard"):
        shards_of(tmp_path / "h")
    (tmp_path / "h" / "manifest.json").write_text("{")
    with pytest.raises(HarvestError, match="corrupt manifest"):
        read_manifest(tmp_path / "h")
    with pytest.raises(HarvestError, match="not a harvest directory"):
        read_manifest(tmp_path)


def test_bad_site_and_budget_are_rejected(tmp_path, tiny_model_dir, corpus, lm):
    with pytest.raises(ValueError, match=r"layers 0\.\.2"):
        harvest(config(tiny_model_dir, corpus, site="layers.7.resid_post"), tmp_path / "a", lm=lm)
    with pytest.raises(HarvestError, match="positive"):
        harvest(config(tiny_model_dir, corpus, tokens=0), tmp_path / "b", lm=lm)


POISON = {(9, 4): 1e6, (20, 7): float("nan"), (20, 8): float("inf")}
"""(context, position) -> value: 1e6 is finite in float32 and overflows to inf when stored as float16."""


@pytest.fixture
def poisoned(monkeypatch):
    """The model's rows with POISON planted, as an fp16 overflow or a broken layer would leave them."""
    real = harvest_module._activation_rows

    def poisoning(*args):
        acts, positions_R2 = real(*args)
        acts = [acts_RD.clone() for acts_RD in acts]
        for (context, position), value in POISON.items():
            rows = ((positions_R2[:, 0] == context) & (positions_R2[:, 1] == position)).nonzero().flatten()
            acts[0][rows, 2] = value  # at the first site only
        return acts, positions_R2

    monkeypatch.setattr(harvest_module, "_activation_rows", poisoning)


def test_non_finite_rows_stop_the_harvest_or_are_skipped_and_counted(tmp_path, tiny_model_dir, corpus, lm, poisoned):
    cfg = config(tiny_model_dir, corpus, dtype="float16")
    with pytest.raises(NonFiniteError) as caught:
        harvest(cfg, tmp_path / "strict", lm=lm, progress=False)
    strict = read_manifest(tmp_path / "strict")
    assert not strict["complete"] and [s["file"] for s in strict["shards"]] == ["shard_00000.safetensors"]

    manifest = harvest(replace(cfg, skip_nonfinite=True), tmp_path / "skip", lm=lm, progress=False)
    assert manifest["complete"] and manifest["n_tokens"] == 700 and manifest["n_nonfinite_skipped"] == 3
    rows, shards = all_rows(tmp_path / "skip")
    assert rows["activations"].isfinite().all() and rows["activations"].shape[0] == 700
    kept = set(map(tuple, rows["positions"].tolist()))
    assert not kept & set(POISON) and {(9, 3), (9, 5), (20, 6), (20, 9)} <= kept

    # The strict run names the row (context 9, position 4) would have had: just after (9, 3) in shard 1.
    row = shards[1]["positions"].tolist().index([9, 3]) + 1
    assert str(caught.value).startswith(f"{tmp_path / 'strict' / 'shard_00001.safetensors'}: row {row} holds NaN")
    assert "(context 9, position 4)" in str(caught.value) and "--skip-nonfinite" in str(caught.value)


# --- several sites from one forward pass (issue 15) ------------------------------------------------------------

SITES = "layers.1.resid_post,layers.0.mlp_out"
"""Given out of forward order on purpose: the harvest lists them as the forward computes them."""


def forwards(monkeypatch):
    """Counts the harvest's forward passes (one per batch, whatever the number of sites)."""
    real, calls = harvest_module._activation_rows, []

    def counting(*args):
        calls.append([site.name for site in args[1]])
        return real(*args)

    monkeypatch.setattr(harvest_module, "_activation_rows", counting)
    return calls


def test_several_sites_from_one_forward_write_what_harvests_at_each_site_alone_write(tmp_path, tiny_model_dir, corpus,
                                                                                     lm, monkeypatch):
    calls = forwards(monkeypatch)
    listing = harvest(config(tiny_model_dir, corpus, site=SITES), tmp_path / "both", lm=lm, progress=False)
    assert listing["sites"] == ["layers.0.mlp_out", "layers.1.resid_post"] and listing["complete"]
    assert listing["n_tokens"] == 700 and listing["model"] == read_manifest(tmp_path / "both" / "layers.0.mlp_out")["model"]
    batches = len(calls)
    assert calls == [["layers.0.mlp_out", "layers.1.resid_post"]] * batches
    assert harvest_sites(tmp_path / "both") == {name: tmp_path / "both" / name for name in listing["sites"]}
    assert json.loads((tmp_path / "both" / "sites.json").read_text()) == listing
    for name in listing["sites"]:
        harvest(config(tiny_model_dir, corpus, site=name), tmp_path / name, lm=lm, progress=False)
        assert file_bytes(tmp_path / "both" / name) == file_bytes(tmp_path / name)
    assert len(calls) == 3 * batches
    assert harvest_sites(tmp_path / "layers.0.mlp_out") == {}


def test_an_interrupted_harvest_at_several_sites_resumes_to_identical_files(tmp_path, tiny_model_dir, corpus, lm,
                                                                            monkeypatch):
    cfg = config(tiny_model_dir, corpus, site=SITES)
    harvest(cfg, tmp_path / "whole", lm=lm, progress=False)
    real = harvest_module._activation_rows
    calls = {"n": 0}

    def dying(*args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(harvest_module, "_activation_rows", dying)
    with pytest.raises(KeyboardInterrupt):
        harvest(cfg, tmp_path / "cut", lm=lm, progress=False)
    assert not json.loads((tmp_path / "cut" / "sites.json").read_text())["complete"]
    monkeypatch.setattr(harvest_module, "_activation_rows", real)
    harvest(cfg, tmp_path / "cut", resume=True, lm=lm, progress=False)
    assert file_bytes(tmp_path / "cut") == file_bytes(tmp_path / "whole")


def test_layouts_and_site_lists_are_not_mixed(tmp_path, tiny_model_dir, corpus, lm):
    harvest(config(tiny_model_dir, corpus, tokens=100), tmp_path / "one", lm=lm, progress=False)
    with pytest.raises(HarvestError, match=r"already holds activations at one site, not at layers\.0\.mlp_out, layers\.1"):
        harvest(config(tiny_model_dir, corpus, tokens=100, site=SITES), tmp_path / "one", resume=True, lm=lm)
    harvest(config(tiny_model_dir, corpus, tokens=100, site=SITES), tmp_path / "two", lm=lm, progress=False)
    for site in ("layers.1.resid_post", "layers.0.mlp_out,layers.2.resid_post"):
        with pytest.raises(HarvestError, match=r"already holds activations at layers\.0\.mlp_out, layers\.1\.resid_post"):
            harvest(config(tiny_model_dir, corpus, tokens=100, site=site), tmp_path / "two", resume=True, lm=lm)
    with pytest.raises(HarvestError, match="--resume"):
        harvest(config(tiny_model_dir, corpus, tokens=100, site=SITES), tmp_path / "two", lm=lm)
    with pytest.raises(SiteError, match="named more than once"):
        harvest(config(tiny_model_dir, corpus, site="layers.1.resid_post,blocks.1.hook_resid_post"), tmp_path / "x")
    with pytest.raises(SiteError, match=r"layers 0\.\.2"):
        harvest(config(tiny_model_dir, corpus, site="layers.0.mlp_out,layers.7.resid_post"), tmp_path / "y", lm=lm)
    assert not (tmp_path / "y").exists()  # nothing written for a site the model lacks


def test_sites_whose_shards_part_resume_to_what_direct_harvests_write(tmp_path, tiny_model_dir, corpus, lm, poisoned):
    """Rows left out at one site move its shard boundaries; a kill between two sites' shard writes parts them too."""
    cfg = config(tiny_model_dir, corpus, site="layers.0.mlp_out,layers.1.resid_post", dtype="float16",
                 skip_nonfinite=True, tokens=300)
    harvest(replace(cfg, tokens=700), tmp_path / "direct", lm=lm, progress=False)
    listing = harvest(cfg, tmp_path / "grown", lm=lm, progress=False)
    assert listing["n_tokens"] == 300 and listing["n_nonfinite_skipped"] == 1  # (9, 4), at the first site only
    second = tmp_path / "grown" / "layers.1.resid_post" / "manifest.json"
    cut = json.loads(second.read_text())
    cut["shards"] = cut["shards"][:1]  # as if killed before this site's second shard was listed
    cut["n_tokens"], cut["n_contexts"] = cut["shards"][0]["rows"], cut["shards"][0]["contexts"]
    second.write_text(json.dumps(cut, indent=2))
    harvest(replace(cfg, tokens=700), tmp_path / "grown", resume=True, lm=lm, progress=False)
    assert file_bytes(tmp_path / "grown") == file_bytes(tmp_path / "direct")
    assert read_manifest(tmp_path / "direct" / "layers.0.mlp_out")["n_nonfinite_skipped"] == 3
