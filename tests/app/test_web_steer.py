"""The steering playground over HTTP: seeded determinism, exact no-ops, ablation, limits, 429, cancellation,
sharing the model with "test it", auth, saved experiments; the tiny saved model and SAE run for real (SQLite
and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from app import crud
from app.security import hash_api_token
from app.services.inference import FairLock
from sae_core.hooks import splice
from sae_core.sites import parse_site
from tests.app.conftest import add_user, csrf_of, log_in, make_client

PROMPT = "the cat sat on the mat"


@pytest.fixture()
def steerer(client, labeller, stored_sae):
    """POST /api/steer as the signed-in labeller: returns a function of the body's fields."""
    _user, csrf = labeller

    def post(headers: dict[str, str] | None = None, **fields):
        body = {"sae_id": stored_sae.id, "prompt": PROMPT, "max_new_tokens": 12, "temperature": 1.0,
                "top_p": 0.95, "seed": 7, "interventions": [{"feature": 0, "mode": "clamp", "value": 30.0}]}
        return client.post("/api/steer", json=body | fields, headers={"X-CSRF-Token": csrf, **(headers or {})})

    return post


def tokens(response) -> list[list[int]]:
    assert response.status_code == 200, response.text
    return [row["token_ids"] for row in response.json()["rows"]]


def prompt_features(client, sae, prompt: str) -> tuple[int, int]:
    """(the feature firing most on the prompt, one silent on every prompt token), from the model run now.

    The tiny tokenizer has no chat template, so the steered prompt is BOS + text, the tokens run() reads.
    """
    acts_TF = client.app.state.models.run(sae, prompt).acts_TF
    silent = (acts_TF == 0).all(0).nonzero()
    assert len(silent), "no feature is silent on this prompt"
    return int(acts_TF.sum(0).argmax()), int(silent[0])


def test_a_seed_gives_the_same_tokens_and_another_seed_other_tokens(steerer):
    first, again, other = tokens(steerer()), tokens(steerer()), tokens(steerer(seed=8))
    assert first == again
    assert first != other
    assert all(1 <= len(row) <= 12 for row in first)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_noop_intervention_is_exactly_the_baseline(steerer, temperature):
    noop = [{"feature": 2, "mode": "scale", "value": 1.0}, {"feature": 5, "mode": "add", "value": 0.0}]
    baseline, steered = tokens(steerer(interventions=noop, temperature=temperature))
    assert steered == baseline


def test_ablating_a_feature_active_in_the_prompt_removes_its_decoder_share_downstream(client, steerer, stored_sae):
    """What the next layer reads is the baseline minus f_a(x) W_dec[a] on the prompt, and only that."""
    prompt = "ok"
    active, silent = prompt_features(client, stored_sae, prompt)
    loaded = client.app.state.models.load(stored_sae)
    greedy = {"prompt": prompt, "temperature": 0.0, "positions": "prompt"}

    def downstream(feature: int) -> tuple[torch.Tensor, list[list[int]]]:
        seen = []
        with splice(loaded.lm.model, parse_site("layers.2.resid_pre"), lambda x: seen.append(x.clone())):
            rows = tokens(steerer(interventions=[{"feature": feature, "mode": "ablate"}], **greedy))
        return seen[0], rows  # the first forward reads the whole prompt, both rows

    x_2TD, (baseline, _ablated) = downstream(active)
    f_T = loaded.sae.encode(x_2TD[0])[:, active]
    assert (f_T > 0).any()
    expected_TD = x_2TD[0] - f_T[:, None] * loaded.sae.W_dec[active]
    torch.testing.assert_close(x_2TD[1], expected_TD, atol=1e-5, rtol=1e-5)
    x_2TD, (base, untouched) = downstream(silent)
    # Rows of one batch may differ in the last bits (BLAS tiles rows unevenly); the tokens may not.
    torch.testing.assert_close(x_2TD[1], x_2TD[0], atol=1e-7, rtol=0)
    assert untouched == base == baseline


