"""Reading pages: SAE overview, feature list, feature page, "test it", text search, errors."""

from __future__ import annotations

import re
from html import unescape
from typing import ClassVar

import pytest
from sqlalchemy import delete, event, select, update

from app import crud
from app.crud import explanations
from app.models import Example, Feature, TokenText
from app.packing import unpack_acts
from app.services.inference import ModelCache
from app.templating import num
from tests.app.conftest import add_user, make_client

HTML = {"accept": "text/html"}


def test_overview_shows_metrics_charts_and_progress(client, stored_sae, session):
    crud.add_label(session, sae_id=stored_sae.id, feature_index=2, text="commas")
    page = client.get(f"/saes/{stored_sae.id}")
    assert page.status_code == 200
    assert f'id="labelled">1 / {stored_sae.d_sae}<' in page.text
    density = crud.find_sae(session, ref=stored_sae.id).density_histogram
    assert page.text.count('class="bar"') == sum(1 for c in density["counts"] if c)
    assert "feature densities of tiny-sae" in page.text


def rows_of(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<td class="num"><a href="/saes/\d+/features/(\d+)">', html)]


def test_feature_list_pages_sorts_and_filters(client, stored_sae, session):
    sid = stored_sae.id
    assert rows_of(client.get(f"/saes/{sid}/features?per_page=10&page=2").text) == list(range(10, 20))
    by_density = rows_of(client.get(f"/saes/{sid}/features?sort=density&desc=true&per_page=100").text)
    expected, _ = crud.list_features(session, sae_id=sid, sort="density", descending=True, limit=100)
    assert by_density == [r.feature_index for r in expected]
    crud.add_label(session, sae_id=sid, feature_index=7, text="quotation marks")
    assert rows_of(client.get(f"/saes/{sid}/features?state=labelled").text) == [7]
    assert rows_of(client.get(f"/saes/{sid}/features?q=QUOTATION").text) == [7]
    assert 7 not in rows_of(client.get(f"/saes/{sid}/features?state=unlabelled&per_page=100").text)
    crud.tag_feature(session, sae_id=sid, feature_index=4, tag="polysemantic")
    assert rows_of(client.get(f"/saes/{sid}/features?tag=polysemantic").text) == [4]


def test_feature_list_searches_top_tokens(client, stored_sae, session):
    rows, _ = crud.list_features(session, sae_id=stored_sae.id, state="alive", limit=1)
    word = next(w for w in rows[0].top_text.split() if w.isalnum())
    found = rows_of(client.get(f"/saes/{stored_sae.id}/features", params={"q": word, "per_page": 100}).text)
    assert rows[0].feature_index in found


def test_feature_list_for_htmx_is_a_fragment(client, stored_sae):
    fragment = client.get(f"/saes/{stored_sae.id}/features", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text and "<table" in fragment.text
    assert "HX-Request" in fragment.headers["vary"]
    assert "HX-Request" in client.get(f"/saes/{stored_sae.id}/features").headers["vary"]


def test_a_history_restore_gets_the_whole_page(client, stored_sae):
    restore = client.get(f"/saes/{stored_sae.id}/features",
                         headers={"HX-Request": "true", "HX-History-Restore-Request": "true"})
    assert "<html" in restore.text and 'class="filters"' in restore.text


def test_a_list_page_past_the_end_says_so_in_page_and_fragment(client, stored_sae):
    url = f"/saes/{stored_sae.id}/features?per_page=10&page=999"
    for response in (client.get(url), client.get(url, headers={"HX-Request": "true"})):
        assert "past the end" in response.text and "Go to the last page" in response.text
        assert "No feature matches" not in response.text and "page 999 of" not in response.text


def alive_feature(session, sae_id: int) -> int:
    rows, _ = crud.list_features(session, sae_id=sae_id, state="alive", sort="max_act", descending=True, limit=1)
    return rows[0].feature_index


def test_feature_page_shows_what_was_recorded(client, stored_sae, session):
    index = alive_feature(session, stored_sae.id)
    stored = crud.feature_page(session, sae_id=stored_sae.id, feature_index=index)
    html = client.get(f"/saes/{stored_sae.id}/features/{index}").text
    top = stored.top[0]
    marked = re.findall(r'<span class="tok max"[^>]*title="([^"]+)"', html)
    assert len(marked) == len(stored.top) + sum(len(v) for v in stored.quantiles.values())
    assert float(marked[0]) == pytest.approx(top.acts[top.peak], rel=1e-2)
    assert html.count("<summary>Interval") == len(stored.quantiles)
    assert 'class="bar"' in html  # activation histogram
    shown = [unescape(t) for t in re.findall(r'<code class="tokpiece">(.*?)</code>', html)]
    assert shown == [text for _token_id, text, _logit in stored.feature.promoted + stored.feature.suppressed]
    for neighbour, _cos in stored.feature.neighbours:
        assert f'href="/saes/{stored_sae.id}/features/{neighbour}"' in html
    assert f'href="/saes/{stored_sae.id}/steer?feature={index}"' in html
    assert "approximate search" not in html  # a small dictionary's neighbours are exact
    stored_sae.record_config = {**stored_sae.record_config, "neighbours": "approximate"}
    session.commit()
    assert "found by an approximate search" in client.get(f"/saes/{stored_sae.id}/features/{index}").text


def test_a_feature_that_never_fired_says_so_without_an_empty_read_out(client, stored_sae, session):
    """The store as a recording leaves a dead feature: no examples, zero fires."""
    index = alive_feature(session, stored_sae.id)
    feature = crud.feature_page(session, sae_id=stored_sae.id, feature_index=index).feature
    session.execute(delete(Example).where(Example.feature_id == feature.id))
    session.execute(update(Feature).where(Feature.id == feature.id).values(is_dead=True, fire_count=0, density=0.0))
    session.commit()
    html = client.get(f"/saes/{stored_sae.id}/features/{index}").text
    assert "This feature never fired in the recording." in html
    assert 'id="tok-info"' not in html and "Shade shows" not in html
    alive = client.get(f"/saes/{stored_sae.id}/features/{alive_feature(session, stored_sae.id)}").text
    assert 'id="tok-info"' in alive and "Shade shows" in alive and "never fired" not in alive


def windows_of(html: str) -> list[list[str]]:
    """The token texts of each heatmap window on a page as the browser holds them: unescaped, without the
    marks that draw whitespace (heatmaps.token_html)."""
    return [[unescape(re.sub(r"<[^>]+>", "", t)) for t in re.findall(r'<span class="tok[^>]*>(.*?)</span>', w, re.S)]
            for w in re.findall(r'<div class="tokens">(.*?)</div>', html, re.S)]


def test_feature_page_windows_show_the_stored_pieces_with_or_without_the_token_table(client, stored_sae, session,
                                                                                     db_url):
    index = alive_feature(session, stored_sae.id)
    stored = crud.feature_page(session, sae_id=stored_sae.id, feature_index=index)
    expected = [e.pieces for e in stored.top]
    html = client.get(f"/saes/{stored_sae.id}/features/{index}").text
    assert windows_of(html)[:len(expected)] == expected
    # A token missing from the SAE's token texts (a fresh app, so nothing is cached): the same windows,
    # read from the stored pieces.
    session.execute(delete(TokenText).where(TokenText.sae_id == stored_sae.id,
                                            TokenText.token_id == stored.top[0].token_ids[0]))
    session.commit()
    with make_client(db_url) as fresh:
        assert windows_of(fresh.get(f"/saes/{stored_sae.id}/features/{index}").text) == windows_of(html)


def test_token_texts_beyond_ascii_reach_the_page_as_references_and_it_stays_ascii(stored_sae, session, db_url):
    index = alive_feature(session, stored_sae.id)
    session.execute(update(TokenText).where(TokenText.sae_id == stored_sae.id).values(text="é" + TokenText.text))
    session.commit()
    stored = crud.feature_page(session, sae_id=stored_sae.id, feature_index=index)
    with make_client(db_url) as fresh:  # nothing cached from before the update
        page = fresh.get(f"/saes/{stored_sae.id}/features/{index}")
    assert page.content.isascii()
    texts = crud.token_texts(session, sae_id=stored_sae.id)
    assert windows_of(page.text)[:len(stored.top)] == [[texts[t] for t in e.token_ids] for e in stored.top]


def test_a_window_whose_stored_bytes_disagree_shows_the_tokens_both_hold(client, stored_sae, session):
    index = alive_feature(session, stored_sae.id)
    stored = crud.feature_page(session, sae_id=stored_sae.id, feature_index=index)
    expected = [e.pieces for e in stored.top]
    example = session.scalars(select(Example).where(Example.feature_id == stored.feature.id,
                                                    Example.interval.is_(None)).order_by(Example.rank)).first()
    example.acts = example.acts[:-4]  # two activations short of its window's tokens
    session.commit()
    response = client.get(f"/saes/{stored_sae.id}/features/{index}")
    assert response.status_code == 200
    windows = windows_of(response.text)
    assert windows[0] == expected[0][:-2] and windows[1:len(expected)] == expected[1:]


def test_a_feature_page_reads_in_three_statements_outside_a_transaction(client, stored_sae, session):
    """Every statement is a round trip on PostgreSQL: BEGIN and ROLLBACK would add two to each page. Three: the
    feature with its SAE, its examples, and what its nearest features are (crud.briefs). One more each for its
    label history and its unverified draft explanation (issue 17), only while it has them: the first statement
    says whether it does."""
    client.get(f"/saes/{stored_sae.id}/features/0")  # loads the SAE's token texts, once per process
    seen = []

    def record(conn, _cursor, statement, *_):
        dbapi = conn.connection.dbapi_connection
        open_ = dbapi.in_transaction if conn.dialect.name == "sqlite" else dbapi.info.transaction_status != 0
        seen.append((statement.split()[0], open_))

    def statements() -> int:
        seen.clear()
        engine = client.app.state.engine
        event.listen(engine, "before_cursor_execute", record)
        try:
            assert client.get(f"/saes/{stored_sae.id}/features/1").status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", record)
        assert {open_ for _, open_ in seen} == {False} and {verb for verb, _ in seen} == {"SELECT"}
        return len(seen)

    assert statements() == 3
    user = add_user(session, "ada")
    crud.add_label(session, sae_id=stored_sae.id, feature_index=1, text="digits", author_id=user.id)
    assert statements() == 4
    draft = explanations.add_explanation(session, sae_id=stored_sae.id, feature_index=1, text="digits",
                                         explainer_model="exp", scorer_model="sco", prompt_version="v1", scores={})
    assert statements() == 5
    explanations.reject_draft(session, draft=draft, reviewer_id=user.id)
    session.commit()
    assert statements() == 4


def test_feature_page_heat_is_relative_to_the_feature_max(client, stored_sae, session):
    index = alive_feature(session, stored_sae.id)
    html = client.get(f"/saes/{stored_sae.id}/features/{index}").text
    alphas = [float(a) for a in re.findall(r'<span class="tok[^"]*" style="--act:([\d.]+)"', html)]
    top = re.search(r'<span class="tok max" style="--act:([\d.]+)"', html).group(1)
    assert float(top) == 1.0 and all(0 < a <= 1 for a in alphas) and len(set(alphas)) > 3


def test_prev_next_and_keyboard_links(client, stored_sae):
    sid = stored_sae.id
    first = client.get(f"/saes/{sid}/features/0").text
    assert 'rel="prev"' not in first and f'href="/saes/{sid}/features/1" data-key="ArrowRight j"' in first
    last = client.get(f"/saes/{sid}/features/{stored_sae.d_sae - 1}").text
    assert 'rel="next"' not in last and 'data-key="ArrowLeft k"' in last


def test_next_unlabelled_skips_labelled_and_dead_features(client, stored_sae, session):
    sid = stored_sae.id
    alive = [r.feature_index for r in crud.list_features(session, sae_id=sid, state="alive", limit=100)[0]]
    crud.add_label(session, sae_id=sid, feature_index=alive[0], text="first")
    go = client.get(f"/saes/{sid}/next-unlabelled", follow_redirects=False)
    assert go.status_code == 303 and go.headers["location"] == f"/saes/{sid}/features/{alive[1]}"
    wrap = client.get(f"/saes/{sid}/next-unlabelled?after={alive[-1]}", follow_redirects=False)
    assert wrap.headers["location"] == f"/saes/{sid}/features/{alive[1]}"
    for index in alive[1:]:
        crud.add_label(session, sae_id=sid, feature_index=index, text="done")
    done = client.get(f"/saes/{sid}/next-unlabelled", follow_redirects=False)
    assert done.headers["location"] == f"/saes/{sid}/features?state=unlabelled"


def test_test_it_box_runs_the_real_model(client, stored_sae, session, web_sae):
    index = alive_feature(session, stored_sae.id)
    text = "the cat sat on the mat"
    fragment = client.get(f"/saes/{stored_sae.id}/features/{index}/test", params={"text": text})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    shown = [float(a) for a in re.findall(r'<span class="tok[^"]*"[^>]* title="([^"]+)"', fragment.text)]
    expected = ModelCache().run(stored_sae, text).feature(index)
    assert len(shown) == len(expected) == len(text) + 1  # one token per byte after the BOS
    assert shown == pytest.approx(expected, rel=1e-2, abs=1e-3)


def test_test_it_says_a_feature_that_does_not_fire_does_not_and_boxes_nothing(client, stored_sae, web_sae):
    text = "hello"  # short enough that some of the 24 random features stay at zero on every token
    acts_TF = ModelCache().run(stored_sae, text).acts_TF
    silent = int((acts_TF.amax(dim=0) <= 0).nonzero()[0])
    loud = int(acts_TF.amax(dim=0).argmax())
    quiet = client.get(f"/saes/{stored_sae.id}/features/{silent}/test", params={"text": text}).text
    assert "does not fire on this text" in quiet and "strongest" not in quiet and "tok max" not in quiet
    firing = client.get(f"/saes/{stored_sae.id}/features/{loud}/test", params={"text": text}).text
    assert "strongest" in firing and firing.count("tok max") == 1 and "does not fire" not in firing


def test_model_and_sae_are_loaded_once_per_process(client, stored_sae, monkeypatch):
    import app.services.inference as inference

    calls = []
    real = inference.load_model
    monkeypatch.setattr(inference, "load_model", lambda *a, **k: calls.append(a) or real(*a, **k))
    for text in ("one", "two", "three"):
        assert client.get(f"/saes/{stored_sae.id}/features/0/test", params={"text": text}).status_code == 200
    assert len(calls) == 1


def test_search_shows_firing_features_and_next_tokens(client, stored_sae):
    text = "hello world"
    page = client.get(f"/saes/{stored_sae.id}/search", params={"text": text, "n": 3})
    assert page.status_code == 200
    result = ModelCache().run(stored_sae, text)
    tops = result.top_features(3)
    assert page.text.count('class="search-token"') == len(result.pieces)
    shown = re.findall(r'<li><span class="muted">[^<]*</span> <span class="fref"><a href="/saes/\d+/features/(\d+)">',
                       page.text)
    assert [int(i) for i in shown] == [i for row in tops for i, _ in row]
    assert "next: " in page.text and "%" in page.text
    fragment = client.get(f"/saes/{stored_sae.id}/search", params={"text": text}, headers={"HX-Request": "true"})
    assert "<html" not in fragment.text and 'class="search-token"' in fragment.text


def test_an_sae_whose_files_are_gone_gives_503_not_500(client, stored_sae, session):
    stored_sae.source_path = "/no/such/sae"
    session.commit()
    client.app.state.models.load_models([stored_sae.model_spec])  # loaded: the fragment runs it (see test_model_loading)
    response = client.get(f"/api/saes/{stored_sae.id}/search", params={"text": "hi"})
    assert response.status_code == 503 and "cannot run SAE" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/saes/999", "/saes/999/features", "/saes/{sid}/features/100000",
                                  "/saes/999/features/0/test?text=a", "/saes/999/search"])
