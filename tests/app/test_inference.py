"""ModelCache.run against a forward written out by hand: the pages and the API show what run returns."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from app.models import Sae
from app.services.inference import ModelCache


def hand_forward(model, sae, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(SAE activations at layers.1.resid_post, next-token probabilities) of one context, by a hook of our own."""
    seen = []
    # resid_post of layer 1 is what decoder block 1 outputs: the residual stream after it
    handle = model.model.layers[1].register_forward_hook(
        lambda _module, _args, out: seen.append(out[0] if isinstance(out, tuple) else out))
    try:
        with torch.no_grad():
            logits_TV = model(input_ids=torch.tensor([ids])).logits[0]
            acts_TF = sae.encode(seen[0][0])
    finally:
        handle.remove()
    return acts_TF, logits_TV.softmax(-1)


def test_run_is_the_sites_activations_through_the_sae_and_the_next_token_odds(web_sae):
    loaded, _record, model_dir = web_sae
    row = Sae(name="tiny-sae", model_name="tiny-llama", model_spec=model_dir, source_path=str(loaded.path))
    text = "the cat sat"
    result = ModelCache(n_next=3).run(row, text)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False).input_ids]
    acts_TF, probs_TV = hand_forward(AutoModelForCausalLM.from_pretrained(model_dir).eval(), loaded.sae, ids)
    assert result.token_ids == ids and len(ids) == len(text) + 1  # one token per byte after the BOS
    assert result.pieces == [tokenizer.decode([i]) for i in ids]
    assert (acts_TF > 0).any()  # some feature fires, so the comparison says something
    torch.testing.assert_close(result.acts_TF, acts_TF)
    top_TK = probs_TV.topk(3, dim=-1)
    torch.testing.assert_close(torch.tensor([[p for _, p in row] for row in result.next_tokens]), top_TK.values)
    assert [[t for t, _ in row] for row in result.next_tokens] == [[tokenizer.decode([i]) for i in row]
                                                                   for row in top_TK.indices.tolist()]
