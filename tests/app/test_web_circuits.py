"""Circuits over HTTP: the attribution API (saved, in the OpenAPI, 422 by field, nothing half-saved), the page's
job with progress, the graph's permalink and Neuronpedia export, and the steering playground prefilled with pins;
the tiny saved model and SAEs run for real (SQLite and PostgreSQL)."""

from __future__ import annotations

import time

import pytest

from app import crud
from app.pipeline import read_sae, register_sae
from tests.app.conftest import csrf_of
from tests.core.attribution_setup import SITES, tiny_sae
from tests.core.neuronpedia_graph_check import upload_errors

PROMPT = "hello world"


@pytest.fixture(scope="module")
def set_dirs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("circuit-saes")
    dirs = [tiny_sae(site, model=tiny_model_dir.name, seed=i).save(root / f"sae{i}") for i, site in enumerate(SITES)]
    other = tiny_sae(SITES[1], model="another-model").save(root / "other")
    return dirs, other


@pytest.fixture()
def sae_set(session, set_dirs, tiny_model_dir) -> str:
    """The three SAEs registered in this test's store as the set "tiny"; the set's id."""
    dirs, _other = set_dirs
    rows = [register_sae(session, loaded=read_sae(d), model_spec=str(tiny_model_dir)) for d in dirs]
    for row in rows:
        sae_set = crud.add_to_set(session, sae=row, set_name="tiny")
    return str(sae_set.id)


def finished_job(client, started, hx):
    """Poll a circuits job, as its page does, until it sends the browser to its graph or says it failed."""
    poll = started.text.split('hx-get="')[1].split('"')[0]
    for _ in range(300):
        status = client.get(poll, headers=hx)
        if "HX-Redirect" in status.headers or "failed" in status.text:
            return status
        time.sleep(0.1)
    raise AssertionError("the job did not finish in 30 s")


def post(client, csrf, **fields):
    body = {"prompt": PROMPT, "target": "x", "verify_top": 5, "max_nodes": 8} | fields
    return client.post("/api/attribution", json=body, headers={"X-CSRF-Token": csrf})


def test_the_api_runs_saves_and_serves_a_graph(client, labeller, sae_set, session):
    _user, csrf = labeller
    response = post(client, csrf, sae_set=sae_set)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["url"] == f"/saes/{sae_set}/circuits/{body['id']}"
    assert [n for n in body["graph"]["nodes"] if n["exact"] is not None].__len__() == 5
    assert client.get(f"/api/graphs/{body['id']}").json()["graph"] == body["graph"]
    page = client.get(body["url"])
    assert page.status_code == 200 and 'id="graph-data"' in page.text and "Neuronpedia graph JSON" in page.text
    exported = client.get(f"/api/graphs/{body['id']}/neuronpedia?node_threshold=0.5").json()
    assert exported["metadata"]["node_threshold"] == 0.5 and exported["nodes"] and exported["links"]
    assert "/api/attribution" in client.get("/openapi.json").json()["paths"]
    assert [g.id for g in crud.list_graphs(session, set_id=int(sae_set))] == [body["id"]]
    by_name = post(client, csrf, sae_set="tiny")
    assert by_name.status_code == 200 and by_name.json()["url"].startswith(f"/saes/{sae_set}/circuits/")