def test_wrong_ids_are_404_pages(client, stored_sae, path):
    response = client.get(path.format(sid=stored_sae.id), headers=HTML)
    assert response.status_code == 404 and "<h1>404</h1>" in response.text


@pytest.mark.parametrize("path", ["/saes/1/features?sort=nope", "/saes/1/features?page=0", "/saes/1/features?state=x",
                                  "/saes/abc", "/saes/1/features/-1", "/saes/1/features/99999999999999999999",
                                  "/saes/1/features?per_page=100000", "/saes/1/search?n=0"])
def test_bad_parameters_are_422(client, stored_sae, path):
    response = client.get(path, headers=HTML)
    assert response.status_code == 422, response.text


def test_example_activations_survive_the_store(session, stored_sae):
    """The page reads float16 activations; each window's chosen token holds its recorded value."""
    index = alive_feature(session, stored_sae.id)
    page = crud.feature_page(session, sae_id=stored_sae.id, feature_index=index)
    assert page.examples
    for example in page.examples:
        assert unpack_acts(example.acts)[example.peak] == pytest.approx(example.value, rel=1e-2)


def test_htmx_errors_come_back_as_a_fragment(client, stored_sae, session):
    stored_sae.source_path = "/no/such/sae"
    session.commit()
    client.app.state.models.load_models([stored_sae.model_spec])  # loaded: the fragment runs it (see test_model_loading)
    response = client.get(f"/saes/{stored_sae.id}/features/0/test", params={"text": "hi"}, headers={"HX-Request": "true"})
    assert response.status_code == 503 and response.text.startswith('<p class="error"') and "cannot run SAE" in response.text
    too_long = client.get(f"/saes/{stored_sae.id}/features/0/test", params={"text": "a" * 2001},
                          headers={"HX-Request": "true"})
    assert too_long.status_code == 422 and "at most 2000 characters" in too_long.text


