"""Draft explanations in the store and on the pages: the resumable job, review (accept, edit, reject), the list
filters and sort, search of draft text, exports."""

from __future__ import annotations

import json
import re

import pytest

from app import crud
from app.crud import explanations as drafts
from app.explanations import EvidenceReader, Selection, parse_range, plan, run_job
from sae_core.explain import ExplainConfig
from tests.app.conftest import add_user, log_in


class Scripted:
    """A chat-model double: writes "draft of feature N" and judges texts by their length (deterministic scores)."""

    calibrated = False

    def __init__(self, name: str = "scripted"):
        self.name = name
        self.calls: list[int] = []

    def generate(self, conversations, max_tokens):
        self.calls.append(len(conversations))
        return [f"draft {len(self.calls)}" for _ in conversations]

    def judge(self, explanation, texts, marked):
        return [float(len(t)) for t in texts]


def live_indices(session, sae) -> list[int]:
    return [r.feature_index for r in crud.list_features(session, sae_id=sae.id, state="alive", limit=100)[0]]


def test_evidence_has_windows_with_activations_and_negatives_outside_the_features_own_contexts(session, stored_sae):
    index = live_indices(session, stored_sae)[0]
    reader = EvidenceReader(session, stored_sae.id, ExplainConfig(n_random=3, n_hard=3))
    evidence = reader.evidence(index)
    page = crud.feature_page(session, sae_id=stored_sae.id, feature_index=index)
    assert [w.tokens for w in evidence.top] == [list(v.pieces) for v in page.top]
    assert all(any(a > 0 for a in w.acts) for w in evidence.top)
    own = {"".join(v.pieces) for v in page.top} | {"".join(v.pieces) for vs in page.quantiles.values() for v in vs}
    negatives = evidence.random_negatives + evidence.hard_negatives
    assert negatives and not {w.text for w in negatives} & own
    assert all(not any(w.acts) for w in negatives)


def test_the_job_stores_each_feature_once_and_resumes_where_it_stopped(session, stored_sae):
    todo = plan(session, sae=stored_sae, selection=Selection())
    assert todo == live_indices(session, stored_sae)
    model = Scripted()

    class Stop(Exception):
        pass

    def stop_after_two(index):
        if index == todo[1]:
            raise Stop

    with pytest.raises(Stop):
        run_job(session, sae=stored_sae, indices=todo, explainer=model, scorer=model, config=ExplainConfig(),
                on_feature=stop_after_two)
    assert plan(session, sae=stored_sae, selection=Selection()) == todo[2:]
    run_job(session, sae=stored_sae, indices=plan(session, sae=stored_sae, selection=Selection()), explainer=model,
            scorer=model, config=ExplainConfig())
    assert plan(session, sae=stored_sae, selection=Selection()) == []
    assert drafts.explained_indices(session, sae_id=stored_sae.id) == set(todo)
    row = drafts.current_draft(session, sae_id=stored_sae.id, feature_index=todo[0])
    assert row.explainer_model == row.scorer_model == "scripted" and row.prompt_version == "explain-v1"
    assert row.score == row.scores["detection"]["accuracy"] and row.status == "draft"


def test_unlabelled_and_ranges_narrow_the_plan(session, stored_sae):
    live = live_indices(session, stored_sae)
    crud.add_label(session, sae_id=stored_sae.id, feature_index=live[0], text="mine")
    assert live[0] not in plan(session, sae=stored_sae, selection=Selection(unlabelled_only=True))
    assert plan(session, sae=stored_sae, selection=Selection(live[1], live[2])) == [live[1]]


@pytest.mark.parametrize("bad", ["5", "a:b", "9:3", "-1:4", "3:3"])
def test_a_bad_range_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="START:STOP"):
        parse_range(bad)


def test_a_human_label_is_scored_beside_the_draft(session, stored_sae):
    index = live_indices(session, stored_sae)[0]
    label = crud.add_label(session, sae_id=stored_sae.id, feature_index=index, text="a person's label")
    run_job(session, sae=stored_sae, indices=[index], explainer=Scripted(), scorer=Scripted(), config=ExplainConfig())
    row = drafts.current_draft(session, sae_id=stored_sae.id, feature_index=index)
    assert row.scores["label"]["label_id"] == label.id and "detection" in row.scores["label"]
    assert crud.label_history(session, sae_id=stored_sae.id, feature_index=index)[0].text == "a person's label"


def test_a_feature_another_job_stored_meanwhile_is_not_stored_twice(session, stored_sae):
    first, second = live_indices(session, stored_sae)[:2]
    todo = plan(session, sae=stored_sae, selection=Selection())  # planned before the other job stored `first`
    other = draft_for(session, stored_sae, first, text="the other job's draft")
    stored = run_job(session, sae=stored_sae, indices=todo[:2], explainer=Scripted(), scorer=Scripted(),
                     config=ExplainConfig())
    assert todo[:2] == [first, second] and stored == 1
    assert drafts.current_draft(session, sae_id=stored_sae.id, feature_index=first).id == other.id
    assert drafts.current_draft(session, sae_id=stored_sae.id, feature_index=second).text == "draft 2"  # 1 was dropped
    assert draft_for(session, stored_sae, second) is None  # the store itself refuses a second draft


