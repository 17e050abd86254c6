import pytest
import torch

from sae_core.hooks import capture, capture_sites, splice, truncated_forward, truncated_forward_sites
from sae_core.sites import (
    KINDS,
    Site,
    SiteError,
    decoder_layers,
    mlp_pairs,
    parse_site,
    parse_sites,
    site_module,
    valid_sites,
)
from tests.factories import FAMILIES, tiny_model


@pytest.mark.parametrize("name,expected", [
    ("layers.2.resid_post", Site(2, "resid_post")),
    ("blocks.0.hook_resid_pre", Site(0, "resid_pre")),
    ("blocks.1.hook_mlp_out", Site(1, "mlp_out")),
    (" layers.1.attn_out ", Site(1, "attn_out")),
    ("layers.1.mlp_in", Site(1, "mlp_in")),
    ("blocks.1.ln2.hook_normalized", Site(1, "mlp_in")),
])
def test_parse_site_accepts_canonical_and_saelens_names(name, expected):
    assert parse_site(name) == expected


@pytest.mark.parametrize("name", ["layers.x.resid_post", "layer.1.resid_post", "blocks.1.hook_z", ""])
def test_parse_site_rejects_unknown_names_and_lists_the_forms(name):
    with pytest.raises(SiteError, match=r"valid forms are layers\.N"):
        parse_site(name)


def test_layer_out_of_range_names_the_valid_range():
    with pytest.raises(SiteError, match=r"layers 0\.\.2"):
        parse_site("layers.3.resid_post", n_layers=3)


@pytest.mark.parametrize("family", FAMILIES)
def test_residual_sites_match_hidden_states(family):
    model = tiny_model(family)
    ids = torch.randint(3, 200, (2, 9))
    hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    pre = truncated_forward(model, parse_site("layers.1.resid_pre"), ids)
    post = truncated_forward(model, parse_site("layers.1.resid_post"), ids)
    torch.testing.assert_close(pre, hidden[1])
    torch.testing.assert_close(post, hidden[2])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["mlp_out", "attn_out"])
def test_component_sites_are_found_by_structure(family, kind):
    model = tiny_model(family)
    module = site_module(model, Site(1, kind))
    word = "MLP" if kind == "mlp_out" else "Attention"
    assert word.lower() in type(module).__name__.lower()
    acts = truncated_forward(model, Site(1, kind), torch.randint(3, 200, (2, 5)))
    assert acts.shape == (2, 5, 32)


@pytest.mark.parametrize("family", FAMILIES)
def test_truncated_forward_runs_no_later_layer(family):
    model = tiny_model(family)
    ran = []
    handles = [layer.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
               for i, layer in enumerate(decoder_layers(model))]
    try:
        truncated_forward(model, Site(0, "resid_post"), torch.randint(3, 200, (1, 4)))
    finally:
        for h in handles:
            h.remove()
    assert ran == [0]


def test_hooks_are_removed_even_when_the_forward_fails():
    model = tiny_model("llama")
    module = site_module(model, Site(1, "resid_post"))
    with pytest.raises(RuntimeError), capture(model, Site(1, "resid_post"), stop=False):
        raise RuntimeError("boom")
    assert not module._forward_hooks and not module._forward_pre_hooks


@pytest.mark.parametrize("kind", KINDS)
def test_splice_changes_downstream_and_identity_changes_nothing(kind):
    model = tiny_model("gpt2")
    ids = torch.randint(3, 200, (2, 6))
    base = model(input_ids=ids).logits
    with splice(model, Site(1, kind), lambda x: x.clone()):
        same = model(input_ids=ids).logits
    with splice(model, Site(1, kind), lambda x: torch.zeros_like(x)):
        zeroed = model(input_ids=ids).logits
    torch.testing.assert_close(same, base)
    assert not torch.allclose(zeroed, base)


def test_valid_sites_lists_every_layer_and_kind():
    names = valid_sites(tiny_model("llama", layers=2))
    assert len(names) == 10 and "layers.1.attn_out" in names and "layers.1.mlp_in" in names


def test_parse_sites_gives_several_sites_in_forward_order():
    assert parse_sites("layers.2.resid_post, blocks.0.hook_mlp_out,layers.2.resid_pre,layers.2.attn_out") == (
        Site(0, "mlp_out"), Site(2, "resid_pre"), Site(2, "attn_out"), Site(2, "resid_post"))
    assert parse_sites("layers.1.resid_post") == (Site(1, "resid_post"),)


