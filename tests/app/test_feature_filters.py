"""The feature list's filters at scale (issue 22): totals counted over the labels, drafts and tags, never over the
features; each filter's page the same whether it reads the filter's rows first (few) or walks the features in
key order testing each (many); and either way read through indexes."""

from __future__ import annotations

import pytest

from app import crud, ingest
from app.crud.features import LEADING_STATES, STATES
from app.models import Explanation
from tests.app.query_plans import plans

LABELS = {1: [("human", "a")], 2: [("auto", "b"), ("human", "c")], 3: [("human", "d"), ("auto", "e")],
          4: [("import", "f")], 5: [("auto", "g"), ("auto", "h")], 6: [("human", "i"), ("human", "j")]}
"""Histories, oldest first: relabelled features count once, under their current label's source."""
DRAFTS = {3: "draft of a labelled feature", 7: "x", 8: "y", 9: "z"}
TAGS = {"syntax": [2, 7, 11], "Rare": [5]}


@pytest.fixture()
def filtered(session, records):
    sae = crud.create_sae(session, name="filters", model_name="tiny-llama", site="layers.1.resid_post",
                          architecture="relu", d_in=32, d_sae=records[0].d_sae)
    ingest.store_record(session, sae_id=sae.id, record=records[0], dataset="demo")
    for index, history in LABELS.items():
        for source, label in history:
            crud.add_label(session, sae_id=sae.id, feature_index=index, text=label, source=source)
    for index, draft in DRAFTS.items():
        session.add(Explanation(sae_id=sae.id, feature_index=index, text=draft, explainer_model="e",
                                scorer_model="s", prompt_version="1", score=index / 10))
    session.commit()
    for tag, indices in TAGS.items():
        for index in indices:
            crud.tag_feature(session, sae_id=sae.id, feature_index=index, tag=tag)
    return sae


def expected(state: str, tag: str | None, d_sae: int, dead: set[int], dense: set[int]) -> list[int]:
    """The filter's features, from the histories above (not from the store)."""
    current = {index: history[-1][0] for index, history in LABELS.items()}
    passes = {"all": lambda i: True, "alive": lambda i: i not in dead, "dead": lambda i: i in dead,
              "dense": lambda i: i in dense, "labelled": lambda i: i in current,
              "unlabelled": lambda i: i not in current, "draft": lambda i: i in DRAFTS,
              "verified": lambda i: current.get(i) == "auto", "human": lambda i: current.get(i) in ("human", "import")}
    tagged = {i for name, indices in TAGS.items() if tag and name.lower() == tag.lower() for i in indices}
    return [i for i in range(d_sae) if passes[state](i) and (not tag or i in tagged)]


@pytest.fixture(params=["lead", "walk"])
def way(request, monkeypatch):
    """Every filter's rows read first (however many), or the features walked (however few match)."""
    cap = 10**9 if request.param == "lead" else 0
    monkeypatch.setattr("app.crud.features.candidate_cap", lambda rows, d_sae: cap)
    return request.param


@pytest.mark.parametrize("tag", [None, "syntax", "RARE"])
def test_every_filter_lists_and_counts_its_features(session, filtered, records, way, tag):
    record = records[0]
    dead = set((record.count_F == 0).nonzero().flatten().tolist())
    dense = {i for i, r in enumerate(crud.list_features(session, sae_id=filtered.id, limit=100)[0]) if r.is_dense}
    for state in STATES:
        rows, total = crud.list_features(session, sae_id=filtered.id, state=state, tag=tag, limit=100)
        want = expected(state, tag, record.d_sae, dead, dense)
        assert [r.feature_index for r in rows] == want, (state, tag, way)
        assert total == (len(want) if not tag or state == "all" else None), (state, tag)


@pytest.mark.parametrize("sort", crud.KEYSET_SORTS)
@pytest.mark.parametrize("state", [*LEADING_STATES, "unlabelled"])
def test_a_filtered_list_pages_by_key_either_way(session, filtered, way, state, sort):
    whole = crud.list_features(session, sae_id=filtered.id, state=state, sort=sort, descending=True, limit=100)[0]
    walked, after = [], None
    while page := crud.list_features(session, sae_id=filtered.id, state=state, sort=sort, descending=True, limit=2,
                                     after=after)[0]:
        walked += page
        after = crud.cursor_of(page[-1], sort)
    assert walked == whole and whole


@pytest.mark.parametrize(("state", "tag"), [*((s, None) for s in (*LEADING_STATES, "unlabelled")), ("all", "syntax")])
def test_a_filtered_page_reads_indexes_and_a_walk_goes_in_key_order(session, filtered, way, state, tag):
    """No statement of a filtered page reads every feature (the counts read labels, drafts and tags; the page
    what the planner finds cheaper of the two), and a page that walks reads the features in its sort's index, with
    no sort of the rows."""
    every = plans(session, lambda: crud.list_features(session, sae_id=filtered.id, state=state, tag=tag,
                                                      sort="density", limit=5))
    assert not any(scan in plan for plan in every for scan in ("SCAN features", "Seq Scan on features")), every
    if way == "walk":
        page = every[-1]
        assert "ix_features_sae_density_index" in page, page
        assert "TEMP B-TREE FOR ORDER BY" not in page and " Sort " not in f" {page} ", page