def test_token_text_cannot_break_out_of_an_attribute(client):
    """Next-token guesses sit in a title attribute; a quote in a token must stay inside it."""
    from html.parser import HTMLParser

    class Spans(HTMLParser):
        attrs: ClassVar[list[dict]] = []

        def handle_starttag(self, tag, attrs):
            if tag == "span":
                self.attrs.append(dict(attrs))

    evil = '" onmouseover="alert(1)'
    rows = [{"piece": evil, "token_id": 1, "next": [(evil, 0.5)], "features": []}]
    html = client.app.state.templates.get_template("_search_tokens.html").render(rows=rows, sae=None, text="x")
    parser = Spans()
    parser.feed(html)
    assert parser.attrs == [{"class": "piece tok", "title": 'next: "\\" onmouseover=\\"alert(1)" 50%'}]


def test_overview_draws_the_training_loss_curve(client, stored_sae, session):
    stored_sae.training_log = [{"step": s, "tokens": 4096 * s, "loss": 10 / s} for s in range(1, 21)]
    session.commit()
    html = client.get(f"/saes/{stored_sae.id}").text
    points = re.search(r'<polyline class="line" points="([^"]+)"', html).group(1).split()
    assert len(points) == 20
    ys = [float(p.split(",")[1]) for p in points]
    assert ys == sorted(ys)  # loss falls, so the line goes down the page (SVG y grows downwards)


def test_feature_page_heads_each_interval_with_the_bounds_the_exports_give(client, stored_sae, session):
    index = alive_feature(session, stored_sae.id)
    stored = crud.feature_page(session, sae_id=stored_sae.id, feature_index=index)
    html = client.get(f"/saes/{stored_sae.id}/features/{index}").text
    assert stored.quantiles
    for interval in stored.quantiles:
        low, high = stored.interval_bounds(interval)
        assert f"Interval {interval + 1} of {stored.n_intervals}: {num(low)} &ndash; {num(high)}</summary>" in html


def test_each_example_shows_its_own_activation_before_its_window(client, stored_sae, session):
    index = alive_feature(session, stored_sae.id)
    stored = crud.feature_page(session, sae_id=stored_sae.id, feature_index=index)
    html = client.get(f"/saes/{stored_sae.id}/features/{index}").text
    examples = stored.top + [e for i in sorted(stored.quantiles, reverse=True) for e in stored.quantiles[i]]
    assert re.findall(r'<span class="exval">([^<]*)</span><div class="tokens">', html) == [f"{e.value:.3g}" for e in examples]