def test_the_event_stream_carries_every_token_then_the_whole_rows(steerer, stored_sae):
    response = steerer(headers={"Accept": "text/event-stream"}, strengths=[0.0, 40.0], target="hat",
                       interventions=[{"feature": 0, "mode": "add"}])
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [(block.split("\n")[0].removeprefix("event: "), json.loads(block.split("\n")[1].removeprefix("data: ")))
              for block in response.text.strip().split("\n\n")]
    kinds = [kind for kind, _ in events]
    # This test's app has not loaded the model yet: the stream says so first.
    assert events[0] == ("loading", {"model": stored_sae.model_spec})
    assert kinds[1] == "start" and kinds[-1] == "done" and set(kinds[2:-1]) == {"token"}
    assert [r["label"] for r in events[1][1]["rows"]] == ["baseline", "strength 0", "strength 40"]
    done = events[-1][1]
    for row in done["rows"]:
        assert "".join(d["text"] for k, d in events if k == "token" and d["row"] == row["row"]) == row["text"]
    baseline, zero, strong = done["rows"]
    assert zero["token_ids"] == baseline["token_ids"] and zero["kl"] == pytest.approx(0.0, abs=1e-6)
    assert strong["kl"] > 0 and strong["target_logprob"] != pytest.approx(baseline["target_logprob"])
    assert done["chart"].startswith("<svg") and "log p(target) against strength" in done["chart"]


def test_a_sweep_without_target_charts_the_kl_even_with_repeated_strengths(steerer):
    response = steerer(headers={"Accept": "text/event-stream"}, strengths=[8.0, 2.0, 8.0],
                       interventions=[{"feature": 0, "mode": "add"}])
    done = json.loads(response.text.strip().split("\n\n")[-1].split("\n")[1].removeprefix("data: "))
    assert [r["label"] for r in done["rows"]] == ["baseline", "strength 8", "strength 2", "strength 8"]
    assert done["rows"][1]["token_ids"] == done["rows"][3]["token_ids"]
    assert all(r["target_logprob"] is None for r in done["rows"])
    assert "KL from baseline against strength" in done["chart"]


@pytest.mark.parametrize("fields,status,message", [
    ({"sae_id": 999}, 404, "999"),
    ({"interventions": [{"feature": 24, "mode": "ablate"}]}, 422, "feature 24 is out of range"),
    ({"max_new_tokens": 300}, 422, "max_new_tokens is 300; it must be between 1 and 256"),
    ({"prompt": "  "}, 422, "the prompt is empty"),
    ({"prompt": "x" * 600, "raw": True}, 422, "the prompt is 601 tokens; the limit is 512"),
    ({"interventions": [{"feature": 1, "mode": "ablate"}, {"feature": 1, "mode": "scale", "value": 2}]}, 422,
     "appears twice"),
    ({"interventions": [{"feature": 1, "mode": "ablate"}], "strengths": [1.0]}, 422, "ablate takes none"),
    ({"strengths": [float(s) for s in range(9)]}, 422, "10 runs requested; between 1 and 9 are allowed"),
    ({"interventions": [{"feature": 1, "mode": "boost"}]}, 422, "clamp"),
    ({"interventions": []}, 422, "at least 1"),
    ({"temperature": -1}, 422, "greater than or equal to 0"),
    ({"sae_id": 2**40}, 422, "less than"),
    ({"unknown": 1}, 422, "Extra inputs"),
])
def test_bad_requests_are_json_errors_with_the_reason(steerer, fields, status, message):
    response = steerer(**fields)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert message in json.dumps(response.json())


def test_a_nan_strength_is_a_422_not_a_500(client, labeller, stored_sae):
    _user, csrf = labeller
    body = (f'{{"sae_id": {stored_sae.id}, "prompt": "x", '
            '"interventions": [{"feature": 1, "mode": "add", "value": NaN}]}')
    response = client.post("/api/steer", content=body, headers={"X-CSRF-Token": csrf,
                                                                "Content-Type": "application/json"})
    assert response.status_code == 422


