"""Explain jobs from the SAE page (issue 17): an admin starts one, the page polls its progress to the end; others
are refused, a second job for the SAE is refused while one runs, bad input is a 422 naming the field, and a job
started again goes on where the last one stopped. The explainer is the tiny chat model of tests/factories.py, or
a real HTTP endpoint on this machine (tests/judge_server.py)."""

from __future__ import annotations

import html
import threading
from collections import Counter

import pytest
from sqlalchemy import select

from app.explanations import Selection, plan
from app.models import Explanation
from app.services.explain import ExplainerChoice
from tests.app.conftest import add_user, csrf_of, log_in, make_client
from tests.judge_server import judge_server
from tests.spawn import free_port

HX = {"HX-Request": "true"}
WAIT_S = 120
"""A bound on waiting for a job, so a hung one fails the test instead of the run; no assertion is about time."""


@pytest.fixture()
def web(db_url, engine, tiny_chat_model_dir):
    """A client of an app whose local explainer is the tiny chat model."""
    with make_client(db_url, explainer_local_model=str(tiny_chat_model_dir)) as client:
        yield client


def as_user(client, session, role: str) -> str:
    add_user(session, role, role=role)
    return log_in(client, role)


def start(client, sae, csrf: str, **fields):
    data = {"csrf_token": csrf, "features": "", "explainer": "local"} | fields
    return client.post(f"/saes/{sae.id}/explain", data=data, headers=HX)


def finished(client, sae):
    job = client.app.state.explain.job(sae.id)
    assert job.finished.wait(WAIT_S), f"the job is still {job.stage} after {WAIT_S} s"
    return job


class Gate:
    """Holds the local explainer's loading until released, so a test sees a job while it runs."""

    def __init__(self, client):
        self.reached, self.release = threading.Event(), threading.Event()
        choices = client.app.state.explain.choices
        real = choices["local"]

        def opened():
            self.reached.set()
            assert self.release.wait(WAIT_S)
            return real.open()

        choices["local"] = ExplainerChoice(real.title, opened)


def explanations_per_feature(session, sae) -> Counter:
    session.expire_all()
    return Counter(session.scalars(select(Explanation.feature_index).where(Explanation.sae_id == sae.id)))


def test_an_admin_starts_a_job_and_the_section_polls_its_progress_to_done(web, session, stored_sae):
    csrf = as_user(web, session, "admin")
    todo = plan(session, sae=stored_sae, selection=Selection(0, 6))
    gate = Gate(web)
    response = start(web, stored_sae, csrf, features="0:6")
    assert response.status_code == 200 and "<html" not in response.text
    assert 'hx-trigger="load delay:1s"' in response.text and 'id="explain-form"' not in response.text

    assert gate.reached.wait(WAIT_S)
    polled = web.get(f"/saes/{stored_sae.id}/explain", headers=HX).text
    assert f"0 / {len(todo)} features" in polled and "loading the explainer" in polled and "hx-get" in polled

    gate.release.set()
    job = finished(web, stored_sae)
    assert job.stage == "done" and job.error is None
    done = web.get(f"/saes/{stored_sae.id}/explain", headers=HX).text
    assert f"{len(todo)} / {len(todo)} features" in done and "features/min" in done
    assert "hx-get" not in done and 'id="explain-form"' in done  # polling stops; the form is back
    assert f"{len(todo)} features with an unverified draft" in done
    assert set(explanations_per_feature(session, stored_sae)) == set(todo)
    assert "Draft explanations" in web.get(f"/saes/{stored_sae.id}").text


def test_a_second_start_while_one_runs_is_refused_and_a_later_one_goes_on_where_it_stopped(web, session, stored_sae):
    csrf = as_user(web, session, "admin")
    gate = Gate(web)
    assert start(web, stored_sae, csrf, features="0:4").status_code == 200
    assert gate.reached.wait(WAIT_S)
    again = start(web, stored_sae, csrf, features="0:10")
    assert again.status_code == 409 and "already running for this SAE" in again.text
    assert "hx-get" in again.text  # the section keeps polling the job that runs
    gate.release.set()
    assert finished(web, stored_sae).stage == "done"
    first = set(explanations_per_feature(session, stored_sae))

    rest = plan(session, sae=stored_sae, selection=Selection(0, 10))
    assert start(web, stored_sae, csrf, features="0:10", unlabelled="true").status_code == 200
    job = finished(web, stored_sae)
    assert (job.stage, job.total, job.done) == ("done", len(rest), len(rest))
    counts = explanations_per_feature(session, stored_sae)
    assert set(counts) == first | set(rest) and set(counts.values()) == {1}  # nothing explained twice

    nothing = start(web, stored_sae, csrf, features="0:4")
    assert nothing.status_code == 200 and finished(web, stored_sae).total == 0
    assert "nothing to explain" in web.get(f"/saes/{stored_sae.id}/explain", headers=HX).text


