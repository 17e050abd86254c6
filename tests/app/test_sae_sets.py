"""Sets of SAEs (issue 15): SAEs of one model at several sites, grouped in the store and on the SAE list."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import func, select

from app import crud, ingest
from app.cli import app
from app.migrate import alembic_config, upgrade
from app.models import Context, Example, Feature, Sae, SaeSet, TokenText
from app.pipeline import read_sae, register_sae
from sae_core.provenance import Provenance
from sae_core.saes import SAEConfig, build_sae
from sae_core.saes.artifact import write_sae_set
from sae_core.sites import parse_site
from tests.conftest import run_cli


def add_sae(session, name: str, site: str = "layers.1.resid_post", model: str = "tiny-llama") -> Sae:
    return crud.create_sae(session, name=name, model_name=model, site=site, architecture="topk", d_in=32, d_sae=24)


def saved_sae(directory, site: str = "layers.1.resid_post", model: str = "tiny"):
    provenance = Provenance(model=model, site=parse_site(site))
    return build_sae(SAEConfig(architecture="relu", d_in=32, d_sae=24, provenance=provenance)).save(directory)


def test_members_of_a_set_are_listed_in_forward_order_and_the_rest_apart(session):
    for name, site in [("ten", "layers.10.resid_post"), ("three", "layers.3.resid_post"), ("pre", "layers.3.resid_pre")]:
        crud.add_to_set(session, sae=add_sae(session, name, site), set_name="smol")
    add_sae(session, "loose")
    sae_set = crud.find_sae_set(session, ref="smol")
    assert crud.find_sae_set(session, ref=sae_set.id) == sae_set and sae_set.model_name == "tiny-llama"
    assert [s.name for s in crud.set_members(session, sae_set=sae_set)] == ["pre", "three", "ten"]
    [group, rest] = crud.saes_by_set(session)
    assert group.sae_set == sae_set and group.sites == ["layers.3.resid_pre", "layers.3.resid_post",
                                                        "layers.10.resid_post"]
    assert rest.sae_set is None and [s.name for s in rest.saes] == ["loose"]


def test_an_sae_of_another_model_is_refused_and_nothing_changes(session):
    crud.add_to_set(session, sae=add_sae(session, "a"), set_name="smol")
    other = add_sae(session, "b", site="layers.2.resid_post", model="gpt2")
    with pytest.raises(crud.Conflict, match="'b' reads 'gpt2' but the set 'smol' holds SAEs of 'tiny-llama'"):
        crud.add_to_set(session, sae=other, set_name="smol")
    assert session.get(Sae, other.id).set_id is None
    assert [s.name for s in crud.set_members(session, sae_set=crud.find_sae_set(session, ref="smol"))] == ["a"]


def test_a_second_sae_at_a_site_the_set_covers_is_refused(session):
    crud.add_to_set(session, sae=add_sae(session, "a"), set_name="smol")
    with pytest.raises(crud.Conflict, match=r"already has SAE 'a' at layers\.1\.resid_post: one SAE per site"):
        crud.add_to_set(session, sae=add_sae(session, "b"), set_name="smol")
    crud.add_to_set(session, sae=crud.find_sae(session, ref="a"), set_name="smol")  # joining again is no clash


def test_a_set_needs_a_name_and_a_unique_one(session):
    crud.create_sae_set(session, name="smol", model_name="tiny-llama")
    with pytest.raises(crud.Conflict, match="named 'smol' already exists"):
        crud.create_sae_set(session, name="smol", model_name="tiny-llama")
    with pytest.raises(ValueError, match="needs a name"):
        crud.add_to_set(session, sae=add_sae(session, "a"), set_name="  ")
    assert session.scalars(select(SaeSet.name)).all() == ["smol"]
    with pytest.raises(crud.NotFound, match="no set of SAEs 'nope'"):
        crud.find_sae_set(session, ref="nope")


def test_registering_into_a_set_saves_the_sae_and_its_set_together_or_neither(session, tmp_path):
    first = register_sae(session, loaded=read_sae(saved_sae(tmp_path / "l1")), sae_set="tiny-set")
    assert first.set_id == crud.find_sae_set(session, ref="tiny-set").id
    with pytest.raises(crud.Conflict, match="a set holds the SAEs of one model"):
        register_sae(session, loaded=read_sae(saved_sae(tmp_path / "other", "layers.2.resid_post", model="gpt2")),
                     sae_set="tiny-set")
    with pytest.raises(crud.Conflict, match="one SAE per site"):
        register_sae(session, loaded=read_sae(saved_sae(tmp_path / "again")), sae_set="tiny-set")
    with pytest.raises(crud.Conflict, match="an SAE named 'l1' is already in the store"):
        register_sae(session, loaded=read_sae(saved_sae(tmp_path / "x" / "l1", "layers.3.resid_post")),
                     sae_set="new-set")
    session.rollback()
    assert [s.name for s in crud.list_saes(session)] == ["l1"]
    assert session.scalars(select(SaeSet.name)).all() == ["tiny-set"]
    again = register_sae(session, loaded=read_sae(tmp_path / "l1"), sae_set="tiny-set")  # the same path: no clash
    assert again.id == first.id


def test_deleting_a_set_keeps_its_saes(session):
    crud.add_to_set(session, sae=add_sae(session, "a"), set_name="smol")
    session.delete(crud.find_sae_set(session, ref="smol"))
    session.commit()
    session.expire_all()
    assert crud.find_sae(session, ref="a").set_id is None


def test_migrating_past_sets_and_back_keeps_every_recorded_row(session, db_url, records):
    """SQLite rebuilds `saes` to add and drop the foreign key: enforced, its DROP would cascade to the features."""
    sae = add_sae(session, "a")
    ingest.store_record(session, sae_id=sae.id, record=records[0], dataset="demo")
    crud.add_to_set(session, sae=sae, set_name="smol")

    def counts():
        return [session.scalar(select(func.count()).select_from(t)) for t in (Feature, Context, Example, TokenText)]

    before = counts()
    assert before[0] == 24 and min(before) > 0
    session.close()
    command.downgrade(alembic_config(db_url), "0003_accounts")
    assert counts() == before
    session.close()  # its read locks `features`, and PostgreSQL's DROP INDEX (0009) would wait on it for ever
    upgrade(db_url)
    assert counts() == before
    assert [s.name for s in crud.list_saes(session)] == ["a"] and crud.saes_by_set(session)[0].sae_set is None


def test_the_sae_list_groups_saes_by_set(client, session):
    for name, site in [("smol-l6", "layers.6.resid_post"), ("smol-l3", "layers.3.resid_post")]:
        crud.add_to_set(session, sae=add_sae(session, name, site), set_name="smol-set")
    add_sae(session, "loose")
    sae_set = crud.find_sae_set(session, ref="smol-set")
    assert {s["name"]: s["set_id"] for s in client.get("/api/saes").json()} == {
        "smol-l6": sae_set.id, "smol-l3": sae_set.id, "loose": None}
    page = client.get("/").text
    assert "<h2>Set smol-set</h2>" in page and "2 SAEs of\n        tiny-llama at layers.3.resid_post, layers.6.resid_post" in page
    assert page.index("smol-l3") < page.index("smol-l6") < page.index("SAEs in no set") < page.index("loose")


def test_a_list_without_sets_has_no_set_headings(client, session):
    add_sae(session, "loose")
    page = client.get("/").text
    assert "loose" in page and "Set " not in page and "in no set" not in page


def test_import_and_record_put_an_sae_in_a_set_and_refuse_another_model(tmp_path, db_url, engine):
    saved_sae(tmp_path / "l1")
    saved_sae(tmp_path / "gpt", "layers.2.resid_post", model="gpt2")
    ok = run_cli(app, "import", "--sae", tmp_path / "l1", "--set", "tiny-set", "--db", db_url)
    assert ok.exit_code == 0, ok.output
    refused = run_cli(app, "import", "--sae", tmp_path / "gpt", "--set", "tiny-set", "--db", db_url)
    assert refused.exit_code == 2 and "a set holds the SAEs of one model" in refused.output
    assert "Traceback" not in refused.output
    from app.db import session_factory

    with session_factory(engine)() as session:
        assert [s.name for s in crud.list_saes(session)] == ["l1"]
        [group] = crud.saes_by_set(session)
        assert group.sae_set.name == "tiny-set" and [s.name for s in group.saes] == ["l1"]


def set_directory(root, models=("tiny", "tiny")):
    """A set directory as `saescope train` writes it from a harvest at layers 0 and 1."""
    directories = write_sae_set(root, ["layers.0.resid_post", "layers.1.resid_post"])
    for (site, directory), model in zip(directories.items(), models, strict=True):
        sae = build_sae(SAEConfig(architecture="relu", d_in=32, d_sae=24,
                                  provenance=Provenance(model=model, site=parse_site(site))), seed=0)
        sae.W_enc.data *= 40.0
        sae.save(directory)
    return root


def test_import_and_record_of_a_set_directory_store_every_sae_in_one_set(tmp_path, db_url, session, corpus,
                                                                          tiny_model_dir):
    root = set_directory(tmp_path / "tiny-set")
    imported = run_cli(app, "import", "--sae", root, "--db", db_url)
    assert imported.exit_code == 0, imported.output
    assert "relu, 24 features at layers.1.resid_post, saelens layout, in set 'tiny-set'" in imported.output
    assert imported.output.startswith("SAE 'tiny-set/layers.0.resid_post' (id ")
    recorded = run_cli(app, "record", "--sae", root, "--model", tiny_model_dir, "--dataset", corpus, "--tokens", 200,
                       "--context", 40, "--db", db_url)
    assert recorded.exit_code == 0, recorded.output
    assert recorded.output.count("recorded 'tiny-set/layers.") == 2
    [group] = crud.saes_by_set(session)
    assert group.sae_set.name == "tiny-set" and group.sites == ["layers.0.resid_post", "layers.1.resid_post"]
    assert all(sae.recorded_at is not None and sae.n_tokens >= 200 for sae in group.saes)


def test_recording_a_set_directory_imported_under_another_name_records_those_saes(tmp_path, db_url, session, corpus,
                                                                                  tiny_model_dir):
    root = set_directory(tmp_path / "tc")
    assert run_cli(app, "import", "--sae", root, "--set", "transcoders", "--db", db_url).exit_code == 0
    recorded = run_cli(app, "record", "--sae", root, "--model", tiny_model_dir, "--dataset", corpus, "--tokens", 100,
                       "--context", 40, "--db", db_url)
    assert recorded.exit_code == 0, recorded.output
    [group] = crud.saes_by_set(session)
    assert group.sae_set.name == "transcoders" and len(crud.list_saes(session)) == 2
    assert all(sae.recorded_at is not None for sae in group.saes)


def test_a_set_directory_of_two_models_is_refused_before_anything_is_stored(tmp_path, db_url, session):
    root = set_directory(tmp_path / "mixed", models=("tiny", "gpt2"))
    result = run_cli(app, "import", "--sae", root, "--db", db_url)
    assert result.exit_code == 2 and "read different models (gpt2, tiny)" in result.output
    assert crud.list_saes(session) == [] and crud.saes_by_set(session) == []


def test_record_puts_a_stored_sae_in_a_set(tmp_path, db_url, session, corpus, tiny_model_dir):
    root = set_directory(tmp_path / "tiny-set")
    assert run_cli(app, "import", "--sae", root / "layers.1.resid_post", "--name", "one", "--db", db_url).exit_code == 0
    result = run_cli(app, "record", "--sae", "one", "--set", "later", "--model", tiny_model_dir, "--dataset", corpus,
                     "--tokens", 100, "--context", 40, "--db", db_url)
    assert result.exit_code == 0, result.output
    [group] = crud.saes_by_set(session)
    assert group.sae_set.name == "later" and [s.name for s in group.saes] == ["one"]
