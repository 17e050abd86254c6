"""The feature map's pages and API: points, clusters, cluster labels, selections, the feature page's co-activation."""

from __future__ import annotations

import pytest

from app import crud
from tests.app.conftest import add_user, csrf_of, log_in


def test_map_api_gives_every_live_feature_with_its_hover_data(client, session, mapped_sae):
    crud.add_label(session, sae_id=mapped_sae.id, feature_index=4, text="fours")
    data = client.get(f"/api/saes/{mapped_sae.id}/map").json()
    run = crud.find_map(session, sae_id=mapped_sae.id)
    assert (data["n_clusters"], data["n_dead"], data["config"]) == (run.n_clusters, run.n_dead, run.config)
    points = {p["feature_index"]: p for p in data["points"]}
    assert len(points) == mapped_sae.d_sae - run.n_dead
    if 4 in points:
        assert points[4]["label"] == "fours"
    stored = {p.feature_index: p for p in crud.map_points(session, sae_id=mapped_sae.id)}
    assert all(points[i]["x"] == pytest.approx(p.x) and points[i]["cluster"] == p.cluster for i, p in stored.items())


def test_cluster_api_and_page_list_members_with_their_labels(client, session, mapped_sae):
    clusters = client.get(f"/api/saes/{mapped_sae.id}/clusters").json()
    assert clusters and [c["cluster"] for c in clusters] == list(range(len(clusters)))
    first = client.get(f"/api/saes/{mapped_sae.id}/clusters/0").json()
    members = [m["feature_index"] for m in first["members"]]
    assert len(members) == first["size"] == clusters[0]["size"]
    page = client.get(f"/saes/{mapped_sae.id}/clusters/0")
    assert page.status_code == 200
    assert all(f'href="/saes/{mapped_sae.id}/features/{i}"' in page.text for i in members)


def test_a_cluster_label_keeps_its_history_and_author(client, session, mapped_sae):
    user = add_user(session, "ada")
    csrf = log_in(client, "ada")
    url = f"/saes/{mapped_sae.id}/clusters/0/label"
    for text in ("digits", "digits and numbers"):
        response = client.post(url, data={"text": text, "csrf_token": csrf}, follow_redirects=False)
        assert response.status_code == 303
    detail = client.get(f"/api/saes/{mapped_sae.id}/clusters/0").json()
    assert detail["label"] == "digits and numbers"
    assert [(lab["text"], lab["author"]) for lab in detail["labels"]] == [("digits and numbers", "ada"), ("digits", "ada")]
    assert client.get(f"/api/saes/{mapped_sae.id}/clusters").json()[0]["label"] == "digits and numbers"
    page = client.get(f"/saes/{mapped_sae.id}/clusters/0").text
    assert "digits and numbers" in page and "ada" in page
    assert client.post(url, data={"text": "   ", "csrf_token": csrf}).status_code == 422
    assert user.name == "ada"


def test_cluster_labels_need_a_labeller_and_the_csrf_token(client, session, mapped_sae):
    url = f"/saes/{mapped_sae.id}/clusters/0/label"
    anonymous = client.post(url, data={"text": "x", "csrf_token": csrf_of(client)}, follow_redirects=False)
    assert anonymous.status_code in (303, 401)
    add_user(session, "vic", role="viewer")
    csrf = log_in(client, "vic")
    assert client.post(url, data={"text": "x", "csrf_token": csrf}).status_code == 403
    assert client.post(url, data={"text": "x"}).status_code == 403  # no CSRF token
    assert crud.cluster_label_texts(session, sae_id=mapped_sae.id) == {}


def test_next_unlabelled_in_a_cluster_skips_labelled_members_and_wraps(client, session, mapped_sae):
    members = [m.feature_index for m in crud.cluster_members(session, sae_id=mapped_sae.id, cluster=0)]
    crud.add_label(session, sae_id=mapped_sae.id, feature_index=members[0], text="x")
    url = f"/saes/{mapped_sae.id}/clusters/0/next-unlabelled"
    first = client.get(url, follow_redirects=False)
    assert first.headers["location"] == f"/saes/{mapped_sae.id}/features/{members[1]}"
    wrapped = client.get(url, params={"after": members[-1]}, follow_redirects=False)
    assert wrapped.headers["location"] == f"/saes/{mapped_sae.id}/features/{members[1]}"
    for i in members[1:]:
        crud.add_label(session, sae_id=mapped_sae.id, feature_index=i, text="y")
    done = client.get(url, follow_redirects=False)
    assert done.headers["location"] == f"/saes/{mapped_sae.id}/clusters/0?done=1"