def test_only_labellers_may_steer(client, session, stored_sae):
    body = {"sae_id": stored_sae.id, "prompt": PROMPT, "interventions": [{"feature": 0, "mode": "ablate"}]}
    anonymous = client.post("/api/steer", json=body, headers={"X-CSRF-Token": csrf_of(client)})
    assert anonymous.status_code == 401 and "sign in" in anonymous.json()["detail"]
    page = client.get(f"/saes/{stored_sae.id}/steer")
    assert page.status_code == 200 and 'id="steer-login"' in page.text and 'id="steer-run" disabled' in page.text
    add_user(session, "vic", role="viewer")
    csrf = log_in(client, "vic")
    response = client.post("/api/steer", json=body, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 403 and "labeller" in response.json()["detail"]


def test_cookie_steering_needs_the_csrf_token(client, labeller, stored_sae):
    body = {"sae_id": stored_sae.id, "prompt": PROMPT, "interventions": [{"feature": 0, "mode": "ablate"}]}
    assert client.post("/api/steer", json=body).status_code == 403


def test_closed_reading_hides_the_playground(engine, db_url, stored_sae):
    with make_client(db_url, read_open=False) as client:
        response = client.get(f"/saes/{stored_sae.id}/steer", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login")


def test_a_busy_worker_answers_429_with_retry_after_and_pages_stay_fast(client, steerer, stored_sae):
    worker = client.app.state.steering
    answers = []
    with client.app.state.models.hold(stored_sae):  # the model is in use: the first request's job waits for it
        first = threading.Thread(target=lambda: answers.append(steerer()))
        first.start()
        deadline = time.monotonic() + 10
        while not worker.busy:
            assert time.monotonic() < deadline, "the first request never reached the worker"
            time.sleep(0.01)
        busy = steerer()
        assert busy.status_code == 429 and busy.headers["retry-after"] == "5"
        assert "already running" in busy.json()["detail"]
        start = time.monotonic()
        assert client.get(f"/saes/{stored_sae.id}/features").status_code == 200
        assert client.get(f"/saes/{stored_sae.id}/steer").status_code == 200
        assert time.monotonic() - start < 2
    first.join(20)
    assert answers[0].status_code == 200
    assert tokens(steerer()) == tokens(answers[0])


@pytest.mark.parametrize("accept,tokens_before_leaving", [("text/event-stream", 2), ("application/json", 0)])
def test_a_disconnected_client_cancels_its_generation(client, session, stored_sae, accept, tokens_before_leaving):
    """Drive the ASGI app directly: the client goes away after some token events (a JSON client sees none)."""
    user = add_user(session, "bea")
    crud.add_api_token(session, user_id=user.id, name="t", token_hash=hash_api_token("bea-token"))
    lm = client.app.state.models.load(stored_sae).lm
    forwards = []

    def slow_forward(*_args):  # a model slow enough that the whole run would take seconds
        forwards.append(1)
        time.sleep(0.01)

    body = json.dumps({"sae_id": stored_sae.id, "prompt": PROMPT, "max_new_tokens": 256, "temperature": 0,
                       "interventions": [{"feature": 3, "mode": "clamp", "value": 5}]}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/api/steer", "raw_path": b"/api/steer", "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 1), "server": ("testserver", 80),
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                         (b"accept", accept.encode()), (b"authorization", b"Bearer bea-token")]}

    async def call() -> list[bytes]:
        chunks: list[bytes] = []
        gone = asyncio.Event()
        if not tokens_before_leaving:
            gone.set()
        messages = iter([{"type": "http.request", "body": body, "more_body": False}])

        async def receive():
            message = next(messages, None)
            if message is None:
                await gone.wait()
                return {"type": "http.disconnect"}
            return message

        async def send(message):
            if message["type"] == "http.response.body":
                chunks.append(message["body"])
                if sum(c.count(b"event: token") for c in chunks) >= tokens_before_leaving:
                    gone.set()

        await client.app(scope, receive, send)
        return chunks

    handle = lm.model.register_forward_hook(slow_forward)
    try:
        chunks = asyncio.run(call())
        deadline = time.monotonic() + 5
        while client.app.state.steering.busy:
            assert time.monotonic() < deadline, "the generation went on after the client left"
            time.sleep(0.01)
    finally:
        handle.remove()
    assert b"event: done" not in b"".join(chunks)
    assert len(forwards) < 50  # of the 256 steps a finished run needs (greedy here never draws the EOS)


