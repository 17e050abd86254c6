import gzip
import json

import pytest

from app import crud, ingest
from app.export import export_sae
from app.neuronpedia import NeuronpediaTarget


@pytest.fixture()
def stored(session, records):
    sae = crud.create_sae(session, name="Tiny SAE", model_name="Tiny Llama", site="layers.1.resid_post",
                          hook_name="blocks.1.hook_resid_post", architecture="relu", d_in=32, d_sae=24)
    ingest.store_record(session, sae_id=sae.id, record=records[0], dataset="demo")
    user = crud.create_user(session, name="ada", password_hash="h")
    crud.add_label(session, sae_id=sae.id, feature_index=5, text="quotes", author_id=user.id)
    return sae


def read_jsonl_gz(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


TARGET = NeuronpediaTarget(model_id="tiny-llama", model_layers=2)


def test_neuronpedia_layout_has_metadata_and_batches_of_features_activations_and_explanations(
        session, stored, records, tmp_path, monkeypatch):
    monkeypatch.setattr("app.neuronpedia.FEATURES_PER_BATCH", 10)
    root = export_sae(session, sae_ref="Tiny SAE", fmt="neuronpedia", out=tmp_path, target=TARGET)
    assert root == tmp_path / "tiny-llama" / "1-tiny-sae"
    assert {p.name for p in root.iterdir()} == {"model.jsonl", "sourceset.jsonl", "source.jsonl", "features",
                                                "activations", "explanations"}
    source = json.loads((root / "source.jsonl").read_text())
    assert (source["id"], source["setName"], source["visibility"]) == ("1-tiny-sae", "tiny-sae", "PUBLIC")
    assert sorted(p.name for p in (root / "features").iterdir()) == [f"batch-{i}.jsonl.gz" for i in range(3)]
    features = [f for i in range(3) for f in read_jsonl_gz(root / "features" / f"batch-{i}.jsonl.gz")]
    assert [f["index"] for f in features] == [str(i) for i in range(24)]
    assert features[0]["modelId"] == "tiny-llama" and features[0]["layer"] == "1-tiny-sae"
    assert features[3]["maxActApprox"] == pytest.approx(records[0].max_F[3].item())
    assert len(features[3]["pos_str"]) == 10 and len(features[3]["topkCosSimIndices"]) == 10
    acts = [a for p in sorted((root / "activations").iterdir()) for a in read_jsonl_gz(p)]
    assert len(acts) == len(records[0].examples.feature_E) == len({a["id"] for a in acts})
    assert all(len(a["tokens"]) == len(a["values"]) for a in acts)
    top = [a for a in acts if a["index"] == "3" and a["binMin"] == -1]
    assert top[0]["maxValue"] == pytest.approx(records[0].max_F[3].item(), rel=1e-3)
    explanations = read_jsonl_gz(root / "explanations" / "batch-0.jsonl.gz")
    assert [(e["index"], e["description"], e["notes"]) for e in explanations] == [
        ("5", "quotes", "saescope label (human by ada)")]


def test_the_same_store_exports_the_same_ids(session, stored, tmp_path):
    first = export_sae(session, sae_ref="Tiny SAE", fmt="neuronpedia", out=tmp_path / "a", target=TARGET)
    second = export_sae(session, sae_ref="Tiny SAE", fmt="neuronpedia", out=tmp_path / "b", target=TARGET)
    ids = [[a["id"] for a in read_jsonl_gz(root / "activations" / "batch-0.jsonl.gz")] for root in (first, second)]
    assert ids[0] == ids[1]


def test_json_export_round_trips_the_feature_pages(session, stored, records, tmp_path):
    export_sae(session, sae_ref=stored.id, fmt="json", out=tmp_path)
    summary = json.loads((tmp_path / "sae.json").read_text())
    assert summary["name"] == "Tiny SAE" and summary["n_tokens"] == records[0].n_tokens
    lines = [json.loads(line) for line in (tmp_path / "features.jsonl").read_text().splitlines()]
    assert len(lines) == 24
    assert [e["value"] for e in lines[7]["top"]] == pytest.approx([e.value for e in records[0].feature(7).top])
    assert lines[5]["labels"][0]["text"] == "quotes"


def test_export_refuses_unknown_format_and_unrecorded_sae(session, tmp_path):
    sae = crud.create_sae(session, name="empty", model_name="m", site="layers.0.resid_post", architecture="relu",
                          d_in=4, d_sae=8)
    with pytest.raises(ValueError, match="unknown export format 'csv'"):
        export_sae(session, sae_ref=sae.id, fmt="csv", out=tmp_path)
    with pytest.raises(ValueError, match="has not been recorded yet"):
        export_sae(session, sae_ref=sae.id, fmt="json", out=tmp_path)


def test_neuronpedia_needs_its_target(session, stored, tmp_path):
    with pytest.raises(ValueError, match="needs --model-id and --model-layers"):
        export_sae(session, sae_ref=stored.id, fmt="neuronpedia", out=tmp_path)


def test_quantile_samples_carry_their_intervals_bounds_an_equal_share_of_the_max(session, stored, tmp_path):
    root = export_sae(session, sae_ref="Tiny SAE", fmt="neuronpedia", out=tmp_path, target=TARGET)
    acts = read_jsonl_gz(root / "activations" / "batch-0.jsonl.gz")
    page = crud.feature_page(session, sae_id=stored.id, feature_index=3)
    n, top = page.n_intervals, page.feature.max_act
    assert n == 3 and page.quantiles
    assert {(a["binMin"], a["binMax"]) for a in acts if a["index"] == "3" and a["binMin"] != -1} == {
        (i / n * top, (i + 1) / n * top) for i in page.quantiles}
