"""The feature list's search: a substring by default, whole words on request (both databases read the
pattern alike), in the page, its pager links and the API."""

from __future__ import annotations

import pytest

from app import crud

LABELS = {1: "the cat sat", 2: "category theory", 3: "Cat-like shapes", 4: "concatenate", 5: "c++ code",
          6: "cat_names in code", 7: "50% off", 8: "a cat", 9: "cat"}


@pytest.fixture()
def labelled(session, stored_sae):
    for index, text in LABELS.items():
        crud.add_label(session, sae_id=stored_sae.id, feature_index=index, text=text)
    return stored_sae


def found(session, sae, query: str, whole_words: bool) -> set[int]:
    rows, total = crud.list_features(session, sae_id=sae.id, query=query, whole_words=whole_words, limit=100)
    assert total is None  # a text search is not counted: that would scan every row
    return {r.feature_index for r in rows} & set(LABELS)  # top tokens of the random recording may match too


@pytest.mark.parametrize("query,substring,words", [
    ("cat", {1, 2, 3, 4, 6, 8, 9}, {1, 3, 8, 9}),  # "cat_names": the underscore is part of a word
    ("CAT", {1, 2, 3, 4, 6, 8, 9}, {1, 3, 8, 9}),  # either way regardless of case
    ("c++", {5}, {5}),                         # regex characters are literal; a query ending in one needs no boundary after
    ("cat sat", {1}, {1}),
    ("50%", {7}, {7}),
    ("at", {1, 2, 3, 4, 6, 8, 9}, set()),
])
def test_whole_words_match_only_whole_words_and_a_substring_anything(session, labelled, query, substring, words):
    assert found(session, labelled, query, whole_words=False) == substring
    assert found(session, labelled, query, whole_words=True) == words


def test_the_page_and_the_api_take_whole_words_and_the_pager_keeps_it(client, labelled):
    page = client.get(f"/saes/{labelled.id}/features", params={"q": "cat", "whole_words": "true", "per_page": 1,
                                                               "sort": "label"}).text
    assert 'name="whole_words" value="true" checked' in page
    assert "whole_words=true&amp;per_page=1&amp;page=2" in page  # the next page keeps it
    api = client.get(f"/api/saes/{labelled.id}/features", params={"q": "cat", "whole_words": "true", "per_page": 100})
    assert {f["feature_index"] for f in api.json()["features"]} & set(LABELS) == {1, 3, 8, 9}
    bad = client.get(f"/api/saes/{labelled.id}/features", params={"q": "cat", "whole_words": "maybe"})
    assert bad.status_code == 422 and "whole_words" in str(bad.json()["detail"])
