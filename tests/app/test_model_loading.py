"""The model loads in the background (at start-up when asked, or when a fragment first needs it) and pages say
so: a fragment asks again while it loads, and a failed load is shown with its reason and logged."""

from __future__ import annotations

import json
import logging

from tests.app.conftest import make_client
from tests.conftest import GATE_S

HX = {"HX-Request": "true"}


def phase(client, sae) -> dict:
    return client.get(f"/api/saes/{sae.id}/model").json()


def test_start_up_preloads_the_model_in_the_background_and_pages_say_it_is_loading(db_url, stored_sae, gate):
    test_url = f"/saes/{stored_sae.id}/features/0/test?text=the+cat"
    with make_client(db_url, preload_models=True) as client:  # start-up returns while the load waits
        status = phase(client, stored_sae)
        assert status["phase"] == "loading" and status["model"] == stored_sae.model_spec
        assert "Loading the model" in client.get(f"/saes/{stored_sae.id}/features/0").text
        assert "Loading the model" in client.get(f"/saes/{stored_sae.id}/steer").text
        waiting = client.get(test_url, headers=HX)
        assert waiting.status_code == 200 and "Loading the model" in waiting.text
        assert f'hx-get="{test_url}"' in waiting.text.replace("&amp;", "&")  # it asks again
        gate.set()
        client.app.state.preload.join(GATE_S)
        assert phase(client, stored_sae)["phase"] == "ready"
        done = client.get(test_url, headers=HX).text
        assert 'class="tokens"' in done and "Loading the model" not in done
        assert "Loading the model" not in client.get(f"/saes/{stored_sae.id}/features/0").text
        note = client.get(f"/saes/{stored_sae.id}/model", headers=HX).text
        assert "hx-get" not in note  # loaded: the page's note stops polling


def test_without_preload_the_first_fragment_starts_the_load_and_answers_at_once(db_url, stored_sae, gate):
    with make_client(db_url) as client:
        assert phase(client, stored_sae)["phase"] == "idle"
        assert "Loading the model" not in client.get(f"/saes/{stored_sae.id}/features/0").text
        waiting = client.get(f"/saes/{stored_sae.id}/search?text=the+cat", headers=HX)
        assert "Loading the model" in waiting.text and "the result follows" in waiting.text
        assert phase(client, stored_sae)["phase"] == "loading"
        gate.set()
        page = client.get(f"/saes/{stored_sae.id}/search?text=the+cat")  # a whole page waits for the load
        assert page.status_code == 200 and "search-token" in page.text
        assert phase(client, stored_sae)["phase"] == "ready"


def test_a_failed_load_is_shown_with_its_reason_and_logged(db_url, session, stored_sae, caplog, tmp_path):
    stored_sae.model_spec = str(tmp_path / "no-model-here")
    session.commit()
    with caplog.at_level(logging.ERROR, logger="app.services.inference"), \
            make_client(db_url, preload_models=True) as client:
        client.app.state.preload.join(GATE_S)
        status = phase(client, stored_sae)
        assert status["phase"] == "failed" and "no-model-here" in status["error"]
        page = client.get(f"/saes/{stored_sae.id}/features/0").text
        assert 'class="model-state error"' in page and "could not be loaded" in page and "no-model-here" in page
        run = client.get(f"/saes/{stored_sae.id}/features/0/test?text=hi", headers=HX)
        assert run.status_code == 503 and "no-model-here" in run.text  # a run tries again and says why
    assert any("could not load the model" in r.getMessage() and "no-model-here" in r.getMessage()
               for r in caplog.records)


def test_a_store_without_saes_preloads_nothing(tmp_path):
    from app.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    upgrade(url)
    with make_client(url, preload_models=True) as client:
        assert client.app.state.preload is None
        assert client.get("/").status_code == 200


def test_a_streamed_steering_run_says_the_model_is_loading_and_a_json_one_does_not(client, labeller, stored_sae):
    body = {"sae_id": stored_sae.id, "prompt": "the cat", "max_new_tokens": 2, "seed": 1,
            "interventions": [{"feature": 0, "mode": "clamp", "value": 3.0}]}
    headers = {"X-CSRF-Token": labeller[1]}
    streamed = client.post("/api/steer", json=body, headers=headers | {"Accept": "text/event-stream"}).text
    first = streamed.split("\n\n")[0].split("\n")
    assert first[0] == "event: loading" and json.loads(first[1].removeprefix("data: ")) == {
        "model": stored_sae.model_spec}
    again = client.post("/api/steer", json=body, headers=headers | {"Accept": "text/event-stream"}).text
    assert again.startswith("event: start")  # loaded now: no loading event
    as_json = client.post("/api/steer", json=body, headers=headers)
    assert as_json.status_code == 200 and len(as_json.json()["rows"]) == 2
