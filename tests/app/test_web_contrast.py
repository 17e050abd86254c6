"""Contrasts over HTTP: the API (in OpenAPI), the page with and without htmx, and 422s naming the set."""

from __future__ import annotations

import pytest

from tests.app.conftest import csrf_of

A = ["the cat sat on the mat", "a cat and a hat", "cats purr at night"]
B = ["1 + 2 = 3", "x = y * 42", "for i in range(10): print(i)"]


def post(client, sae_id: int, **fields):
    body = {"sae_id": sae_id, "a": A, "b": B, "top": 5} | fields
    return client.post("/api/contrast", json=body, headers={"X-CSRF-Token": csrf_of(client)})


def test_the_api_ranks_features_by_effect_with_links(client, stored_sae):
    response = post(client, stored_sae.id)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["n_a"] == 3 and out["n_b"] == 3 and out["tokens_a"] == sum(len(t) for t in A)  # one token a byte
    features = out["features"]
    assert len(features) == 5
    assert [abs(f["effect"]) for f in features] == sorted((abs(f["effect"]) for f in features), reverse=True)
    first = features[0]
    assert first["url"] == f"/saes/{stored_sae.id}/features/{first['feature']}"
    assert first["steer_url"] == f"/saes/{stored_sae.id}/steer?feature={first['feature']}"
    assert 0 <= first["fired_a"] <= 1 and (first["mean_a"] > first["mean_b"]) == (first["effect"] > 0)
    assert "/api/contrast" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("fields,loc", [
    ({"a": ["only one"]}, ["body", "a"]),
    ({"b": []}, ["body", "b"]),
    ({"a": ["fine", ""]}, ["body", "a", 1]),
    ({"top": 0}, ["body", "top"]),
])
def test_bad_sets_are_422s_naming_the_field(client, stored_sae, fields, loc):
    response = post(client, stored_sae.id, **fields)
    assert response.status_code == 422, response.text
    assert loc in [e["loc"] for e in response.json()["detail"]]


def test_an_unknown_sae_is_a_404(client, stored_sae):
    assert post(client, 999).status_code == 404


def test_the_page_contrasts_one_text_per_line_with_or_without_htmx(client, stored_sae):
    page = client.get(f"/saes/{stored_sae.id}/contrast")
    assert page.status_code == 200 and 'name="a"' in page.text
    assert f'href="/saes/{stored_sae.id}/contrast"' in client.get(f"/saes/{stored_sae.id}").text
    form = {"a": "\n".join(A) + "\n\n", "b": "\n".join(B), "top": "4", "csrf_token": csrf_of(client)}
    full = client.post(f"/saes/{stored_sae.id}/contrast", data=form)
    assert full.status_code == 200 and full.text.count("steer with this") == 4 and "<h1>" in full.text
    fragment = client.post(f"/saes/{stored_sae.id}/contrast", data=form, headers={"HX-Request": "true"})
    assert fragment.text.count("steer with this") == 4 and "<h1>" not in fragment.text


def test_the_page_says_which_set_is_short(client, stored_sae):
    form = {"a": "just one text", "b": "\n".join(B), "csrf_token": csrf_of(client)}
    response = client.post(f"/saes/{stored_sae.id}/contrast", data=form, headers={"HX-Request": "true"})
    assert response.status_code == 422 and "a: List should have at least 2 items" in response.text
