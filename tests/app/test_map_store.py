"""The feature map in the store: `saescope map`, what it stores, and the input it refuses leaving nothing half stored."""

from functools import partial
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from app import crud
from app.cli import app
from app.mapping import map_into_store
from app.models import MapPoint
from sae_core.maps import MapConfig
from tests.conftest import invoke_cli

invoke = partial(invoke_cli, app)


def test_map_stores_a_point_per_feature_clusters_and_summaries(session, stored_sae):
    fmap = map_into_store(session, sae_row=stored_sae, cfg=MapConfig(n_epochs=50))
    run = crud.find_map(session, sae_id=stored_sae.id)
    assert (run.n_clusters, run.n_noise, run.n_dead) == (fmap.n_clusters, fmap.n_noise, fmap.n_dead)
    assert run.config["n_epochs"] == 50 and run.seconds > 0
    dead = crud.dead_mask(session, sae_id=stored_sae.id)
    points = crud.map_points(session, sae_id=stored_sae.id)
    assert [p.feature_index for p in points] == np.flatnonzero(~dead).tolist()
    for p in points:
        assert p.x == pytest.approx(float(fmap.x_F[p.feature_index]))
        assert p.cluster == (None if fmap.cluster_F[p.feature_index] < 0 else int(fmap.cluster_F[p.feature_index]))
    clusters = crud.map_clusters(session, sae_id=stored_sae.id)
    assert [c.size for c in clusters] == [int((fmap.cluster_F == c).sum()) for c in range(fmap.n_clusters)]
    tokens = crud.top_tokens(session, sae_id=stored_sae.id)
    for c in clusters:
        members = crud.cluster_members(session, sae_id=stored_sae.id, cluster=c.cluster)
        assert len(members) == c.size
        for text, n in c.top_tokens:
            assert n == sum(text in tokens.get(m.feature_index, []) for m in members)


def test_mapping_again_replaces_the_map_and_cluster_labels_follow_the_membership(session, stored_sae):
    cfg = MapConfig(n_epochs=50, min_cluster_size=3, min_samples=2)
    map_into_store(session, sae_row=stored_sae, cfg=cfg)
    assert crud.find_map(session, sae_id=stored_sae.id).n_clusters >= 1
    crud.add_cluster_label(session, sae_id=stored_sae.id, cluster=0, text="first family", author_id=None)
    map_into_store(session, sae_row=stored_sae, cfg=cfg)  # the same seed: the same clusters, the label stays
    assert crud.cluster_label_texts(session, sae_id=stored_sae.id) == {0: "first family"}
    assert session.query(MapPoint).filter_by(sae_id=stored_sae.id).count() == stored_sae.d_sae
    with pytest.raises(ValueError, match="cannot be empty"):
        crud.add_cluster_label(session, sae_id=stored_sae.id, cluster=0, text="  ", author_id=None)
    with pytest.raises(crud.NotFound, match="no cluster 999"):
        crud.add_cluster_label(session, sae_id=stored_sae.id, cluster=999, text="x", author_id=None)


def test_an_sae_that_is_not_recorded_is_refused_and_nothing_is_stored(db_url, session, web_sae):
    loaded, _record, _spec = web_sae
    code, out = invoke("import", "--sae", loaded.path, "--name", "unrecorded", "--db", db_url)
    assert code == 0, out
    code, out = invoke("map", "--sae", "unrecorded", "--db", db_url)
    assert code == 2 and "is not recorded: `saescope record --sae" in out and "Traceback" not in out
    with pytest.raises(crud.NotFound, match="has no feature map yet"):
        crud.find_map(session, sae_id=crud.find_sae(session, ref="unrecorded").id)


def test_an_unknown_sae_is_one_line(db_url):
    code, out = invoke("map", "--sae", "missing", "--db", db_url)
    assert code == 2 and "no SAE 'missing' in the store" in out


def test_nan_directions_are_named_and_the_previous_map_stays_whole(db_url, session, stored_sae, tmp_path):
    code, out = invoke("map", "--sae", stored_sae.id, "--db", db_url)
    assert code == 0, out
    before = [(p.feature_index, p.x, p.cluster) for p in crud.map_points(session, sae_id=stored_sae.id)]
    live = int(np.flatnonzero(~crud.dead_mask(session, sae_id=stored_sae.id))[0])
    weights = tmp_path / "nan-sae"
    weights.mkdir()
    source = stored_sae.source_path
    tensors = load_file(f"{source}/sae_weights.safetensors")
    tensors["W_dec"][live, 0] = float("nan")
    save_file(tensors, weights / "sae_weights.safetensors")
    (weights / "cfg.json").write_text(Path(source, "cfg.json").read_text())
    stored_sae.source_path = str(weights)
    session.commit()
    code, out = invoke("map", "--sae", stored_sae.id, "--db", db_url)
    assert code == 2 and "'W_dec' contains NaN or infinite values" in out  # the SAE loader refuses it first
    session.expire_all()
    assert [(p.feature_index, p.x, p.cluster) for p in crud.map_points(session, sae_id=stored_sae.id)] == before


def test_a_map_of_three_features_is_refused(db_url, session, stored_sae):
    session.query(MapPoint).delete()
    from app.models import Feature

    session.query(Feature).filter(Feature.sae_id == stored_sae.id, Feature.feature_index >= 3).update({"is_dead": True})
    session.commit()
    code, out = invoke("map", "--sae", stored_sae.id, "--db", db_url)
    assert code == 2 and "a map needs at least 16 live features" in out and "this SAE has 3 of 24" in out
    assert session.query(MapPoint).count() == 0
