"""Replacement-model graphs over HTTP: a set of transcoders (one per layer of the tiny model) drawn as a job or
through the API, stored with its adjacency, pruned again at any thresholds without the model, exported as
Neuronpedia graph JSON, and rerun with pinned features; bad sets and requests are refused by field."""

from __future__ import annotations

import pytest
import torch

from app import crud
from app.pipeline import read_sae, register_sae
from sae_core.attribution.inputs import prompt_ids
from sae_core.attribution.neuronpedia import read_neuronpedia_graph
from sae_core.attribution.replacement import ReplacementModel
from sae_core.attribution.replacement_command import top_tokens
from sae_core.attribution.replacement_graph import ReplacementConfig, ReplacementGraph, build_graph
from sae_core.lm import load_model
from tests.app.test_web_circuits import finished_job
from tests.core.neuronpedia_graph_check import upload_errors
from tests.core.test_replacement import transcoder

PROMPT = "hello world, hello"
LAYERS = 3


@pytest.fixture(scope="module")
def transcoder_dirs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("transcoders")
    return [transcoder(layer, "transcoder", skip=True, model=tiny_model_dir.name).save(root / f"tc{layer}")
            for layer in range(LAYERS)]


def register(session, dirs, tiny_model_dir, set_name: str) -> str:
    for d in dirs:
        crud.add_to_set(session, sae=register_sae(session, loaded=read_sae(d), model_spec=str(tiny_model_dir)),
                        set_name=set_name)
    return str(crud.find_sae_set(session, ref=set_name).id)


@pytest.fixture()
def tc_set(session, transcoder_dirs, tiny_model_dir) -> str:
    return register(session, transcoder_dirs, tiny_model_dir, "tiny-transcoders")


def post(client, csrf, **fields):
    body = {"prompt": PROMPT, "max_feature_nodes": 12} | fields
    return client.post("/api/replacement-graphs", json=body, headers={"X-CSRF-Token": csrf})


def direct_graph(tiny_model_dir, transcoder_dirs) -> tuple[ReplacementModel, ReplacementGraph]:
    """The same graph built by the library, for comparison."""
    lm = load_model(str(tiny_model_dir))
    ids = prompt_ids(lm.tokenizer, PROMPT, "prompt", 128)
    rm = ReplacementModel(lm.model, [read_sae(d).sae for d in transcoder_dirs], torch.tensor(ids), zero_bos=True)
    return rm, build_graph(rm, ReplacementConfig(max_feature_nodes=12))


def test_the_api_builds_and_stores_the_graph_the_library_builds(client, labeller, tc_set, session, tiny_model_dir,
                                                                 transcoder_dirs):
    _user, csrf = labeller
    response = post(client, csrf, sae_set=tc_set)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["graph"]["method"] == "replacement" and body["url"] == f"/saes/{tc_set}/circuits/{body['id']}"
    row = crud.find_graph(session, graph_id=body["id"])
    stored = ReplacementGraph.from_stored(row.graph, row.adjacency)
    _rm, direct = direct_graph(tiny_model_dir, transcoder_dirs)
    assert stored.layout == direct.layout and stored.logit_tokens == direct.logit_tokens
    torch.testing.assert_close(stored.adjacency, direct.adjacency)
    scores = direct.scores()
    assert body["graph"]["replacement_score"] == pytest.approx(scores.replacement, abs=1e-6)
    assert body["graph"]["completeness_score"] == pytest.approx(scores.completeness, abs=1e-6)
    page = client.get(body["url"])
    assert page.status_code == 200 and 'id="graph-data"' in page.text and "Rerun with the pins" in page.text
    assert "/api/replacement-graphs" in client.get("/openapi.json").json()["paths"]


def test_picked_outputs_are_the_graphs_outputs(client, labeller, tc_set):
    _user, csrf = labeller
    graph = post(client, csrf, sae_set=tc_set, targets=["x", "y"], target="x").json()["graph"]
    assert graph["logit_texts"] == ["x", "y"] and graph["target"] == "x"


