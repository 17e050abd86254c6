"""Labelling: append-only history, edit conflicts, escaping, tags, export/import, bookmarks."""

from __future__ import annotations

import csv
import io
import json
import re

from app import crud
from tests.app.conftest import add_user, log_in

XSS = '<script>alert("x")</script>'


def label_url(sae, index=0):
    return f"/saes/{sae.id}/features/{index}/label"


def base_id_of(html: str) -> str:
    return re.search(r'name="base_label_id" value="(\d*)"', html).group(1)


def test_labels_append_to_the_history_with_author_and_time(client, labeller, stored_sae, session):
    user, token = labeller
    url = label_url(stored_sae)
    client.post(url, data={"text": "first", "base_label_id": "", "csrf_token": token})
    base = base_id_of(client.get(f"/saes/{stored_sae.id}/features/0").text)
    client.post(url, data={"text": "second", "base_label_id": base, "csrf_token": token})
    history = crud.label_history(session, sae_id=stored_sae.id, feature_index=0)
    assert [label.text for label in history] == ["second", "first"]
    assert all(label.author_id == user.id and label.created_at is not None for label in history)
    page = client.get(f"/saes/{stored_sae.id}/features/0").text
    assert "History (2)" in page and "by ada" in page


def test_htmx_save_returns_the_editor_fragment(client, labeller, stored_sae):
    response = client.post(label_url(stored_sae), data={"text": "numbers", "base_label_id": "", "csrf_token": labeller[1]},
                           headers={"HX-Request": "true"})
    assert response.status_code == 200 and "<html" not in response.text
    assert "Saved." in response.text and '<p class="current-label">numbers</p>' in response.text


def test_two_editors_from_the_same_base_get_a_visible_conflict(client, session, stored_sae, db_url):
    from tests.app.conftest import make_client

    add_user(session, "ada")
    add_user(session, "bob")
    token_a = log_in(client, "ada")
    with make_client(db_url) as other:
        token_b = log_in(other, "bob")
        base = base_id_of(client.get(f"/saes/{stored_sae.id}/features/0").text)
        assert base_id_of(other.get(f"/saes/{stored_sae.id}/features/0").text) == base
        first = other.post(label_url(stored_sae), data={"text": "bob's idea", "base_label_id": base,
                                                        "csrf_token": token_b}, follow_redirects=False)
        assert first.status_code == 303
    clash = client.post(label_url(stored_sae), data={"text": "ada's idea", "base_label_id": base, "csrf_token": token_a})
    assert clash.status_code == 409
    assert "Conflict" in clash.text and "bob&#39;s idea" in clash.text and "ada&#39;s idea" in clash.text
    assert [label.text for label in crud.label_history(session, sae_id=stored_sae.id, feature_index=0)] == ["bob's idea"]
    retry = client.post(label_url(stored_sae), data={"text": "ada's idea", "base_label_id": base_id_of(clash.text),
                                                     "csrf_token": token_a}, follow_redirects=False)
    assert retry.status_code == 303
    assert [label.text for label in crud.label_history(session, sae_id=stored_sae.id, feature_index=0)] == [
        "ada's idea", "bob's idea"]
    stale = client.post(label_url(stored_sae), data={"text": "late", "base_label_id": base, "csrf_token": token_a},
                        headers={"HX-Request": "true"})
    assert stale.status_code == 409 and "<html" not in stale.text and "ada&#39;s idea" in stale.text


def test_revise_label_lets_exactly_one_of_two_concurrent_edits_win(engine, session, stored_sae):
    """Two threads save from the same base at once: one label lands, the other conflicts."""
    from concurrent.futures import ThreadPoolExecutor

    from app.db import session_factory

    def save(index_and_text):
        index, text = index_and_text
        with session_factory(engine)() as own:
            try:
                crud.revise_label(own, sae_id=stored_sae.id, feature_index=index, text=text, base_id=None)
                return "saved"
            except crud.LabelConflict:
                return "conflict"

    for index in range(5, 10):
        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(save, [(index, "a"), (index, "b")]))
        assert outcomes == ["conflict", "saved"]
        assert len(crud.label_history(session, sae_id=stored_sae.id, feature_index=index)) == 1