def test_a_saved_experiment_has_a_permalink_page_and_json(client, steerer, stored_sae, labeller):
    name = '<script>alert("x")</script> & co'
    response = steerer(save=True, name=name, prompt=PROMPT + " <b>bold</b>", strengths=[0.0, 40.0], target="hat")
    url = response.json()["experiment_url"]
    assert url.startswith(f"/saes/{stored_sae.id}/steer/experiments/")
    page = client.get(url)
    assert page.status_code == 200
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; co" in page.text and "<script>alert" not in page.text
    assert "&lt;b&gt;bold&lt;/b&gt;" in page.text and "Run by ada" in page.text and "<svg" in page.text
    saved = client.get("/api" + url).json()
    assert saved["author"] == "ada" and saved["name"] == name and saved["created_at"]
    assert [r["token_ids"] for r in saved["rows"]] == tokens(response)
    assert saved["params"]["strengths"] == [0.0, 40.0] and saved["interventions"][0]["mode"] == "clamp"
    again = steerer(**saved["params"], prompt=saved["prompt"])
    assert tokens(again) == tokens(response)
    form = client.get(f"/saes/{stored_sae.id}/steer?experiment={saved['id']}").text
    assert "the cat sat on the mat &lt;b&gt;bold&lt;/b&gt;</textarea>" in form and 'value="0.0, 40.0"' in form
    assert name not in form and url in client.get(f"/saes/{stored_sae.id}/steer").text


def test_a_saved_sweeps_page_lists_the_strengths_swept_not_the_unused_value(client, steerer, stored_sae):
    url = steerer(save=True, strengths=[0.0, 2.5, 8.0], interventions=[{"feature": 0, "mode": "add", "value": 4.0}])
    page = client.get(url.json()["experiment_url"]).text
    cells = re.findall(r'<td class="num">(.*?)</td>', page)
    assert "strengths swept</th>" in page and cells == ["0, 2.5, 8"], cells