def test_the_view_prunes_the_stored_graph_again_at_any_thresholds(client, labeller, tc_set, session):
    _user, csrf = labeller
    graph_id = post(client, csrf, sae_set=tc_set).json()["id"]
    graph = ReplacementGraph.from_stored(*(lambda r: (r.graph, r.adjacency))(crud.find_graph(session, graph_id=graph_id)))
    for node, edge in ((0.8, 0.98), (0.3, 0.5), (1.0, 1.0)):
        view = client.get(f"/api/graphs/{graph_id}/view", params={"node_threshold": node, "edge_threshold": edge}).json()
        pruned = graph.prune(node, edge)
        assert len(view["nodes"]) == int(pruned.nodes.sum()) and len(view["links"]) == int(pruned.edges.sum())
        assert view["replacement_score"] == pytest.approx(graph.scores(pruned).replacement, abs=1e-6)
        ids = {n["node_id"] for n in view["nodes"]}
        assert all(link["source"] in ids and link["target"] in ids for link in view["links"])
        outputs = [n for n in view["nodes"] if n["kind"] == "metric"]
        assert len(outputs) == len(graph.logit_tokens)  # outputs and embeddings are always kept
    default = client.get(f"/api/graphs/{graph_id}/view").json()
    assert (default["node_threshold"], default["edge_threshold"]) == (0.8, 0.98)
    assert client.get(f"/api/graphs/{graph_id}/view", params={"node_threshold": 2}).status_code == 422
    page = client.get(f"/saes/{tc_set}/circuits/{graph_id}", params={"node_threshold": 0.3})
    assert page.status_code == 200 and '"node_threshold": 0.3' in page.text


def test_the_neuronpedia_export_reads_back_with_labels_as_clerps(client, labeller, tc_set, session):
    user, csrf = labeller
    graph_id = post(client, csrf, sae_set=tc_set).json()["id"]
    row = crud.find_graph(session, graph_id=graph_id)
    graph = ReplacementGraph.from_stored(row.graph, row.adjacency)
    layer, index = int(graph.feature_layer[0]), int(graph.feature_index[0])
    crud.add_label(session, sae_id=row.sae_ids[layer], feature_index=index, text="a labelled feature", author_id=user.id)
    exported = client.get(f"/api/graphs/{graph_id}/neuronpedia", params={"node_threshold": 1, "edge_threshold": 1,
                                                                         "model_id": "tiny-llama"}).json()
    assert upload_errors(exported) == []
    assert exported["metadata"]["transcoder_list"] == [f"layers.{n}.mlp_in" for n in range(LAYERS)]
    nodes, links = read_neuronpedia_graph(exported)
    pruned = graph.prune(1.0, 1.0)
    assert len(nodes) == int(pruned.nodes.sum()) and len(links) == int(pruned.edges.sum())
    labelled = [n for n in nodes if n.kind == "feature" and (n.layer, n.feature) == (layer, index)]
    assert labelled and all(n.clerp == "a labelled feature" for n in labelled)


def test_the_page_draws_the_graph_as_a_job(client, labeller, tc_set):
    _user, csrf = labeller
    page = client.get(f"/saes/{tc_set}/circuits")
    assert page.status_code == 200 and "Draw the graph" in page.text and "Target token" not in page.text
    assert '<details class="sae-set-list" open><summary>3 transcoders' in page.text  # a long set starts folded
    hx = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    started = client.post(f"/saes/{tc_set}/circuits/jobs", headers=hx,
                          data={"prompt": PROMPT, "max_feature_nodes": "8", "node_threshold": "0.7"})
    assert started.status_code == 200 and "<progress" in started.text, started.text
    url = finished_job(client, started, hx).headers["HX-Redirect"]
    drawn = client.get(url)
    assert drawn.status_code == 200 and '"node_threshold": 0.7' in drawn.text
    assert url.split("/")[-1] in client.get(f"/saes/{tc_set}/circuits").text


