"""crud.feature_briefs: what a feature number is, wherever a page shows one."""

from app import crud, ingest
from tests.app.test_store import add_sae


def test_a_brief_has_the_current_label_the_top_tokens_and_the_strongest_example(session, records):
    sae = add_sae(session)
    ingest.store_record(session, sae_id=sae.id, record=records[0], dataset="demo")
    alive = [r.feature_index for r in crud.list_features(session, sae_id=sae.id, state="alive", limit=3)[0]]
    crud.add_label(session, sae_id=sae.id, feature_index=alive[0], text="old")
    crud.add_label(session, sae_id=sae.id, feature_index=alive[0], text="new")
    briefs = crud.feature_briefs(session, sae_id=sae.id, indices=[*alive, alive[1], 10_000])
    assert sorted(briefs) == sorted(alive)  # each once; an index the recording lacks is left out
    assert briefs[alive[0]].label == "new" and briefs[alive[1]].label is None
    for index in alive:
        page = crud.feature_page(session, sae_id=sae.id, feature_index=index)
        top = page.top[0]
        before, peak, after = briefs[index].example
        assert (before, peak, after) == ("".join(top.pieces[:top.peak]), top.pieces[top.peak],
                                         "".join(top.pieces[top.peak + 1:]))
        assert briefs[index].top_text == page.feature.top_text
    assert crud.feature_briefs(session, sae_id=sae.id, indices=[]) == {}

