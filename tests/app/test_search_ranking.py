"""Search by text over the whole text: the ranking, and dense and start-token features hidden on request."""

from __future__ import annotations

import re

import torch
from sqlalchemy import update

from app.models import Feature
from app.presenters.search import start_token_features, whole_text, without
from app.services.inference import ModelCache, TextActivations

ACTS_TF = torch.tensor([
    # f0: the start token's   f1: one strong token   f2: the start and every token   f3: never   f4: weak, everywhere
    [5.0, 0.0, 2.0, 0.0, 0.0],
    [0.75, 0.0, 1.0, 0.0, 0.5],
    [0.0, 3.0, 1.0, 0.0, 0.625],
    [0.0, 0.0, 1.0, 0.0, 0.5],
])


def text_result() -> TextActivations:
    return TextActivations([0, 10, 11, 12], ["<bos>", "a", "b", "c"], ACTS_TF, [[] for _ in range(4)])


def test_a_start_token_feature_fires_there_at_least_as_much_as_on_the_whole_text():
    assert start_token_features(ACTS_TF).tolist() == [True, False, False, False, False]


def test_the_whole_text_ranking_is_by_peak_over_the_texts_own_tokens():
    ranked = whole_text(text_result(), 10)
    assert [(r["index"], r["peak"], r["piece"], r["tokens"]) for r in ranked] == [
        (1, 3.0, "b", 1), (2, 1.0, "a", 3), (0, 0.75, "a", 1), (4, 0.625, "b", 3)]
    assert [r["index"] for r in whole_text(text_result(), 2)] == [1, 2]
    hidden = without(text_result(), start_token_features(ACTS_TF))
    assert [r["index"] for r in whole_text(hidden, 10)] == [1, 2, 4]
    assert all(0 not in [i for i, _ in row] for row in hidden.top_features(5))


def ranked_indices(html: str) -> list[int]:
    table = re.search(r'<table class="grid ranked">(.*?)</table>', html, re.S).group(1)
    return [int(i) for i in re.findall(r'<a href="/saes/\d+/features/(\d+)">', table)]


def test_the_page_hides_dense_and_start_token_features_when_asked(client, stored_sae, session):
    text = "hello world"
    url = f"/saes/{stored_sae.id}/search"
    shown = ranked_indices(client.get(url, params={"text": text}).text)
    assert shown
    session.execute(update(Feature).where(Feature.sae_id == stored_sae.id)
                    .values(is_dense=Feature.feature_index == shown[0]))  # the tiny SAE's are all dense
    session.commit()
    page = client.get(url, params={"text": text, "hide_dense": "true"}).text
    assert shown[0] not in ranked_indices(page) and ranked_indices(page)[:len(shown) - 1] == shown[1:]
    assert 'name="hide_dense" value="true" checked' in page
    starts = set(torch.nonzero(start_token_features(ModelCache().run(stored_sae, text).acts_TF)).flatten().tolist())
    no_start = client.get(url, params={"text": text, "hide_start": "true"}).text
    assert not starts & set(ranked_indices(no_start))
    tokens = re.findall(r'<li><span class="muted">[^<]*</span> <span class="fref"><a href="/saes/\d+/features/(\d+)">',
                        no_start)
    assert not starts & {int(i) for i in tokens}