def test_script_labels_are_escaped_everywhere(client, labeller, stored_sae):
    client.post(label_url(stored_sae, 3), data={"text": XSS, "base_label_id": "", "csrf_token": labeller[1]})
    pages = [f"/saes/{stored_sae.id}/features/3", f"/saes/{stored_sae.id}/features?state=labelled",
             f"/saes/{stored_sae.id}/features?q=alert"]
    for path in pages:
        html = client.get(path).text
        assert XSS not in html and "&lt;script&gt;" in html
    svg_title = re.search(r"<title>activations of feature 3: (.*?)</title>", client.get(pages[0]).text).group(1)
    assert svg_title.startswith("&lt;script&gt;")
    assert json.loads(client.get(f"/saes/{stored_sae.id}/labels.json").text)["labels"][0]["label"] == XSS
    assert client.get(f"/api/saes/{stored_sae.id}/features/3").json()["label"] == XSS


def test_neighbour_labels_are_shown_and_escaped(client, labeller, stored_sae, session):
    neighbour = crud.feature_page(session, sae_id=stored_sae.id, feature_index=0).feature.neighbours[0][0]
    crud.add_label(session, sae_id=stored_sae.id, feature_index=neighbour, text=XSS)
    html = client.get(f"/saes/{stored_sae.id}/features/0").text
    assert XSS not in html and "&lt;script&gt;alert" in html


