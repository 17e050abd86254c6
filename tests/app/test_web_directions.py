"""Raw steering directions over HTTP: saved from two prompt sets, listed, steered with like a feature; 409 and
422 for a taken name, a short set, an unknown id or a mode a direction cannot take."""

from __future__ import annotations

import pytest

from sae_core.contrast import contrast
from tests.app import test_web_steer
from tests.app.conftest import csrf_of
from tests.app.test_web_steer import tokens

steerer = test_web_steer.steerer  # the same fixture: POST /api/steer as a signed-in labeller

A = ["the cat sat on the mat", "a cat and a hat", "cats purr at night"]
B = ["1 + 2 = 3", "x = y * 42", "for i in range(10): print(i)"]


@pytest.fixture()
def save(client, labeller, stored_sae):
    _user, csrf = labeller

    def post(**fields):
        body = {"name": "cats minus code", "a": A, "b": B} | fields
        return client.post(f"/api/saes/{stored_sae.id}/directions", json=body, headers={"X-CSRF-Token": csrf})

    return post


def test_a_saved_direction_is_the_mean_difference_and_is_listed(client, save, stored_sae):
    response = save()
    assert response.status_code == 201, response.text
    saved = response.json()
    loaded = client.app.state.models.load(stored_sae)
    expected = contrast(loaded.lm, loaded.sae, A, B).direction_D()
    assert saved["norm"] == pytest.approx(float(expected.norm()), rel=1e-5) and saved["d_in"] == expected.shape[0]
    assert saved["steer_url"] == f"/saes/{stored_sae.id}/steer?direction={saved['id']}"
    listed = client.get(f"/api/saes/{stored_sae.id}/directions").json()
    assert [d["name"] for d in listed] == ["cats minus code"]
    page = client.get(saved["steer_url"]).text
    assert f'data-direction="{saved["id"]}"' in page and "cats minus code" in page


def test_steering_along_a_direction_moves_the_text_and_zero_changes_nothing(save, steerer):
    direction = save().json()["id"]
    baseline, same = tokens(steerer(interventions=[{"direction": direction, "mode": "add", "value": 0.0}]))
    assert same == baseline
    rows = steerer(interventions=[{"direction": direction, "mode": "add", "value": 60.0}], controls=True).json()["rows"]
    assert rows[1]["token_ids"] != rows[0]["token_ids"] and rows[1]["kl"] > 0
    assert len(rows) == 4 and rows[1]["effects"] == []  # a raw direction has no SAE reading


@pytest.mark.parametrize("fields,status,loc", [
    ({"a": ["one text"]}, 422, ["body", "a"]),
    ({"name": ""}, 422, ["body", "name"]),
])
def test_bad_directions_are_refused_and_nothing_is_saved(client, save, stored_sae, fields, status, loc):
    response = save(**fields)
    assert response.status_code == status and loc in [e["loc"] for e in response.json()["detail"]]
    assert client.get(f"/api/saes/{stored_sae.id}/directions").json() == []


def test_a_taken_name_is_a_409(save):
    assert save().status_code == 201
    again = save()
    assert again.status_code == 409 and "already has a direction named" in again.json()["detail"]


@pytest.mark.parametrize("intervention,loc", [
    ({"direction": 999, "mode": "add", "value": 1.0}, ["body", "interventions", 0, "direction"]),
    ({"direction": 1, "mode": "clamp", "value": 1.0}, ["body", "interventions", 0]),
    ({"direction": 1, "feature": 2, "mode": "add", "value": 1.0}, ["body", "interventions", 0]),
])
def test_steering_with_a_bad_direction_is_a_422_naming_it(save, steerer, intervention, loc):
    saved = save().json()["id"]
    if intervention["direction"] == 1:  # stands for the direction just saved
        intervention = intervention | {"direction": saved}
    response = steerer(interventions=[intervention])
    assert response.status_code == 422, response.text
    assert loc in [e["loc"] for e in response.json()["detail"]]


def test_readers_may_not_save_directions(client, stored_sae):
    body = {"name": "x", "a": A, "b": B}
    response = client.post(f"/api/saes/{stored_sae.id}/directions", json=body, headers={"X-CSRF-Token": csrf_of(client)})
    assert response.status_code == 401


def test_the_contrast_page_saves_a_direction_from_its_sets(client, labeller, stored_sae):
    _user, csrf = labeller
    form = {"a": "\n".join(A), "b": "\n".join(B), "csrf_token": csrf}
    results = client.post(f"/saes/{stored_sae.id}/contrast", data=form, headers={"HX-Request": "true"}).text
    assert 'action="/saes/' in results and "Save direction" in results
    saved = client.post(f"/saes/{stored_sae.id}/directions", data=form | {"name": "from the page"},
                        headers={"HX-Request": "true"})
    assert saved.status_code == 200 and "from the page" in saved.text and "steer with it" in saved.text
    taken = client.post(f"/saes/{stored_sae.id}/directions", data=form | {"name": "from the page"},
                        headers={"HX-Request": "true"})
    assert taken.status_code == 409 and "already has a direction" in taken.text
