import json

import pytest
import torch

import sae_core.harvest as harvest_module
from sae_core.config import HarvestConfig
from sae_core.harvest import HarvestError, harvest, load_shard, read_manifest
from sae_core.hooks import truncated_forward
from sae_core.lm import load_model
from sae_core.sites import Site
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