def draft_for(session, sae, index, text="digits", score=0.8):
    return drafts.add_explanation(session, sae_id=sae.id, feature_index=index, text=text, explainer_model="exp",
                                  scorer_model="sco", prompt_version="explain-v1",
                                  scores={"detection": {"accuracy": score, "low": 0.6, "high": 0.9, "n_positive": 10,
                                                        "n_negative": 10}})


def test_accepting_makes_an_auto_label_that_records_the_verifier_and_time(session, stored_sae):
    user = add_user(session, "ada")
    draft = draft_for(session, stored_sae, 0)
    label = drafts.accept_draft(session, draft=draft, reviewer_id=user.id, base_label_id=None)
    assert (label.text, label.source, label.author_id) == ("digits", "auto", user.id)
    assert draft.status == "accepted" and draft.reviewer_id == user.id and draft.reviewed_at is not None
    assert draft.label_id == label.id
    with pytest.raises(crud.Conflict, match="already accepted"):
        drafts.reject_draft(session, draft=draft, reviewer_id=user.id)


def test_a_draft_never_replaces_a_human_label(session, stored_sae):
    user = add_user(session, "ada")
    human = crud.add_label(session, sae_id=stored_sae.id, feature_index=0, text="numbers", author_id=user.id)
    draft = draft_for(session, stored_sae, 0)
    with pytest.raises(crud.Conflict, match="written by a person"):
        drafts.accept_draft(session, draft=draft, reviewer_id=user.id, base_label_id=human.id)
    assert [lab.text for lab in crud.label_history(session, sae_id=stored_sae.id, feature_index=0)] == ["numbers"]
    assert draft.status == "draft"


def test_editing_makes_a_human_label_linked_to_its_draft_and_rejecting_sets_it_aside(session, stored_sae):
    user = add_user(session, "ada")
    draft = draft_for(session, stored_sae, 0)
    label = drafts.edit_draft(session, draft=draft, reviewer_id=user.id, text="digits in dates", base_label_id=None)
    assert (label.source, label.author_id, draft.status, draft.label_id) == ("human", user.id, "edited", label.id)
    assert drafts.drafts_of_labels(session, label_ids=[label.id])[label.id].text == "digits"
    other = draft_for(session, stored_sae, 1)
    drafts.reject_draft(session, draft=other, reviewer_id=user.id)
    assert other.status == "rejected" and drafts.current_draft(session, sae_id=stored_sae.id, feature_index=1) is None
    assert crud.label_history(session, sae_id=stored_sae.id, feature_index=1) == []


def test_review_walks_drafts_lowest_score_first(session, stored_sae):
    for index, value in [(3, 0.9), (1, 0.4), (5, 0.6)]:
        draft_for(session, stored_sae, index, score=value)
    assert drafts.review_order(session, sae_id=stored_sae.id) == [1, 5, 3]
    assert drafts.next_draft(session, sae_id=stored_sae.id) == 1
    assert drafts.next_draft(session, sae_id=stored_sae.id, after=1) == 5
    assert drafts.next_draft(session, sae_id=stored_sae.id, after=3) == 1  # wraps round


def test_the_list_filters_drafts_verified_and_human_labels_sorts_by_score_and_searches_drafts(session, stored_sae):
    user = add_user(session, "ada")
    draft_for(session, stored_sae, 0, "digits", 0.9)
    draft_for(session, stored_sae, 1, "animals", 0.3)
    drafts.accept_draft(session, draft=draft_for(session, stored_sae, 2, "verbs", 0.7), reviewer_id=user.id,
                        base_label_id=None)
    crud.add_label(session, sae_id=stored_sae.id, feature_index=3, text="people", author_id=user.id)

    def indices(**kw):
        return [r.feature_index for r in crud.list_features(session, sae_id=stored_sae.id, **kw)[0]]

    assert indices(state="draft") == [0, 1]
    assert indices(state="verified") == [2]
    assert indices(state="human") == [3]
    assert 0 in indices(state="unlabelled") and 2 not in indices(state="unlabelled")
    assert indices(sort="score")[:3] == [1, 2, 0]
    assert indices(query="animal") == [1]
    rows = crud.list_features(session, sae_id=stored_sae.id, state="draft")[0]
    assert [(r.draft, r.score) for r in rows] == [("digits", 0.9), ("animals", 0.3)]


# Pages


def test_the_feature_page_shows_the_draft_unverified_with_scores_and_model(client, session, stored_sae):
    draft_for(session, stored_sae, 0)
    page = client.get(f"/saes/{stored_sae.id}/features/0").text
    assert "unverified" in page and "digits" in page and "0.80 (0.60–0.90, 10+10)" in page
    assert "Written by exp, scored by sco" in page
    assert "/drafts/" not in page.split("next draft")[0].split("unverified")[1] or "Accept" not in page  # reader: no buttons