def test_tags_are_added_and_removed(client, labeller, stored_sae, session):
    url = f"/saes/{stored_sae.id}/features/2/tags"
    fragment = client.post(url, data={"tag": "polysemantic", "csrf_token": labeller[1]}, headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "polysemantic" in fragment.text and "<html" not in fragment.text
    assert crud.feature_tags(session, sae_id=stored_sae.id, feature_index=2) == ["polysemantic"]
    client.post(url + "/remove", data={"tag": "polysemantic", "csrf_token": labeller[1]})
    assert crud.feature_tags(session, sae_id=stored_sae.id, feature_index=2) == []
    assert client.post(f"/saes/{stored_sae.id}/features/9999/tags",
                       data={"tag": "x", "csrf_token": labeller[1]}).status_code == 404


def test_tags_ignore_case_and_keep_the_first_spelling(client, labeller, stored_sae, session):
    sae, token = stored_sae.id, labeller[1]
    client.post(f"/saes/{sae}/features/2/tags", data={"tag": "Python", "csrf_token": token})
    client.post(f"/saes/{sae}/features/3/tags", data={"tag": "python ", "csrf_token": token})
    client.post(f"/saes/{sae}/features/3/tags", data={"tag": "PYTHON", "csrf_token": token})
    assert crud.list_tags(session) == ["Python"]
    assert crud.feature_tags(session, sae_id=sae, feature_index=3) == ["Python"]
    rows, total = crud.list_features(session, sae_id=sae, tag="pyTHON")
    assert total == 2 and [row.feature_index for row in rows] == [2, 3]
    assert client.get(f"/saes/{sae}/features", params={"tag": "pyTHON"}).text.count(f"/saes/{sae}/features/3") >= 1
    client.post(f"/saes/{sae}/features/3/tags/remove", data={"tag": "python", "csrf_token": token})
    assert crud.feature_tags(session, sae_id=sae, feature_index=3) == []
    assert crud.feature_tags(session, sae_id=sae, feature_index=2) == ["Python"]


def test_export_holds_the_whole_history_and_defuses_formulas(client, labeller, stored_sae, session):
    crud.add_label(session, sae_id=stored_sae.id, feature_index=1, text="old", author_id=labeller[0].id)
    crud.add_label(session, sae_id=stored_sae.id, feature_index=1, text="=HYPERLINK(\"x\")", author_id=labeller[0].id)
    rows = list(csv.DictReader(io.StringIO(client.get(f"/saes/{stored_sae.id}/labels.csv").text)))
    assert [r["label"] for r in rows] == ["old", "'=HYPERLINK(\"x\")"]
    assert rows[0]["author"] == "ada" and rows[0]["feature_index"] == "1"
    data = client.get(f"/saes/{stored_sae.id}/labels.json").json()
    assert [r["label"] for r in data["labels"]] == ["old", "=HYPERLINK(\"x\")"]


def test_export_of_current_labels_holds_one_row_per_labelled_feature(client, labeller, stored_sae, session):
    for index, text in [(1, "old"), (1, "new"), (2, "only"), (1, "newest")]:
        crud.add_label(session, sae_id=stored_sae.id, feature_index=index, text=text, author_id=labeller[0].id)
    current = client.get(f"/saes/{stored_sae.id}/labels.csv", params={"current": "true"})
    assert f'filename="labels-{stored_sae.id}-current.csv"' in current.headers["content-disposition"]
    assert [(r["feature_index"], r["label"], r["author"]) for r in csv.DictReader(io.StringIO(current.text))] == [
        ("1", "newest", "ada"), ("2", "only", "ada")]
    data = client.get(f"/saes/{stored_sae.id}/labels.json", params={"current": "true"}).json()
    assert [r["label"] for r in data["labels"]] == ["newest", "only"]
    assert len(list(csv.DictReader(io.StringIO(client.get(f"/saes/{stored_sae.id}/labels.csv").text)))) == 4
    assert f'href="/saes/{stored_sae.id}/labels.csv?current=true"' in client.get(f"/saes/{stored_sae.id}").text
    assert client.get(f"/saes/{stored_sae.id}/labels.csv", params={"current": "maybe"}).status_code == 422


def test_export_then_import_round_trips(client, labeller, stored_sae, session):
    for index, text in [(1, "one"), (2, "-minus sign"), (3, "three")]:
        crud.add_label(session, sae_id=stored_sae.id, feature_index=index, text=text)
    exported_csv = client.get(f"/saes/{stored_sae.id}/labels.csv").content
    exported_json = client.get(f"/saes/{stored_sae.id}/labels.json").content
    url = f"/saes/{stored_sae.id}/labels/import"
    same = client.post(url, data={"csrf_token": labeller[1]}, files={"file": ("labels.csv", exported_csv)})
    assert same.status_code == 200 and "0 of 3 labels added" in same.text
    changed = exported_json.replace(b'"three"', b'"three, revised"')
    again = client.post(url, data={"csrf_token": labeller[1]}, files={"file": ("labels.json", changed)})
    assert "1 of 3 labels added" in again.text
    current = crud.current_labels(session, sae_id=stored_sae.id)
    assert {i: label.text for i, label in current.items()} == {1: "one", 2: "-minus sign", 3: "three, revised"}
    assert current[3].source == "import" and current[3].author_id == labeller[0].id


def test_bad_import_files_are_422_and_change_nothing(client, labeller, stored_sae, session):
    url = f"/saes/{stored_sae.id}/labels/import"
    for name, content in [("x.json", b"{nope"), ("x.csv", b"feature_index,label\n5,fine\nabc,bad\n"),
                          ("x.csv", b"feature_index,label\n99999,outside\n"), ("x.csv", b"\xff\xfe")]:
        response = client.post(url, data={"csrf_token": labeller[1]}, files={"file": (name, content)})
        assert response.status_code == 422 and "Nothing imported" in response.text
    assert crud.current_labels(session, sae_id=stored_sae.id) == {}


def test_bookmark_lists_with_notes(client, labeller, stored_sae, session):
    token = labeller[1]
    client.post("/bookmarks", data={"name": "curious", "description": "look again", "csrf_token": token})
    lst = crud.bookmark_lists(session, owner_id=labeller[0].id)[0]
    page = client.get(f"/saes/{stored_sae.id}/features/4").text
    assert f'<option value="{lst.id}">curious</option>' in page
    client.post(f"/saes/{stored_sae.id}/features/4/bookmark", data={"list_id": lst.id, "note": XSS, "csrf_token": token})
    listing = client.get("/bookmarks").text
    assert f'href="/saes/{stored_sae.id}/features/4"' in listing and "&lt;script&gt;" in listing and XSS not in listing
    client.post(f"/bookmarks/{lst.id}/remove", data={"sae_id": stored_sae.id, "feature_index": 4, "csrf_token": token})
    assert "No features yet" in client.get("/bookmarks").text
    assert client.post("/bookmarks", data={"name": "curious", "csrf_token": token}).status_code == 409


def test_other_users_lists_are_out_of_reach(client, labeller, stored_sae, session):
    other = add_user(session, "bob")
    theirs = crud.create_bookmark_list(session, owner_id=other.id, name="bob's")
    response = client.post(f"/saes/{stored_sae.id}/features/4/bookmark",
                           data={"list_id": theirs.id, "csrf_token": labeller[1]})
    assert response.status_code == 404
    assert "bob&#39;s" not in client.get("/bookmarks").text


def test_blank_labels_and_tags_are_422_not_500(client, labeller, stored_sae, session):
    token = labeller[1]
    assert client.post(label_url(stored_sae), data={"text": "   ", "csrf_token": token}).status_code == 422
    assert client.post(label_url(stored_sae), data={"text": "", "csrf_token": token}).status_code == 422
    assert client.post(label_url(stored_sae), data={"text": "x" * 2001, "csrf_token": token}).status_code == 422
    assert client.post(label_url(stored_sae), data={"text": "ok", "base_label_id": "abc",
                                                    "csrf_token": token}).status_code == 422
    assert client.post(f"/saes/{stored_sae.id}/features/0/tags", data={"tag": "  ", "csrf_token": token}).status_code == 422
    assert crud.label_history(session, sae_id=stored_sae.id, feature_index=0) == []


STEER = {"prompt": "hello", "interventions": [{"feature": 0, "mode": "add", "value": 1.0}]}
"""A valid steering request but for its SAE id; the text cases below spoil one field of it."""


def refused(response, field: str) -> bool:
    """A 422 that names the field and says what is wrong with it."""
    return (response.status_code == 422 and field in response.text
            and any(why in response.text for why in ("NUL", "surrogate", "unicode")))


def json_with(body: dict, field: str, escape: str) -> bytes:
    """The body as JSON with `field` holding a JSON escape (a lone surrogate cannot be UTF-8 encoded otherwise)."""
    return json.dumps(body | {field: "@"}).replace('"@"', f'"x{escape}y"').encode()


def test_text_the_store_cannot_keep_is_422_naming_the_field(client, labeller, stored_sae, session):
    """NUL (PostgreSQL's text refuses it) in every form field and query parameter, and NUL or a lone surrogate
    (no UTF-8 encoder takes one) in every JSON text field: each a 422 naming the field, and nothing stored."""
    user, token = labeller
    sae = stored_sae.id
    kept = crud.create_bookmark_list(session, owner_id=user.id, name="kept")
    forms = [(label_url(stored_sae), "text", {}), (f"/saes/{sae}/features/0/tags", "tag", {}),
             ("/bookmarks", "name", {}), ("/bookmarks", "description", {"name": "new list"}),
             (f"/saes/{sae}/features/0/bookmark", "note", {"list_id": kept.id})]
    for url, field, rest in forms:
        for accept in ("application/json", "text/html"):
            response = client.post(url, data=rest | {field: "a\x00b", "csrf_token": token}, headers={"Accept": accept})
            assert refused(response, field), (url, field, accept, response.status_code, response.text[:300])
    queries = [(f"/saes/{sae}/features", "q"), (f"/saes/{sae}/features", "tag"), (f"/api/saes/{sae}/features", "q"),
               (f"/api/saes/{sae}/features", "tag"), (f"/saes/{sae}/search", "text"), (f"/api/saes/{sae}/search", "text"),
               (f"/saes/{sae}/features/0/test", "text"), (f"/api/saes/{sae}/features/0/activations", "text"),
               (f"/saes/{sae}/steer/features", "q")]
    for url, field in queries:
        response = client.get(url, params={field: "a\x00b"})
        assert refused(response, field), (url, field, response.status_code, response.text[:300])
    bodies = [(f"/api/saes/{sae}/features/0/labels", "text", {}), ("/api/steer", "prompt", STEER | {"sae_id": sae}),
              ("/api/steer", "name", STEER | {"sae_id": sae, "save": True}),
              ("/api/steer", "target", STEER | {"sae_id": sae, "strengths": [1.0]})]
    for url, field, body in bodies:
        for escape in ("\\ud800", "\\u0000"):
            response = client.post(url, content=json_with(body, field, escape),
                                   headers={"Content-Type": "application/json", "X-CSRF-Token": token})
            assert refused(response, field), (url, field, escape, response.status_code, response.text[:300])
            assert response.json()["detail"][0]["loc"] == ["body", field]
    assert crud.label_history(session, sae_id=sae, feature_index=0) == []
    assert crud.feature_tags(session, sae_id=sae, feature_index=0) == []
    assert [(lst.name, lst.bookmarks) for lst in crud.bookmark_lists(session, owner_id=user.id)] == [("kept", [])]
    assert crud.steering_experiments(session, sae_id=sae, limit=5) == []


def test_label_files_with_text_the_store_cannot_keep_are_422_naming_the_row(client, labeller, stored_sae, session):
    url = f"/saes/{stored_sae.id}/labels/import"
    for name, content in [("x.json", b'[{"feature_index": 1, "label": "ok"}, {"feature_index": 2, "label": "\\ud800"}]'),
                          ("x.json", b'{"labels": [{"feature_index": 1, "label": "a\\u0000b"}]}'),
                          ("x.csv", b"feature_index,label\n1,a\x00b\n")]:
        response = client.post(url, data={"csrf_token": labeller[1]}, files={"file": (name, content)})
        assert response.status_code == 422 and "Nothing imported" in response.text, response.text
        assert "the label must not contain NUL" in response.text or "row 2: the label holds a" in response.text
    assert crud.current_labels(session, sae_id=stored_sae.id) == {}


def test_blank_bookmark_list_names_are_422(client, labeller):
    assert client.post("/bookmarks", data={"name": "   ", "csrf_token": labeller[1]}).status_code == 422


def test_saving_the_current_label_again_adds_no_history_entry(client, labeller, stored_sae, session):
    first = client.post(label_url(stored_sae), data={"text": "same", "csrf_token": labeller[1]})
    assert first.status_code in (200, 303)
    base = crud.label_history(session, sae_id=stored_sae.id, feature_index=0)[0].id
    again = client.post(label_url(stored_sae), data={"text": " same ", "base_label_id": base, "csrf_token": labeller[1]})
    assert again.status_code in (200, 303)
    session.expire_all()
    assert [label.text for label in crud.label_history(session, sae_id=stored_sae.id, feature_index=0)] == ["same"]
    client.post(label_url(stored_sae), data={"text": "changed", "base_label_id": base, "csrf_token": labeller[1]})
    session.expire_all()
    history = crud.label_history(session, sae_id=stored_sae.id, feature_index=0)
    assert [label.text for label in history] == ["changed", "same"]


def test_bookmarking_stays_on_the_feature(client, labeller, stored_sae, session):
    token = labeller[1]
    client.post("/bookmarks", data={"name": "stay", "csrf_token": token})
    lst = crud.bookmark_lists(session, owner_id=labeller[0].id)[0]
    url = f"/saes/{stored_sae.id}/features/4"
    plain = client.post(url + "/bookmark", data={"list_id": lst.id, "csrf_token": token}, follow_redirects=False)
    assert plain.status_code == 303 and plain.headers["location"] == url
    fragment = client.post(f"/saes/{stored_sae.id}/features/5/bookmark", data={"list_id": lst.id, "csrf_token": token},
                           headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "Bookmarked in stay" in fragment.text and "<html" not in fragment.text