def test_the_neuronpedia_export_passes_neuronpedias_checks_with_labels_as_clerps(client, labeller, sae_set, session):
    user, csrf = labeller
    graph_id = post(client, csrf, sae_set=sae_set).json()["id"]
    members = crud.set_members(session, sae_set=crud.find_sae_set(session, ref=sae_set))
    for member in members:
        for index in range(member.d_sae):
            crud.add_label(session, sae_id=member.id, feature_index=index, text=f"{member.site} #{index}", author_id=user.id)
    url = f"/api/graphs/{graph_id}/neuronpedia"
    exported = client.get(url, params={"model_id": "tiny-llama", "source_set": "res-tiny"}).json()
    assert upload_errors(exported) == []
    assert exported["metadata"]["scan"] == "tiny-llama"
    assert exported["metadata"]["feature_details"] == {"neuronpedia_source_set": "res-tiny"}
    features = [n for n in exported["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert features and all(n["clerp"] == f"layers.{n['layer']}.resid_post #{n['node_id'].split('_')[1]}"
                            for n in features)
    default = client.get(url).json()["metadata"]
    assert default["scan"] == members[0].model_name.lower() and "feature_details" not in default
    bad = client.get(url, params={"model_id": "org/model"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "model_id"]


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"target": "xy"}, "target", "is 2 tokens"),
    ({"position": 50}, "position", "past the prompt"),
    ({"prompt": "a" * 300}, "prompt", "the limit is 128"),
    ({"corrupted": "hi"}, "corrupted", "as long as the prompt"),
])
def test_bad_requests_are_a_422_naming_the_field_and_save_nothing(client, labeller, sae_set, session, fields, field,
                                                                   words):
    _user, csrf = labeller
    response = post(client, csrf, sae_set=sae_set, **fields)
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", field] and words in detail["msg"]
    assert crud.list_graphs(session, set_id=int(sae_set)) == []


def test_saes_of_different_models_in_one_set_are_refused(client, labeller, sae_set, session, set_dirs):
    _user, csrf = labeller
    other = register_sae(session, loaded=read_sae(set_dirs[1]), model_spec="another-model")
    with pytest.raises(crud.Conflict, match="a set holds the SAEs of one model"):
        crud.add_to_set(session, sae=other, set_name="tiny")
    other.set_id, other.site = int(sae_set), "layers.1.mlp_out"  # a store edited behind the sets' checks
    session.commit()
    response = post(client, csrf, sae_set=sae_set)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "sae_set"]
    assert "different models" in response.json()["detail"][0]["msg"]
    assert crud.list_graphs(session, set_id=int(sae_set)) == []


def test_running_needs_a_labeller_and_an_unknown_set_is_404(client, sae_set):
    assert post(client, csrf_of(client), sae_set=sae_set).status_code == 401
    assert client.get("/saes/999/circuits").status_code == 404
    assert client.get(f"/saes/{sae_set}/circuits").status_code == 200


def test_the_page_runs_a_job_with_progress_then_opens_the_permalink(client, labeller, sae_set):
    _user, csrf = labeller
    page = client.get(f"/saes/{sae_set}/circuits")
    assert page.status_code == 200 and "Run attribution" in page.text
    hx = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    targets = client.post(f"/saes/{sae_set}/circuits/next-tokens", data={"prompt": PROMPT}, headers=hx)
    assert targets.status_code == 200 and targets.text.count('class="pick-target"') == 10
    started = client.post(f"/saes/{sae_set}/circuits/jobs", headers=hx,
                          data={"prompt": PROMPT, "target": "x", "contrast": "", "verify_top": "3", "max_nodes": "6"})
    assert started.status_code == 200 and "<progress" in started.text
    url = finished_job(client, started, hx).headers["HX-Redirect"]
    assert url.startswith(f"/saes/{sae_set}/circuits/")
    assert client.get(url).status_code == 200
    assert url.split("/")[-1] in client.get(f"/saes/{sae_set}/circuits").text
    assert f'href="/saes/{sae_set}/circuits"' in client.get("/").text


def test_a_failed_job_says_why(client, labeller, sae_set):
    _user, csrf = labeller
    hx = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    started = client.post(f"/saes/{sae_set}/circuits/jobs", headers=hx, data={"prompt": PROMPT, "target": "xyz"})
    status = finished_job(client, started, hx)
    assert "The run failed: the target &#39;xyz&#39; is 3 tokens" in status.text


def test_the_steering_playground_opens_with_pinned_features(client, sae_set, session):
    sae_id = crud.set_members(session, sae_set=crud.find_sae_set(session, ref=sae_set))[1].id
    page = client.get(f"/saes/{sae_id}/steer", params={"prompt": PROMPT, "raw": "1", "pin": ["3:ablate", "5:clamp:2.5"]})
    assert page.status_code == 200
    assert PROMPT in page.text and 'value="3"' in page.text and 'value="2.5"' in page.text
    bad = client.get(f"/saes/{sae_id}/steer", params={"pin": "3:explode"})
    assert bad.status_code == 422 and "cannot read intervention" in bad.text
