"""The Neuronpedia graph export against Neuronpedia's own rules: its JSON Schema and upload checks, its decoding of
feature numbers, and a round trip through the file back to the same nodes and links."""

from __future__ import annotations

import copy
import json
import math

import pytest

from sae_core.attribution import AttributionConfig, AttributionError, AttributionRequest, attribute, neuronpedia_graph
from sae_core.attribution.neuronpedia import cantor_pair, cantor_unpair, neuronpedia_name, read_neuronpedia_graph
from sae_core.sites import parse_site
from tests.core.attribution_setup import tiny_dicts, tiny_lm
from tests.core.neuronpedia_graph_check import upload_errors


@pytest.fixture(scope="module")
def graph():
    lm = tiny_lm()
    return attribute(lm, tiny_dicts(lm), AttributionRequest("hello world", "x"), AttributionConfig(verify_top=3, max_nodes=10))


def exported(graph, **kwargs) -> dict:
    """The export as a file would hold it."""
    return json.loads(json.dumps(neuronpedia_graph(graph, slug="saescope-graph-1", scan="tiny-llama", **kwargs)))


@pytest.mark.parametrize("thresholds", [{}, {"node_threshold": 1.0, "edge_threshold": 1.0},
                                        {"node_threshold": 0.1, "edge_threshold": 0.1}])
def test_the_export_passes_neuronpedias_schema_and_upload_checks(graph, thresholds):
    data = exported(graph, source_set="res-saescope", clerps={n.node_id: "a label" for n in graph.nodes}, **thresholds)
    assert upload_errors(data) == []
    assert data["metadata"]["feature_details"] == {"neuronpedia_source_set": "res-saescope"}
    assert {n["feature_type"] for n in data["nodes"]} >= {"embedding", "logit"}


def test_the_check_refuses_what_neuronpedia_refuses(graph):
    good = exported(graph)
    cases = []
    for change in (lambda d: d["nodes"][0].pop("clerp"), lambda d: d["nodes"][0].update(layer=1.5),
                   lambda d: d["links"][0].update(weight="big"), lambda d: d.pop("qParams"),
                   lambda d: d["metadata"].update(scan="org/model")):
        bad = copy.deepcopy(good)
        change(bad)
        cases.append(upload_errors(bad))
    assert all(cases), cases
    with pytest.raises(AttributionError, match="scan 'org/model' may hold only") as err:
        neuronpedia_graph(graph, slug="g", scan="org/model")
    assert err.value.field == "scan"
    assert upload_errors(neuronpedia_graph(graph, slug=neuronpedia_name("my graph #1.json"),
                                           scan=neuronpedia_name("HuggingFaceTB/SmolLM2-135M"))) == []
    assert neuronpedia_name("HuggingFaceTB/SmolLM2-135M") == "smollm2-135m"


def neuronpedia_decodes(feature: int) -> tuple[int, int]:
    """getLayerFromCantorValue and getIndexFromCantorValue of Neuronpedia's graph utils, in floating point as there."""
    w = math.floor((math.sqrt(8 * feature + 1) - 1) / 2)
    t = (w * w + w) / 2
    return int(w - (feature - t)), int(feature - t)


def test_each_feature_number_decodes_by_neuronpedias_rule_to_its_layer_and_index(graph):
    data = exported(graph, node_threshold=1.0, edge_threshold=1.0)
    assert data["metadata"]["schema_version"] == 1
    features = [n for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert features
    for node in features:
        layer, index, _pos = map(int, node["node_id"].split("_"))
        assert neuronpedia_decodes(node["feature"]) == (layer, index) and node["layer"] == str(layer)
    for layer in (0, 1, 11, 40):
        for index in (0, 1, 7, 8191, 131_071, 1_048_575):
            assert cantor_unpair(cantor_pair(layer, index)) == (layer, index) == neuronpedia_decodes(cantor_pair(layer, index))


@pytest.mark.parametrize("thresholds", [{}, {"node_threshold": 1.0, "edge_threshold": 1.0}])
def test_reading_the_file_back_gives_the_same_nodes_and_links(graph, thresholds):
    nodes, links = graph.pruned(thresholds.get("node_threshold"), thresholds.get("edge_threshold"))
    labels = {n.node_id: f"label of {n.node_id}" for n in nodes if n.kind == "feature"}
    read, read_links = read_neuronpedia_graph(exported(graph, clerps=labels, **thresholds))
    layers = [parse_site(site).layer for site in graph.sites]

    def expected(n):
        layer = {"embedding": None, "metric": max(layers) + 1}[n.kind] if n.kind in ("embedding", "metric") else layers[n.layer]
        return (n.kind, layer, n.pos, n.feature if n.kind == "feature" else None, n.activation, n.share,
                labels.get(n.node_id, ""))

    assert len(read) == len(nodes) and len({r.node_id for r in read}) == len(read)
    got = [(r.kind, r.layer, r.pos, r.feature, r.activation, r.influence, r.clerp) for r in read]
    # The metric node's clerp says what it measures, whatever the labels.
    assert [g if g[0] != "metric" else (*g[:-1], "") for g in got] == [expected(n) for n in nodes]
    ids = {n.node_id: r.node_id for n, r in zip(nodes, read)}
    assert read_links == [(ids[link.source], ids[link.target], link.weight) for link in links]
    assert any(r.kind == "feature" for r in read) and read_links
