"""The feature page's example windows: repeats of an example left out, whitespace tokens drawn visibly with
the page's text still the tokens' own."""

from __future__ import annotations

import re
from collections import namedtuple
from html import unescape

import numpy as np
from sqlalchemy import select

from app import crud
from app.models import Example, Feature
from app.packing import pack_acts, pack_ids
from app.presenters.feature_page import distinct_examples
from app.presenters.heatmaps import heatmap, token_text

Row = namedtuple("Row", "token_ids pieces acts peak value interval context_index start")


def row(ids: list[int], peak: int, interval: int | None = None) -> Row:
    return Row(pack_ids(np.array(ids)), None, pack_acts(np.ones(len(ids))), peak, 1.0, interval, 0, 0)


def test_a_window_repeating_the_tokens_or_the_boxed_context_of_an_earlier_one_is_left_out():
    base = list(range(100, 120))
    same_tokens = row(base, 3)                            # the same window, another token boxed
    same_context = row([7, 8, *base[2:16], 9, 9, 9, 9], 10)  # other ends, the same 5 tokens either side of the box
    shifted_box = row([7, 8, *base[2:16], 9, 9, 9, 9], 9)  # those tokens, another one boxed: another context
    elsewhere = row(base, 10, interval=2)  # the same window in a quantile interval: its own section
    first = row(base, 10)
    kept = distinct_examples([first, same_tokens, same_context, shifted_box, elsewhere, row(list(range(300, 320)), 4)])
    assert [r.peak for r in kept] == [10, 9, 10, 4] and kept[0] is first and kept[2] is elsewhere


def test_the_page_leaves_out_a_repeated_window_and_says_how_many(client, stored_sae, session):
    feature = session.scalar(select(Feature).where(Feature.sae_id == stored_sae.id, Feature.fire_count > 0)
                             .order_by(Feature.max_act.desc()))
    top = session.scalars(select(Example).where(Example.feature_id == feature.id, Example.interval.is_(None))
                          .order_by(Example.rank)).all()
    assert len(top) >= 3
    url = f"/saes/{stored_sae.id}/features/{feature.feature_index}"
    before = client.get(url).text
    top[2].context_id, top[2].peak, top[2].acts = top[0].context_id, top[0].peak, top[0].acts  # a repeat of the first
    session.commit()
    after = client.get(url).text
    assert after.count('class="example"') == before.count('class="example"') - 1
    assert "1 window repeating an example shown here" in after and "repeating an example" not in before
    assert len(crud.feature_page(session, sae_id=stored_sae.id, feature_index=feature.feature_index).top) == len(top)


def text_of(html: str) -> list[str]:
    """Each token's text as a browser holds it (tags gone, references read): what a copy or a script gets."""
    return [unescape(re.sub(r"<[^>]+>", "", t)) for t in re.findall(r'<span class="tok[^>]*>(.*?)</span>', html, re.S)]


def test_whitespace_tokens_are_marked_for_drawing_and_keep_their_own_text():
    pieces = [" ", " the", "\n\n", ".\n", "\t", "  ", "<"]
    html = str(heatmap(pieces, [1.0] * len(pieces), 1.0, peak=0))
    assert text_of(html) == pieces
    cells = re.findall(r'<span class="tok[^>]*>(.*?)</span>', html, re.S)
    assert cells[0] == '<i class="ws sp"> </i>' and cells[5] == '<i class="ws sp"> </i>' * 2  # blank: dotted
    assert cells[1] == " the"  # a space before a word stays plain
    assert cells[2] == '<i class="ws nl">\n</i>' * 2 and cells[3] == '.<i class="ws nl">\n</i>'
    assert cells[4] == '<i class="ws tab">\t</i>' and cells[6] == "&lt;"
    assert str(token_text("\n")) == '<i class="ws nl">\n</i>'  # logits and search pieces alike