@pytest.mark.parametrize("names,message", [
    ("layers.1.resid_post,blocks.1.hook_resid_post", r"site layers\.1\.resid_post is named more than once"),
    (" ", "no site given"),
    ("layers.1.resid_post,", "unknown site ''"),
    ("layers.1.resid_post,layers.5.resid_post", r"layers 0\.\.2"),
])
def test_parse_sites_rejects_repeats_gaps_and_layers_out_of_range(names, message):
    with pytest.raises(SiteError, match=message):
        parse_sites(names, n_layers=3)


@pytest.mark.parametrize("family", FAMILIES)
def test_one_forward_captures_every_site_as_separate_forwards_do_and_stops_after_the_deepest(family):
    model = tiny_model(family)
    ids = torch.randint(3, 200, (2, 7))
    sites = parse_sites("layers.0.resid_post,layers.1.mlp_out,layers.1.resid_pre,layers.1.attn_out")
    ran = []
    handles = [layer.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
               for i, layer in enumerate(decoder_layers(model))]
    try:
        together = truncated_forward_sites(model, sites, ids)
    finally:
        for h in handles:
            h.remove()
    assert ran == [0]  # layer 1 stopped inside, at its MLP, the deepest site; layer 2 never ran
    for site, acts in zip(sites, together, strict=True):
        torch.testing.assert_close(acts, truncated_forward(model, site, ids), rtol=0, atol=0)


def test_capture_sites_removes_every_hook_when_the_forward_fails():
    model = tiny_model("llama")
    sites = (Site(0, "resid_pre"), Site(1, "resid_post"))
    with pytest.raises(RuntimeError), capture_sites(model, sites, stop=False):
        raise RuntimeError("boom")
    assert all(not site_module(model, s)._forward_hooks and not site_module(model, s)._forward_pre_hooks for s in sites)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_mlp_input_is_what_the_mlp_turns_into_its_output(family):
    """One forward reads an MLP's input and output; the MLP applied to the first gives the second."""
    model = tiny_model(family)
    ids = torch.randint(3, 200, (2, 7))
    x, y = truncated_forward_sites(model, (Site(1, "mlp_in"), Site(1, "mlp_out")), ids)
    torch.testing.assert_close(site_module(model, Site(1, "mlp_in"))(x), y)
    assert not torch.allclose(x, truncated_forward(model, Site(1, "resid_pre"), ids))


def test_the_llama_mlp_input_is_the_post_attention_norm():
    model = tiny_model("llama")
    ids = torch.randint(3, 200, (2, 7))
    seen = []
    handle = decoder_layers(model)[1].post_attention_layernorm.register_forward_hook(lambda m, a, o: seen.append(o))
    try:
        model(input_ids=ids)
    finally:
        handle.remove()
    torch.testing.assert_close(truncated_forward(model, Site(1, "mlp_in"), ids), seen[0], rtol=0, atol=0)
    assert Site(1, "mlp_in").hook_name == "blocks.1.ln2.hook_normalized"


def test_parse_sites_expands_mlp_pairs_and_layer_ranges():
    assert parse_sites("layers.0-1.mlp") == (Site(0, "mlp_in"), Site(0, "mlp_out"), Site(1, "mlp_in"), Site(1, "mlp_out"))
    assert parse_sites("layers.2.mlp,layers.0-1.resid_post") == (
        Site(0, "resid_post"), Site(1, "resid_post"), Site(2, "mlp_in"), Site(2, "mlp_out"))
    with pytest.raises(SiteError, match="runs backwards"):
        parse_sites("layers.3-1.mlp")
    with pytest.raises(SiteError, match=r"layers 0\.\.2"):
        parse_sites("layers.0-3.mlp", n_layers=3)
    with pytest.raises(SiteError, match="named more than once"):
        parse_sites("layers.1.mlp,layers.1.mlp_out")


def test_mlp_pairs_pairs_each_layer_and_refuses_other_sites_and_half_pairs():
    assert mlp_pairs(parse_sites("layers.2.mlp,layers.0.mlp")) == [
        (Site(0, "mlp_in"), Site(0, "mlp_out")), (Site(2, "mlp_in"), Site(2, "mlp_out"))]
    with pytest.raises(SiteError, match=r"layers\.1\.resid_post is not an MLP's input or output"):
        mlp_pairs(parse_sites("layers.0.mlp,layers.1.resid_post"))
    with pytest.raises(SiteError, match=r"layers\.1\.mlp_out missing"):
        mlp_pairs(parse_sites("layers.0.mlp,layers.1.mlp_in"))