def test_the_saved_list_fragment_shows_a_new_experiment(client, steerer, stored_sae):
    url = steerer(save=True, name="fresh run").json()["experiment_url"]
    fragment = client.get(f"/saes/{stored_sae.id}/steer/experiments", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert f'<a href="{url}">fresh run</a>' in fragment.text


def test_unknown_experiments_are_404(client, stored_sae):
    assert client.get(f"/api/saes/{stored_sae.id}/steer/experiments/99").status_code == 404
    assert client.get(f"/saes/{stored_sae.id}/steer/experiments/99").status_code == 404
    assert client.get(f"/saes/{stored_sae.id}/steer/experiments/{2**40}").status_code == 422


def test_the_feature_page_link_opens_the_playground_with_that_feature(client, stored_sae):
    feature_page = client.get(f"/saes/{stored_sae.id}/features/3").text
    assert f'href="/saes/{stored_sae.id}/steer?feature=3"' in feature_page
    page = client.get(f"/saes/{stored_sae.id}/steer?feature=3")
    assert page.status_code == 200
    assert re.search(r'<div id="interventions">\s*<div class="intervention">\s*<label>feature <input[^>]*value="3"',
                     page.text)


def test_the_feature_picker_finds_features_by_label_and_index(client, session, stored_sae):
    crud.add_label(session, sae_id=stored_sae.id, feature_index=7, text="cats & <dogs>")
    by_label = client.get(f"/saes/{stored_sae.id}/steer/features?q=dogs").text
    assert 'data-feature="7" data-label="cats &amp; &lt;dogs&gt;"' in by_label
    by_index = client.get(f"/saes/{stored_sae.id}/steer/features?q=7").text
    assert by_index.count('data-feature="7"') == 1
    assert "No feature matches" in client.get(f"/saes/{stored_sae.id}/steer/features?q=zzzz").text


def test_the_model_is_loaded_once_for_pages_and_steering(client, steerer, stored_sae, monkeypatch):
    import sae_core.lm
    from app.services import inference

    loads = []

    def counting_load(*args, **kwargs):
        loads.append(args)
        return real_load(*args, **kwargs)

    real_load = sae_core.lm.load_model
    monkeypatch.setattr(inference, "load_model", counting_load)
    monkeypatch.setattr(sae_core.lm, "load_model", counting_load)
    assert tokens(steerer()) == tokens(steerer())
    assert client.get(f"/saes/{stored_sae.id}/features/3/test?text=hello").status_code == 200
    assert tokens(steerer(strengths=[1.0, 2.0]))
    assert len(loads) == 1


STEP_S = 0.01
"""Each forward's added delay below: a 256-token run takes over 2.5 s, one token 10 ms."""


@contextmanager
def long_generation(client, steerer, sae, **fields) -> Iterator[list]:
    """A 256-token steering run going on in the background, past its first tokens; yields [its response]
    (filled once it ends), and waits for it at the end of the block."""
    lm = client.app.state.models.load(sae).lm
    forwards = []

    def slow_forward(*_args):
        forwards.append(1)
        time.sleep(STEP_S)

    answer: list = []
    handle = lm.model.register_forward_hook(slow_forward)
    try:
        body = {"max_new_tokens": 256, "temperature": 0.0} | fields
        runner = threading.Thread(target=lambda: answer.append(steerer(**body)))
        runner.start()
        deadline = time.monotonic() + 10
        while len(forwards) < 5:
            assert time.monotonic() < deadline, "the generation never started"
            time.sleep(0.005)
        yield answer
        runner.join(30)
    finally:
        handle.remove()
    assert answer and answer[0].status_code == 200, answer


def test_test_it_waits_for_one_token_of_a_long_generation_not_its_whole_run(client, steerer, stored_sae):
    worker = client.app.state.steering
    with long_generation(client, steerer, stored_sae) as answer:
        for _ in range(3):
            start = time.monotonic()
            page = client.get(f"/saes/{stored_sae.id}/features/3/test?text=hello")
            waited = time.monotonic() - start
            assert page.status_code == 200
            assert waited < 1.0, f"'test it' waited {waited:.2f} s behind the generation"
            assert worker.busy and not answer, "the generation ended before 'test it' was answered"
    assert all(len(row) == 256 for row in tokens(answer[0]))  # the runs were interleaved, not cut short


def test_steering_hooks_never_reach_a_forward_run_between_its_tokens(client, steerer, stored_sae):
    """A clamp spliced into the generation would change these activations and next-token odds (or fail on the
    batch size) if a "test it" forward ran while the hooks were in."""
    models = client.app.state.models
    text = "the cat sat on the mat"
    alone = models.run(stored_sae, text)
    clamp = [{"feature": f, "mode": "clamp", "value": 50.0} for f in range(8)]
    with long_generation(client, steerer, stored_sae, interventions=clamp) as answer:
        during = [models.run(stored_sae, text) for _ in range(10)]
        assert not answer, "the generation ended before the forwards between its tokens"
    baseline, steered = tokens(answer[0])
    assert baseline != steered  # the clamp does steer the generation's own forwards
    for result in during:
        assert torch.equal(result.acts_TF, alone.acts_TF)
        assert result.next_tokens == alone.next_tokens


def test_the_model_lock_is_granted_in_the_order_asked():
    """A generation that releases the model and asks again at once must queue behind a request already waiting
    (threading.Lock would nearly always hand it straight back)."""
    lock, order = FairLock(), []
    lock.acquire()

    def waiting() -> None:
        with lock:
            order.append("waiting request")

    other = threading.Thread(target=waiting)
    other.start()
    deadline = time.monotonic() + 5
    while not lock.waiting():
        assert time.monotonic() < deadline
        time.sleep(0.001)
    lock.release()
    with lock:
        order.append("generation's next token")
    other.join(5)
    assert order == ["waiting request", "generation's next token"]
