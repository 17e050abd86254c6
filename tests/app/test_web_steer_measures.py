"""Steering rows measured over HTTP: effects, perplexity, KL, controls, the sweep's fluency mark, conditional
steering, and 422s that name the field; the tiny saved model and SAE run for real."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from app import crud
from app.services.steering import judge_config
from app.settings import Settings
from tests.app import test_web_steer
from tests.app.conftest import add_user, log_in, make_client
from tests.app.test_web_steer import PROMPT, tokens
from tests.judge_server import judge_server
from tests.spawn import free_port

steerer = test_web_steer.steerer  # the same fixture: POST /api/steer as a signed-in labeller


def done_event(response) -> dict:
    assert response.status_code == 200, response.text
    return json.loads(response.text.strip().split("\n\n")[-1].split("\n")[1].removeprefix("data: "))


def test_every_row_comes_back_measured_with_controls_beside_it(steerer):
    rows = steerer(interventions=[{"feature": 0, "mode": "add", "value": 40.0}], controls=True,
                   target="hat").json()["rows"]
    assert [r["label"] for r in rows] == ["baseline", "steered", "control: random direction", "control: sign flipped"]
    assert [r["control"] for r in rows] == [None, None, "random", "flipped"]
    for row in rows:
        assert row["perplexity"] > 1 and row["target_logprob"] < 0
        assert len(row["kl_tokens"]) == len(row["token_ids"])
        assert row["kl"] == pytest.approx(sum(row["kl_tokens"]) / len(row["kl_tokens"]))
        assert [e["feature"] for e in row["effects"]] == [0]
    assert rows[0]["kl"] == 0 and all(r["kl"] > 0 for r in rows[1:])


def test_a_noop_row_measures_like_the_baseline(steerer):
    baseline, noop = steerer(interventions=[{"feature": 3, "mode": "rescale", "value": 1.0}]).json()["rows"]
    assert noop["token_ids"] == baseline["token_ids"]
    assert noop["perplexity"] == pytest.approx(baseline["perplexity"], rel=1e-5)
    assert noop["kl"] == pytest.approx(0.0, abs=1e-6)
    assert [e["mean"] for e in noop["effects"]] == pytest.approx([e["mean"] for e in baseline["effects"]], abs=1e-6)


def test_a_sweep_marks_its_strongest_strength_within_the_perplexity_limit(steerer):
    done = done_event(steerer(headers={"Accept": "text/event-stream"}, strengths=[0.0, 5.0, 60.0],
                              perplexity_factor=1.5, interventions=[{"feature": 0, "mode": "add"}]))
    rows = done["rows"]
    base = rows[0]["perplexity"]
    fluent = [r["strength"] for r in rows[1:] if r["perplexity"] <= 1.5 * base]
    assert done["strongest_fluent"] == max(fluent, key=abs)
    assert [r["fluent_strongest"] for r in rows] == [r["strength"] == done["strongest_fluent"] for r in rows]
    assert set(done["measures"]) == {"0", "1", "2", "3"} and "perplexity" in done["measures"]["1"]
    assert "perplexity against strength (limit 1.5x baseline" in done["perplexity_chart"]


def test_a_trigger_that_never_fires_is_the_baseline_and_one_that_stops_ends_the_row(steerer):
    never = steerer(interventions=[{"feature": 0, "mode": "clamp", "value": 50.0}],
                    trigger={"feature": 1, "threshold": 1e5})
    baseline, steered = tokens(never)
    assert steered == baseline
    always = steerer(interventions=[{"feature": 0, "mode": "add", "value": 0.0}],
                     trigger={"feature": 1, "threshold": -1.0, "stop": True}, temperature=0.0).json()["rows"]
    assert always[1]["finished"] == "trigger" and len(always[1]["token_ids"]) == 1


@pytest.mark.parametrize("fields,loc", [
    ({"interventions": [{"feature": 1, "mode": "add", "value": 1}, {"feature": 24, "mode": "cap", "value": 1}]},
     ["body", "interventions", 1, "feature"]),
    ({"trigger": {"feature": 99}}, ["body", "trigger", "feature"]),
    ({"trigger": {"feature": -1}}, ["body", "trigger", "feature"]),
    ({"controls": True, "strengths": [1.0]}, ["body", "controls"]),
    ({"perplexity_factor": 1.0}, ["body", "perplexity_factor"]),
])
def test_bad_checks_and_conditions_are_422s_naming_the_field(client, steerer, stored_sae, fields, loc):
    before = client.get(f"/saes/{stored_sae.id}/steer/experiments").text
    response = steerer(save=True, **fields)
    assert response.status_code == 422, response.text
    assert loc in [e["loc"] for e in response.json()["detail"]]
    assert client.get(f"/saes/{stored_sae.id}/steer/experiments").text == before  # nothing half-saved


def test_a_saved_experiment_page_shows_each_rows_measures(client, steerer):
    response = steerer(save=True, controls=True, interventions=[{"feature": 0, "mode": "add", "value": 40.0}])
    page = client.get(response.json()["experiment_url"]).text
    assert page.count('class="measures"') == 4
    assert "KL per token" in page and "control: sign flipped" in page and "baseline mean" in page


def test_a_configured_judge_rates_every_row_against_the_features_labels(db_url, engine, session, stored_sae):

    crud.add_label(session, sae_id=stored_sae.id, feature_index=0, text="cats and hats", author_id=None)
    add_user(session, "ada")
    with judge_server() as (url, received), make_client(db_url, judge_url=url, judge_model="m") as client:
        csrf = log_in(client, "ada")
        body = {"sae_id": stored_sae.id, "prompt": PROMPT, "max_new_tokens": 6, "controls": True,
                "interventions": [{"feature": 0, "mode": "add", "value": 10.0}]}
        out = client.post("/api/steer", json=body, headers={"X-CSRF-Token": csrf}).json()
    assert out["judge_error"] is None
    assert [(r["judge_concept"], r["judge_fluency"]) for r in out["rows"]] == [(2.0, 1.0)] * 4
    assert len(received) == 8 and "cats and hats" in received[0]["messages"][0]["content"]


def test_a_judge_that_is_down_leaves_the_run_whole_and_says_why(db_url, engine, session, stored_sae):

    add_user(session, "ada")
    with make_client(db_url, judge_url=f"http://127.0.0.1:{free_port()}/v1", judge_model="m") as client:
        csrf = log_in(client, "ada")
        body = {"sae_id": stored_sae.id, "prompt": PROMPT, "max_new_tokens": 6,
                "interventions": [{"feature": 0, "mode": "add", "value": 10.0}]}
        response = client.post("/api/steer", json=body, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200 and "did not answer" in response.json()["judge_error"]
    assert all(r["judge_fluency"] is None and r["perplexity"] for r in response.json()["rows"])


def test_the_judges_timeout_is_a_setting_and_must_be_positive():
    settings = Settings(judge_url="http://127.0.0.1:9/v1", judge_model="m", judge_timeout_s=300)
    config = judge_config(settings)
    assert config is not None and config.timeout_s == 300
    with pytest.raises(ValidationError, match="judge_timeout_s"):
        Settings(judge_timeout_s=0)