@pytest.mark.parametrize("role", ["labeller", "viewer"])
def test_only_admins_see_the_form_and_may_start(web, session, stored_sae, role):
    csrf = as_user(web, session, role)
    assert 'id="explain-form"' not in web.get(f"/saes/{stored_sae.id}").text
    response = start(web, stored_sae, csrf)
    assert response.status_code == 403 and "admin" in response.text
    assert web.app.state.explain.job(stored_sae.id) is None


def test_anonymous_visitors_are_sent_to_log_in_and_a_missing_csrf_token_is_refused(web, session, stored_sae):
    response = web.post(f"/saes/{stored_sae.id}/explain", data={"explainer": "local", "csrf_token": csrf_of(web)},
                        follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    as_user(web, session, "admin")
    assert 'id="explain-form"' in web.get(f"/saes/{stored_sae.id}").text
    assert start(web, stored_sae, "forged").status_code == 403
    assert web.app.state.explain.job(stored_sae.id) is None


@pytest.mark.parametrize(("fields", "message"), [
    ({"features": "9:3"}, "features '9:3' is not START:STOP"),
    ({"features": "abc"}, "features 'abc' is not START:STOP"),
    ({"features": "24:30"}, "starts past the SAE's last feature, 23"),
    ({"explainer": "endpoint"}, "explainer 'endpoint' is not one this server offers ('local')"),
    ({"explainer": "http://10.0.0.1/v1"}, "is not one this server offers"),
])
def test_bad_input_is_a_422_naming_the_field_and_starts_nothing(web, session, stored_sae, fields, message):
    csrf = as_user(web, session, "admin")
    response = start(web, stored_sae, csrf, **fields)
    assert response.status_code == 422 and message in html.unescape(response.text)
    assert 'id="explain-form"' in response.text  # the form comes back as it was filled in
    assert web.app.state.explain.job(stored_sae.id) is None
    plain = web.post(f"/saes/{stored_sae.id}/explain", data={"csrf_token": csrf, "explainer": "local"} | fields)
    assert plain.status_code == 422


def test_the_configured_endpoint_explains_and_the_page_never_shows_its_url(db_url, engine, session, stored_sae):
    with judge_server(concept="Yes", fluency="Yes") as (url, received), \
            make_client(db_url, explainer_local_model="", explainer_url=url, explainer_endpoint_model="served-m") as web:
        csrf = as_user(web, session, "admin")
        page = web.get(f"/saes/{stored_sae.id}").text
        assert "served-m (the configured endpoint)" in page and url not in page
        assert start(web, stored_sae, csrf, features="0:3", explainer="endpoint").status_code == 200
        job = finished(web, stored_sae)
    todo = set(explanations_per_feature(session, stored_sae))
    assert job.stage == "done" and job.done == len(todo) > 0
    assert received and all(r["model"] == "served-m" for r in received)
    rows = session.scalars(select(Explanation).where(Explanation.sae_id == stored_sae.id)).all()
    assert {(r.explainer_model, r.scorer_model, r.text) for r in rows} == {("served-m", "served-m", "Yes")}


def test_an_endpoint_that_is_down_ends_the_job_with_the_reason_shown(db_url, engine, session, stored_sae):
    down = f"http://127.0.0.1:{free_port()}/v1"
    with make_client(db_url, explainer_url=down, explainer_endpoint_model="m") as web:
        csrf = as_user(web, session, "admin")
        start(web, stored_sae, csrf, features="0:3", explainer="endpoint")
        job = finished(web, stored_sae)
        section = web.get(f"/saes/{stored_sae.id}/explain", headers=HX).text
    assert job.stage == "failed" and "unreachable" in job.error
    assert "Stopped by an error" in section and "unreachable" in section and 'id="explain-form"' in section
    assert explanations_per_feature(session, stored_sae) == Counter()
