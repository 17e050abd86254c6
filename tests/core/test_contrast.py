"""Contrasts of two text sets against a one-text-at-a-time computation, on a tiny model and SAE."""

from itertools import pairwise

import pytest
import torch

from sae_core import contrast as contrast_module
from sae_core.contrast import D_CAP, ContrastError, contrast
from sae_core.hooks import truncated_forward
from sae_core.lm import LoadedModel
from sae_core.sites import parse_site
from tests.core.test_steering import SITE, make_sae
from tests.factories import tiny_model, tiny_tokenizer

A = ["the cat sat on the mat", "a cat and a hat", "cats purr at night", "my cat sleeps all day long"]
B = ["1 + 2 = 3", "x = y * 42", "for i in range(10): print(i)"]


@pytest.fixture(scope="module")
def lm():
    return LoadedModel(tiny_model("llama"), tiny_tokenizer(), "tiny")


@pytest.fixture(scope="module", params=["topk", "relu"])
def sae(request):
    return make_sae(request.param)


def one_by_one(lm, sae, texts):
    """(per-text mean activations, fired, mean site activation), each text alone."""
    out = []
    for text in texts:
        ids = torch.tensor([[0, *lm.tokenizer(text, add_special_tokens=False).input_ids]])
        x_TD = truncated_forward(lm.model, parse_site(SITE), ids)[0, 1:]
        f_TF = sae.encode(x_TD)
        out.append((f_TF.mean(0), (f_TF > 0).any(0), x_TD.mean(0)))
    return [torch.stack(column) for column in zip(*out)]


def test_a_contrast_matches_reading_each_text_alone(lm, sae, monkeypatch):
    monkeypatch.setattr(contrast_module, "BATCH_TOKENS", 40)  # several padded batches
    result = contrast(lm, sae, A, B)
    means_a, fired_a, site_a = one_by_one(lm, sae, A)
    means_b, fired_b, site_b = one_by_one(lm, sae, B)
    torch.testing.assert_close(result.a.means_NF, means_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.b.fired_NF, fired_b)
    torch.testing.assert_close(result.direction_D(), site_a.mean(0) - site_b.mean(0), atol=1e-5, rtol=1e-5)
    top = result.top(5)
    assert len(top) == 5 and all(abs(x.effect) >= abs(y.effect) for x, y in pairwise(top))
    f = top[0].feature
    pooled = ((len(A) - 1) * means_a[:, f].var() + (len(B) - 1) * means_b[:, f].var()) / (len(A) + len(B) - 2)
    diff = means_a[:, f].mean() - means_b[:, f].mean()
    expected = float((diff / torch.maximum(pooled.sqrt(), diff.abs() / D_CAP)).clamp(-D_CAP, D_CAP))
    assert top[0].effect == pytest.approx(expected, rel=1e-4)
    assert top[0].fired_a == pytest.approx(float(fired_a[:, f].float().mean()))
    assert (top[0].mean_a > top[0].mean_b) == (top[0].effect > 0)


def test_a_feature_silent_in_both_sets_has_no_effect(lm, sae):
    result = contrast(lm, sae, A, B)
    silent = ~(result.a.fired_NF.any(0) | result.b.fired_NF.any(0))
    assert (result.effects_F()[silent] == 0).all()


@pytest.mark.parametrize("a,b,field,message", [
    (["only one"], B, "a", "set A has 1 text"),
    (A, [], "b", "set B has 0 text"),
    (A, ["fine", ""], "b", "text 2 of set B is empty"),
])
def test_bad_sets_are_refused_naming_the_set(lm, sae, a, b, field, message):
    with pytest.raises(ContrastError, match=message) as caught:
        contrast(lm, sae, a, b)
    assert caught.value.field == field


def test_the_cli_prints_the_contrast_as_a_table_or_json(lm, tmp_path, tiny_model_dir):
    import json

    from sae_core.cli import app
    from tests.conftest import invoke_cli

    sae_dir = make_sae("topk").save(tmp_path / "sae")
    (tmp_path / "a.txt").write_text("\n".join(A) + "\n\n")
    (tmp_path / "b.txt").write_text("\n".join(B))
    args = ["contrast", "--sae", sae_dir, "--model", tiny_model_dir, "--a", tmp_path / "a.txt", "--b",
            tmp_path / "b.txt", "--top", 3]
    code, out = invoke_cli(app, *args, "--json")
    assert code == 0, out
    rows = [json.loads(line[line.index("{"):]) for line in out.splitlines() if "{" in line]  # stderr: load bars
    assert len(rows) == 3 and set(rows[0]) == {"feature", "mean_a", "mean_b", "effect", "fired_a", "fired_b"}
    code, out = invoke_cli(app, *args)
    table = out[out.index("feature"):].strip().splitlines()
    assert code == 0 and table[0].split()[:2] == ["feature", "d"] and len(table) == 4
    (tmp_path / "b.txt").write_text("one line only")
    code, out = invoke_cli(app, *args)
    assert code == 2 and "set B has 1 text" in out and "Traceback" not in out