def test_a_labeller_accepts_with_htmx_and_the_label_editor_follows(client, labeller, session, stored_sae):
    draft = draft_for(session, stored_sae, 0)
    page = client.get(f"/saes/{stored_sae.id}/features/0").text
    assert "Accept" in page and "Reject" in page
    response = client.post(f"/saes/{stored_sae.id}/features/0/drafts/{draft.id}/accept",
                           data={"csrf_token": labeller[1], "base_label_id": ""}, headers={"HX-Request": "true"})
    assert response.status_code == 200 and "<html" not in response.text
    assert 'hx-swap-oob="true"' in response.text and '<p class="current-label">digits</p>' in response.text
    assert "accepted from the draft" in response.text and "by ada" in response.text
    again = client.post(f"/saes/{stored_sae.id}/features/0/drafts/{draft.id}/accept",
                        data={"csrf_token": labeller[1], "base_label_id": ""}, headers={"HX-Request": "true"})
    assert again.status_code == 409 and "already accepted" in again.text


def test_edit_and_reject_through_plain_forms(client, labeller, session, stored_sae):
    first, second = draft_for(session, stored_sae, 0), draft_for(session, stored_sae, 1)
    edited = client.post(f"/saes/{stored_sae.id}/features/0/drafts/{first.id}/edit",
                         data={"csrf_token": labeller[1], "base_label_id": "", "text": "dates"}, follow_redirects=False)
    assert edited.status_code == 303
    assert crud.label_history(session, sae_id=stored_sae.id, feature_index=0)[0].source == "human"
    assert "edited from the draft" in client.get(f"/saes/{stored_sae.id}/features/0").text
    rejected = client.post(f"/saes/{stored_sae.id}/features/1/drafts/{second.id}/reject",
                           data={"csrf_token": labeller[1]}, follow_redirects=False)
    assert rejected.status_code == 303
    session.expire_all()
    assert session.get(type(second), second.id).status == "rejected"
    third = draft_for(session, stored_sae, 2)
    blank = client.post(f"/saes/{stored_sae.id}/features/2/drafts/{third.id}/edit",
                        data={"csrf_token": labeller[1], "base_label_id": "", "text": " "})
    assert blank.status_code == 422


def test_review_needs_a_labeller_and_the_csrf_token(client, session, stored_sae, db_url):
    from tests.app.conftest import make_client

    draft = draft_for(session, stored_sae, 0)
    url = f"/saes/{stored_sae.id}/features/0/drafts/{draft.id}/accept"
    assert client.post(url, data={"base_label_id": ""}, follow_redirects=False).status_code in (401, 303, 403)
    add_user(session, "vic", role="viewer")
    with make_client(db_url) as viewer:
        token = log_in(viewer, "vic")
        assert "Accept" not in viewer.get(f"/saes/{stored_sae.id}/features/0").text
        assert viewer.post(url, data={"csrf_token": token, "base_label_id": ""}).status_code == 403
    add_user(session, "ada")
    token = log_in(client, "ada")
    assert client.post(url, data={"base_label_id": ""}).status_code == 403  # no CSRF token
    assert client.post(f"/saes/{stored_sae.id}/features/0/drafts/999/accept",
                       data={"csrf_token": token, "base_label_id": ""}).status_code == 404
    session.expire_all()
    assert session.get(type(draft), draft.id).status == "draft"


def test_review_drafts_goes_to_the_lowest_scoring_then_to_the_list(client, session, stored_sae):
    draft_for(session, stored_sae, 4, score=0.2)
    draft_for(session, stored_sae, 2, score=0.5)
    first = client.get(f"/saes/{stored_sae.id}/drafts/review", follow_redirects=False)
    assert first.headers["location"] == f"/saes/{stored_sae.id}/features/4"
    after = client.get(f"/saes/{stored_sae.id}/drafts/review?after=4", follow_redirects=False)
    assert after.headers["location"] == f"/saes/{stored_sae.id}/features/2"
    listing = client.get(f"/saes/{stored_sae.id}/features?state=draft&sort=score").text
    assert re.search(r"draft</span> digits", listing)


def test_label_exports_carry_source_models_and_scores(client, labeller, session, stored_sae):
    user = labeller[0]
    drafts.accept_draft(session, draft=draft_for(session, stored_sae, 0), reviewer_id=user.id, base_label_id=None)
    data = json.loads(client.get(f"/saes/{stored_sae.id}/labels.json").text)
    row = data["labels"][0]
    assert row["source"] == "auto" and row["explainer_model"] == "exp" and row["scorer_model"] == "sco"
    assert row["detection"] == 0.8 and row["prompt_version"] == "explain-v1"
    csv_text = client.get(f"/saes/{stored_sae.id}/labels.csv").text
    assert "explainer_model" in csv_text.splitlines()[0] and ",exp,sco," in csv_text

