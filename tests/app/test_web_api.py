"""The JSON API: the same data as the pages, 404/422 as JSON, OpenAPI at /docs served offline."""

from __future__ import annotations

import pytest

from app import crud
from app.services.inference import ModelCache


def test_saes_and_one_sae(client, stored_sae, session):
    crud.add_label(session, sae_id=stored_sae.id, feature_index=0, text="x")
    listed = client.get("/api/saes").json()
    assert [s["name"] for s in listed] == ["tiny-sae"] and listed[0]["d_sae"] == 24
    one = client.get(f"/api/saes/{stored_sae.id}").json()
    assert one["labelled_count"] == 1 and one["density_histogram"]["counts"]


def test_feature_list_filters_like_the_page(client, stored_sae, session):
    crud.add_label(session, sae_id=stored_sae.id, feature_index=6, text="brackets")
    data = client.get(f"/api/saes/{stored_sae.id}/features", params={"q": "bracket"}).json()
    assert data["total"] is None  # a text search is not counted (it would read every feature)
    assert [(f["feature_index"], f["label"]) for f in data["features"]] == [(6, "brackets")]
    page = client.get(f"/api/saes/{stored_sae.id}/features", params={"sort": "max_act", "desc": True, "per_page": 5}).json()
    values = [f["max_act"] for f in page["features"]]
    assert values == sorted(values, reverse=True) and page["total"] == 24 and len(values) == 5


def test_feature_has_examples_and_labels(client, stored_sae, session):
    crud.add_label(session, sae_id=stored_sae.id, feature_index=2, text="v1")
    crud.add_label(session, sae_id=stored_sae.id, feature_index=2, text="v2")
    data = client.get(f"/api/saes/{stored_sae.id}/features/2").json()
    stored = crud.feature_page(session, sae_id=stored_sae.id, feature_index=2)
    assert data["label"] == "v2" and [label["text"] for label in data["labels"]] == ["v2", "v1"]
    assert [e["value"] for e in data["top"]] == pytest.approx([e.value for e in stored.top])
    assert [e["pieces"] for e in data["top"]] == [e.pieces for e in stored.top]
    assert [e["acts"] for e in data["top"]] == [e.acts for e in stored.top]
    assert {int(k): len(v) for k, v in data["quantiles"].items()} == {k: len(v) for k, v in stored.quantiles.items()}


def test_activations_and_search_by_text(client, stored_sae):
    text = "a b c"
    expected = ModelCache().run(stored_sae, text)
    acts = client.get(f"/api/saes/{stored_sae.id}/features/4/activations", params={"text": text}).json()
    assert [t["activation"] for t in acts["tokens"]] == pytest.approx(expected.feature(4), abs=1e-5)
    found = client.get(f"/api/saes/{stored_sae.id}/search", params={"text": text, "n": 2}).json()["tokens"]
    assert [t["token"] for t in found] == expected.pieces
    assert [[f["index"] for f in t["features"]] for t in found] == [[i for i, _ in row] for row in expected.top_features(2)]
    assert all(len(t["next_tokens"]) == 5 and 0 < t["next_tokens"][0]["probability"] <= 1 for t in found)


def test_label_api_reports_conflicts(client, stored_sae, session):
    from app.security import hash_api_token
    from tests.app.conftest import add_user

    user = add_user(session, "bot")
    crud.add_api_token(session, user_id=user.id, name="t", token_hash=hash_api_token("tok"))
    headers = {"Authorization": "Bearer tok"}
    url = f"/api/saes/{stored_sae.id}/features/8/labels"
    first = client.post(url, json={"text": "first"}, headers=headers).json()
    stale = client.post(url, json={"text": "stale", "base_label_id": None}, headers=headers)
    assert stale.status_code == 409 and stale.json()["current"]["text"] == "first"
    ok = client.post(url, json={"text": "second", "base_label_id": first["id"]}, headers=headers)
    assert ok.status_code == 201
    assert [label["text"] for label in client.get(f"/api/saes/{stored_sae.id}/labels").json()] == ["first", "second"]
    assert client.post(url, json={"text": "   ", "base_label_id": ok.json()["id"]}, headers=headers).status_code == 422
    assert client.post(f"/api/saes/{stored_sae.id}/features/999/labels", json={"text": "x"},
                       headers=headers).status_code == 404


@pytest.mark.parametrize("path", ["/api/saes/999", "/api/saes/999/features", "/api/saes/{sid}/features/999",
                                  "/api/saes/999/labels", "/api/saes/999/search?text=a",
                                  "/api/saes/{sid}/features/999/activations?text=a"])
def test_wrong_ids_are_404_json(client, stored_sae, path):
    response = client.get(path.format(sid=stored_sae.id))
    assert response.status_code == 404 and "detail" in response.json()


@pytest.mark.parametrize("path", ["/api/saes/x", "/api/saes/{sid}/features?sort=bogus", "/api/saes/{sid}/features?page=-1",
                                  "/api/saes/{sid}/features/0/activations", "/api/saes/{sid}/search",
                                  "/api/saes/{sid}/features/0/activations?text=" + "a" * 2001,
                                  "/api/saes/{sid}/features/4294967296", "/api/saes/0"])
def test_bad_parameters_are_422_json(client, stored_sae, path):
    response = client.get(path.format(sid=stored_sae.id))
    assert response.status_code == 422 and response.json()["detail"]


def test_openapi_documents_the_api_and_docs_work_offline(client):
    schema = client.get("/openapi.json").json()
    assert "/api/saes/{sae_id}/features/{feature_index}" in schema["paths"]
    assert not any(p.startswith("/saes") for p in schema["paths"])  # pages stay out of the API docs
    docs = client.get("/docs").text
    assert "/static/swagger/swagger-ui-bundle.js" in docs and "cdn" not in docs
    assert client.get("/static/swagger/swagger-ui-bundle.js").status_code == 200


def test_tags_and_own_bookmarks(client, stored_sae, session):
    from app.security import hash_api_token
    from tests.app.conftest import add_user

    crud.tag_feature(session, sae_id=stored_sae.id, feature_index=1, tag="interpretable")
    assert client.get("/api/tags").json() == ["interpretable"]
    assert client.get("/api/bookmarks").status_code == 401
    user, other = add_user(session, "ada"), add_user(session, "bob")
    crud.add_api_token(session, user_id=user.id, name="t", token_hash=hash_api_token("ada-token"))
    mine = crud.create_bookmark_list(session, owner_id=user.id, name="mine")
    crud.create_bookmark_list(session, owner_id=other.id, name="theirs")
    crud.add_bookmark(session, list_id=mine.id, sae_id=stored_sae.id, feature_index=3, note="odd")
    lists = client.get("/api/bookmarks", headers={"Authorization": "Bearer ada-token"}).json()
    assert lists == [{"id": mine.id, "name": "mine", "description": "",
                      "bookmarks": [{"sae_id": stored_sae.id, "feature_index": 3, "note": "odd"}]}]