def test_pinned_features_rerun_the_replacement_model(client, labeller, tc_set, session, tiny_model_dir,
                                                      transcoder_dirs):
    _user, csrf = labeller
    graph_id = post(client, csrf, sae_set=tc_set).json()["id"]
    row = crud.find_graph(session, graph_id=graph_id)
    graph = ReplacementGraph.from_stored(row.graph, row.adjacency)
    layer, index, pos = (int(t[0]) for t in (graph.feature_layer, graph.feature_index, graph.feature_pos))
    rm, _graph = direct_graph(tiny_model_dir, transcoder_dirs)
    tokenizer = load_model(str(tiny_model_dir)).tokenizer
    url = f"/saes/{tc_set}/circuits/{graph_id}/pins"
    hx = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    for attention in ("frozen", "live"):
        answer = client.post(url, headers=hx, data={"pins": f"{layer}_{index}_{pos}", "value": "3",
                                                    "attention": attention})
        assert answer.status_code == 200, answer.text
        expected = top_tokens(tokenizer, rm.intervene({(layer, pos, index): 3.0}, attention == "frozen")[-1])
        after = answer.text.split('id="pinned-after">')[1].split("</code>")[0]
        assert after == expected.replace("'", "&#39;").replace('"', "&#34;")
    outside = client.post(url, headers=hx, data={"pins": f"{layer}_100000_{pos}"})
    assert outside.status_code == 422 and "no feature 100000 at layer" in outside.text  # said on the page
    plain = {"X-CSRF-Token": csrf}
    outside = client.post(url, headers=plain, data={"pins": f"{layer}_100000_{pos}"})
    assert outside.status_code == 422 and outside.json()["detail"][0]["loc"] == ["body", "pins"]
    malformed = client.post(url, headers=plain, data={"pins": "1-2-3"})
    assert malformed.status_code == 422 and malformed.json()["detail"][0]["loc"] == ["body", "pins"]


def test_sets_that_cannot_be_replaced_are_refused_by_field(client, labeller, tc_set, session, tiny_model_dir,
                                                            transcoder_dirs):
    _user, csrf = labeller
    wrong = client.post("/api/attribution", json={"sae_set": tc_set, "prompt": PROMPT, "target": "x"},
                        headers={"X-CSRF-Token": csrf})
    assert wrong.status_code == 422 and "replacement-model graph" in wrong.json()["detail"][0]["msg"]
    partial = register(session, [transcoder_dirs[0], transcoder_dirs[2]], tiny_model_dir, "two-layers")
    missing = post(client, csrf, sae_set=partial)
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "sae_set"]
    assert "no transcoder for layer(s) 1" in missing.json()["detail"][0]["msg"]
    assert crud.list_graphs(session, set_id=int(partial)) == []
    unknown = post(client, csrf, sae_set=tc_set, targets=["x", "xyz"])
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "targets"]
    too_wide = post(client, csrf, sae_set=tc_set, max_feature_nodes=5000)
    assert too_wide.status_code == 422 and too_wide.json()["detail"][0]["loc"] == ["body", "max_feature_nodes"]


def test_a_residual_set_gets_no_replacement_graph_and_a_damaged_one_is_a_clear_404(client, labeller, tc_set,
                                                                                    session, tiny_model_dir):
    _user, csrf = labeller
    from tests.core.attribution_setup import tiny_sae
    residual = tiny_sae("layers.1.resid_post", model=tiny_model_dir.name).save(tiny_model_dir.parent / "residual")
    set_id = register(session, [residual], tiny_model_dir, "residual")
    refused = post(client, csrf, sae_set=set_id)
    assert refused.status_code == 422 and "needs a transcoder per layer" in refused.json()["detail"][0]["msg"]
    graph_id = post(client, csrf, sae_set=tc_set).json()["id"]
    row = crud.find_graph(session, graph_id=graph_id)
    row.adjacency = b"not a graph"
    session.commit()
    damaged = client.get(f"/api/graphs/{graph_id}/view")
    assert damaged.status_code == 404 and "stored damaged" in damaged.text


def test_a_transcoder_opens_and_steers_in_the_playground(client, labeller, tc_set, session):
    """The graph page's "open in the steering playground" link, and steering with a transcoder's features."""
    _user, csrf = labeller
    sae_id = crud.set_members(session, sae_set=crud.find_sae_set(session, ref=tc_set))[1].id
    page = client.get(f"/saes/{sae_id}/steer", params={"prompt": PROMPT, "raw": "1", "pin": ["3:clamp:2.5"]})
    assert page.status_code == 200 and 'value="2.5"' in page.text
    body = {"sae_id": sae_id, "prompt": PROMPT, "max_new_tokens": 6, "temperature": 0.0}
    steer = {"X-CSRF-Token": csrf}
    clamped = client.post("/api/steer", json=body | {"interventions": [{"feature": 3, "mode": "clamp", "value": 50.0}]},
                          headers=steer)
    assert clamped.status_code == 200, clamped.text
    capped = client.post("/api/steer", json=body | {"interventions": [{"feature": 3, "mode": "cap", "value": 1.0}]},
                         headers=steer)
    assert capped.status_code == 422 and "cannot steer a transcoder" in capped.text