def test_a_selection_goes_to_a_bookmark_list_or_a_tag(client, session, mapped_sae):
    user = add_user(session, "ada")
    csrf = log_in(client, "ada")
    lst = crud.create_bookmark_list(session, owner_id=user.id, name="odd ones")
    url = f"/saes/{mapped_sae.id}/map/selection"
    headers = {"X-CSRF-Token": csrf}
    response = client.post(url, data={"features": "3,1,3,7", "list_id": lst.id}, headers=headers)
    assert response.json() == {"added": 3, "target": "list 'odd ones'"}
    session.expire_all()
    marked = [(b.sae_id, b.feature_index) for b in crud.find_bookmark_list(session, list_id=lst.id, owner_id=user.id).bookmarks]
    assert sorted(marked) == [(mapped_sae.id, 1), (mapped_sae.id, 3), (mapped_sae.id, 7)]
    assert client.post(url, data={"features": "2,5", "tag": "family"}, headers=headers).json()["added"] == 2
    assert crud.feature_tags(session, sae_id=mapped_sae.id, feature_index=5) == ["family"]


@pytest.mark.parametrize("data, field", [
    ({"features": "1,x", "tag": "t"}, "features"),
    ({"features": "1,999", "tag": "t"}, "features"),
    ({"features": "1"}, "list_id or tag"),
    ({"features": "1", "tag": "t", "list_id": "1"}, "list_id or tag"),
])
def test_a_bad_selection_is_a_422_naming_the_field_and_changes_nothing(client, session, mapped_sae, data, field):
    add_user(session, "ada")
    csrf = log_in(client, "ada")
    response = client.post(f"/saes/{mapped_sae.id}/map/selection", data=data, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 422 and field in response.text
    assert crud.feature_tags(session, sae_id=mapped_sae.id, feature_index=1) == []


def test_another_users_list_is_not_found(client, session, mapped_sae):
    other = add_user(session, "bob")
    theirs = crud.create_bookmark_list(session, owner_id=other.id, name="theirs")
    add_user(session, "ada")
    csrf = log_in(client, "ada")
    response = client.post(f"/saes/{mapped_sae.id}/map/selection", data={"features": "1", "list_id": theirs.id},
                           headers={"X-CSRF-Token": csrf})
    assert response.status_code == 404


def test_map_page_and_missing_map(client, stored_sae):
    page = client.get(f"/saes/{stored_sae.id}/map")
    assert page.status_code == 200 and f"saescope map --sae {stored_sae.id}" in page.text and "map.js" not in page.text
    missing = client.get(f"/api/saes/{stored_sae.id}/map")
    assert missing.status_code == 404 and "has no feature map yet" in missing.json()["detail"]
    assert client.get(f"/api/saes/{stored_sae.id}/clusters/0").status_code == 404


def test_map_page_loads_its_own_script_and_lists_clusters(client, mapped_sae):
    page = client.get(f"/saes/{mapped_sae.id}/map").text
    assert '<script src="/static/map.js" defer></script>' in page and f'href="/saes/{mapped_sae.id}/clusters/0"' in page
    assert client.get("/static/map.js").status_code == 200


def test_feature_page_shows_the_features_that_fire_together_and_the_thumbnail(client, session, mapped_sae, web_sae):
    _loaded, record, _spec = web_sae
    index = int(record.count_F.argmax())
    page = client.get(f"/saes/{mapped_sae.id}/features/{index}").text
    assert f'hx-get="/saes/{mapped_sae.id}/features/{index}/coactive"' in page
    section = client.get(f"/saes/{mapped_sae.id}/features/{index}/coactive").text
    partners = [int(j) for j in record.coactive.index_FK[index] if j >= 0]
    assert partners and "Fires together with" in section
    assert all(f'href="/saes/{mapped_sae.id}/features/{j}"' in section for j in partners)
    assert f'href="/saes/{mapped_sae.id}/map?focus={index}"' in section and "<svg" in section
    assert client.get(f"/saes/{mapped_sae.id}/features/999/coactive").status_code == 404


def test_openapi_documents_the_map_api(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/saes/{sae_id}/map", "/api/saes/{sae_id}/clusters", "/api/saes/{sae_id}/clusters/{cluster}"} <= set(paths)
    assert "/saes/{sae_id}/map/selection" not in paths
