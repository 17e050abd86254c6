"""The `saescope` command: the library's commands plus the store's (db upgrade, import, record, export, demo,
serve, user).

The store's live here, not in sae_core/cli.py, because the library never imports the app or SQLAlchemy. This
module builds its own Typer from the library's `new_cli` and adds to it; the library's own CLI stays as it is.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import typer
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from sae_core.cli import DatasetOpt, DeviceOpt, DistributedOpt, ModelOpt, fail, new_cli, run
from sae_core.console import warn
from sae_core.data import CorpusError, iter_contexts, iter_documents
from sae_core.devices import slow_bf16_note
from sae_core.distributed import close_distributed, init_distributed
from sae_core.lm import ModelLoadError, load_model
from sae_core.maps import MapConfig
from sae_core.records import RecordConfig
from sae_core.saes import SAEFormatError
from sae_core.sites import SiteError

from . import crud
from .attribute_cli import attribute_with_store
from .cli_store import DB_OPTION, database_url, open_session
from .db import shown_url
from .demo import DEMO_USER, DemoConfig, DemoRun, ensure_account, summary
from .explain_cli import explain_command
from .export import FORMATS, export_sae
from .ingest import IngestError
from .mapping import map_into_store
from .migrate import StoreError, open_store
from .models import ApiToken, Sae, as_utc, now
from .neuronpedia import BOT_USER_ID, VISIBILITIES, NeuronpediaTarget
from .pipeline import (
    LoadedSae,
    limit_tokens,
    read_sae,
    read_saes,
    record_context_len,
    record_into_store,
    register_saes,
)
from .security import ROLES, hash_api_token, hash_password, new_api_token
from .settings import Settings

app = new_cli({"attribute": attribute_with_store})
"""`saescope`: a Typer of its own holding the library's commands; the store's are added to it below."""
db_app = typer.Typer(no_args_is_help=True, help="The feature store.")
app.add_typer(db_app, name="db")
user_app = typer.Typer(no_args_is_help=True, help="Accounts of the web app.")
app.add_typer(user_app, name="user")

SET_OPTION = typer.Option(None, "--set", help="Put the SAE in this set of SAEs of one model at several sites "
                                              "(made on first use).")
USER_ERRORS = (ValueError, LookupError, OSError, OperationalError, SAEFormatError, ModelLoadError, SiteError,
               CorpusError, IngestError, StoreError)


@db_app.command("upgrade")
def db_upgrade(db: str | None = DB_OPTION) -> None:
    """Create or upgrade the store's schema to the newest migration."""
    try:
        open_store(database_url(db), migrate=True).dispose()
    except StoreError as err:
        fail(str(err))
    typer.echo(f"database at {shown_url(database_url(db))} is up to date")


@app.command("import")
def import_sae(
    sae: Path = typer.Option(..., "--sae", help="SAE directory or file (saescope/SAELens, sparsify, Gemma Scope, "
                                                "dictionary_learning)."),
    name: str | None = typer.Option(None, help="Name in the store (default: the directory name)."),
    sae_set: str | None = SET_OPTION,
    db: str | None = DB_OPTION,
) -> None:
    """Register an SAE written elsewhere so that it can be recorded and browsed; a set directory (`saescope train` on
    a harvest at several sites) registers each of its SAEs, in one set."""
    try:
        with open_session(db, migrate=True) as session:
            rows = register_saes(session, found=read_saes(sae), name=name, sae_set=sae_set)
            lines = [registered(session, row) for row in rows]
    except USER_ERRORS as err:
        fail(str(err).splitlines()[0])
    typer.echo("\n".join(lines))


def registered(session: Session, row: Sae) -> str:
    """One line on an SAE just registered: name, id, dictionary, site, layout and set."""
    in_set = "" if row.set_id is None else f", in set {crud.find_sae_set(session, ref=row.set_id).name!r}"
    return (f"SAE {row.name!r} (id {row.id}): {row.architecture}, {row.d_sae} features at {row.site or '?'}, "
            f"{row.source_format} layout{in_set}")


@app.command()
def record(
    sae: str = typer.Option(..., "--sae", help="SAE directory, or the id or name of an SAE in the store."),
    model: str = ModelOpt,
    dataset: str = DatasetOpt,
    tokens: int = typer.Option(100_000, help="Tokens to record over."),
    context_len: int | None = typer.Option(None, "--context",
                                           help="Tokens per context, BOS included (default: the SAE's own, else 128)."),
    batch_size: int | None = typer.Option(None, help="Contexts per forward pass (default: sized to the dictionary)."),
    n_top: int = typer.Option(20, help="Top examples kept per feature."),
    dtype: str = typer.Option(RecordConfig.dtype, "--dtype",
                              help="Encoder dtype: float32 (exact) or bfloat16 (4x faster matmuls on GPUs and AMX "
                                   "CPUs; activations to 3 significant digits): for very wide dictionaries."),
    make_map: bool = typer.Option(True, "--map/--no-map", help="Then lay out and cluster the features (saescope map)."),
    sae_set: str | None = SET_OPTION,
    device: str = DeviceOpt,
    distributed: bool = DistributedOpt,
    db: str | None = DB_OPTION,
) -> None:
    """Record every feature of an SAE (top examples, quantile samples, statistics, logits) into the store; every
    SAE of a set directory, with one model load.

    Under torchrun the contexts are split by rank and the ranks' records merged exactly; rank 0 alone
    registers the SAE and writes the store.
    """
    lines = []
    try:
        dist = init_distributed(device, require=distributed)
        if dist.is_main and (note := slow_bf16_note(dtype, dist.device)):
            warn(note)
        with open_session(db, migrate=dist.is_main) as session:
            targets = _saes_for_recording(session, sae, register=dist.is_main, sae_set=sae_set)
            lm = load_model(model, device=str(dist.device))
            for loaded, row in targets:
                loaded.sae.to(dist.device)
                contexts = limit_tokens(iter_contexts(iter_documents(dataset), lm.tokenizer,
                                                      record_context_len(loaded, context_len)), tokens)
                result = record_into_store(session, sae_row=row, loaded=loaded, lm=lm, model_spec=model,
                                           contexts=contexts, dataset=dataset,
                                           cfg=RecordConfig(n_top=n_top, batch_size=batch_size, dtype=dtype),
                                           dist=dist)
                if row is not None:
                    lines.append(f"recorded {row.name!r}: {result.d_sae} features over {result.n_tokens} tokens, "
                                 f"{result.dead_count} dead, {result.dense_count} dense")
    except USER_ERRORS as err:
        fail(str(err).splitlines()[0])
    finally:
        close_distributed()
    if lines:
        typer.echo("\n".join(lines))
    mapped = [row.id for _loaded, row in targets if row is not None] if make_map else []
    for sae_id in mapped:
        try:
            _map_and_report(db, sae_id, MapConfig())
        except USER_ERRORS as err:  # the recording is stored; only the map is missing
            typer.echo(f"no feature map made: {str(err).splitlines()[0]} (saescope map makes one later)")


@app.command("map")
def map_sae(
    sae: str = typer.Option(..., "--sae", help="Id or name of a recorded SAE in the store."),
    seed: int = typer.Option(MapConfig.seed, help="Seed of the layout: the same seed gives the same map."),
    db: str | None = DB_OPTION,
) -> None:
    """Lay out every live feature of a recorded SAE on a 2-D map (UMAP of decoder directions) and cluster it."""
    try:
        _map_and_report(db, sae, MapConfig(seed=seed))
    except USER_ERRORS as err:
        fail(str(err).splitlines()[0])


def _map_and_report(db: str | None, sae: str | int, cfg: MapConfig) -> None:
    """Map an SAE of the store and say what came out."""
    with open_session(db, migrate=True) as session:
        row = crud.find_sae(session, ref=sae)
        typer.echo(f"mapping the features of {row.name!r} (UMAP of decoder directions, cosine; HDBSCAN clusters)")
        fmap = map_into_store(session, sae_row=row, cfg=cfg)
        seconds = crud.find_map(session, sae_id=row.id).seconds
    typer.echo(f"mapped {row.name!r} in {seconds:.1f} s: {fmap.n_clusters} clusters, {fmap.n_noise} live features "
               f"in none, {fmap.n_dead} dead left out")


def _saes_for_recording(session: Session, ref: str, register: bool = True,
                        sae_set: str | None = None) -> list[tuple[LoadedSae, Sae | None]]:
    """The SAEs `record --sae` names: a path (an SAE or a set directory's SAEs, registered on first use when
    `register`) or an id/name in the store; put in `sae_set` when given (by the registering rank)."""
    if Path(ref).expanduser().exists():
        found = read_saes(ref)
        rows = register_saes(session, found=found, sae_set=sae_set) if register else [None] * len(found.saes)
        return list(zip(found.saes, rows))
    row = crud.find_sae(session, ref=ref)
    if sae_set is not None and register:
        crud.add_to_set(session, sae=row, set_name=sae_set)
    return [(read_sae(row.source_path), row)]


@app.command()
def export(
    sae: str = typer.Option(..., "--sae", help="Id or name of an SAE in the store."),
    fmt: str = typer.Option("neuronpedia", "--format", help=f"One of: {', '.join(FORMATS)}."),
    out: Path = typer.Option(..., "--out", help="Directory to write (neuronpedia: the root holding <model>/<source>/)."),
    model_id: str | None = typer.Option(None, "--model-id", help="neuronpedia: Neuronpedia's id of the model, e.g. gpt2-small."),
    model_layers: int | None = typer.Option(None, "--model-layers", help="neuronpedia: the model's number of layers."),
    source_set: str = typer.Option("", "--source-set",
                                   help="neuronpedia: source set, e.g. res-jb (default: a slug of the SAE's name)."),
    model_owner: str = typer.Option("", "--model-owner",
                                    help="neuronpedia: the model's owner (default: a hub id's organisation)."),
    creator_id: str = typer.Option(BOT_USER_ID, "--creator-id",
                                   help="neuronpedia: user id that creates the rows (default: the seed's bot)."),
    author_id: str = typer.Option(BOT_USER_ID, "--author-id",
                                  help="neuronpedia: user id that authors the labels (default: the seed's bot)."),
    visibility: str = typer.Option("PUBLIC", "--visibility", help=f"neuronpedia: {', '.join(VISIBILITIES)}."),
    db: str | None = DB_OPTION,
) -> None:
    """Write an SAE's features, examples and current labels as a Neuronpedia dataset or plain JSON."""
    try:
        target = None
        if fmt == "neuronpedia" and model_id is not None and model_layers is not None:
            target = NeuronpediaTarget(model_id=model_id, model_layers=model_layers, source_set=source_set,
                                       model_owner=model_owner, creator_id=creator_id, author_id=author_id,
                                       visibility=visibility)
        with open_session(db) as session:
            written = export_sae(session, sae_ref=sae, fmt=fmt, out=out, target=target)
    except USER_ERRORS as err:
        fail(str(err).splitlines()[0])
    typer.echo(f"wrote {written}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Directory for every stage's output."),
    model: str = ModelOpt,
    site: str = typer.Option(DemoConfig.site, "--site",
                             help="Hook site the SAE reads, or several comma-separated: an SAE each, in one set."),
    dataset: str = DatasetOpt,
    tokens: int = typer.Option(DemoConfig.harvest_tokens, "--tokens", help="Activation rows to harvest."),
    features: int = typer.Option(DemoConfig.features, "--features", help="SAE dictionary size."),
    k: int = typer.Option(DemoConfig.k, "--k", help="Active features per token (TopK)."),
    train_tokens: int = typer.Option(DemoConfig.train_tokens, "--train-tokens", help="Training budget in rows, per SAE."),
    record_tokens: int = typer.Option(DemoConfig.record_tokens, "--record-tokens", help="Tokens to record, per SAE."),
    model_dtype: str = typer.Option(DemoConfig.model_dtype, "--model-dtype",
                                    help="Model compute dtype: auto (bfloat16 on CPUs with fast bf16 matmuls, "
                                         "else float32), bfloat16, float32 or float16."),
    db: str | None = typer.Option(None, "--db", help="Database URL (default: DATABASE_URL, else a SQLite file in --out)."),
    serve_after: bool = typer.Option(True, "--serve/--no-serve", help="Serve the browser when the stages are done."),
    host: str = typer.Option("127.0.0.1", help="Address to serve on."),
    port: int = typer.Option(8000, help="Port to serve on."),
) -> None:
    """The whole pipeline (harvest, train, evaluate, record, serve) on the embedded defaults; finished stages are reused."""
    cfg = DemoConfig(model=model, site=site, dataset=dataset, harvest_tokens=tokens, features=features, k=k,
                     train_tokens=train_tokens, record_tokens=record_tokens, model_dtype=model_dtype)
    url = Settings.on_store(db, default=f"sqlite:///{(out / 'saescope.db').resolve()}").database_url
    try:
        out.mkdir(parents=True, exist_ok=True)
        open_store(url, migrate=True).dispose()  # a store that cannot be used fails before the stages' minutes
        run = DemoRun(cfg, out)
        activations, key = run.activations()
        sae_dir, key = run.sae(activations, key)
        with open_session(url) as session:
            rows = run.record(session, sae_dir, key)
            for row in rows:
                run.map(session, row)
            password = ensure_account(session)
    except USER_ERRORS as err:
        fail(str(err).splitlines()[0])
    typer.echo("\n".join(summary(row) for row in rows))
    typer.echo(f"store: {shown_url(url)}")
    if password is not None:
        typer.echo(f"account {DEMO_USER!r} (admin) created; its password, shown only this once: {password}")
    if serve_after:
        for row in rows:
            typer.echo(f"feature pages of {row.site}: http://{host}:{port}/saes/{row.id}/features")
        run_server(url, host, port)


@app.command()
def serve(
    db: str | None = DB_OPTION,
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, help="Worker processes (each loads its own model for text search)."),
    preload: bool = typer.Option(True, "--preload/--no-preload",
                                 help="Load the SAEs' models in the background at start-up (else on first use)."),
) -> None:
    """Serve the feature browser (uvicorn, factory mode)."""
    run_server(database_url(db), host, port, workers, preload)


WORKER_STARTUP_S = 120


def run_server(url: str, host: str, port: int, workers: int = 1, preload: bool = True) -> None:
    """uvicorn in factory mode on the store at `url`, until interrupted; a store that cannot be used is a
    one-line error here, before any worker starts (each would otherwise fail on its own with a traceback)."""
    import uvicorn

    try:
        open_store(url, migrate=True).dispose()  # once, here, before the workers start reading
    except StoreError as err:
        fail(str(err))
    # Workers build their app from the environment; one secret shared by all keeps sessions valid in each.
    os.environ["DATABASE_URL"] = url
    os.environ["PRELOAD_MODELS"] = "true" if preload else "false"
    os.environ.setdefault("SECRET_KEY", secrets.token_hex(32))
    typer.echo(f"serving at http://{host}:{port}/  (Ctrl-C stops)")
    # Each worker process imports this console script (and with it torch) before it answers the supervisor's
    # health check: several seconds on a small machine, past uvicorn's 5 s default, which kills and
    # respawns the workers for ever.
    uvicorn.run("app.main:create_app", factory=True, host=host, port=port, workers=workers,
                timeout_worker_healthcheck=WORKER_STARTUP_S)


@contextmanager
def _accounts(db: str | None) -> Iterator[Session]:
    """The store for a `user` command (its schema brought up to date); a user error becomes its one line."""
    try:
        with open_session(db, migrate=True) as session:
            yield session
    except USER_ERRORS as err:
        fail(str(err).splitlines()[0])


def _check_role(role: str) -> None:
    if role not in ROLES:
        fail(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")


def _new_password(generate: bool) -> str:
    """A generated password, or one asked for twice."""
    if generate:
        return secrets.token_urlsafe(12)
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


def _show_generated(password: str, generate: bool) -> None:
    """Print a generated password, the only time it is shown (only its hash is kept)."""
    if generate:
        typer.echo(f"password (shown once): {password}")


GENERATE_OPTION = typer.Option(False, "--generate", help="Generate a password and print it once.")


@user_app.command("add")
def user_add(
    name: str = typer.Argument(..., help="Login name."),
    role: str = typer.Option("viewer", help=f"One of: {', '.join(ROLES)}."),
    generate: bool = GENERATE_OPTION,
    db: str | None = DB_OPTION,
) -> None:
    """Add an account; the password is asked for twice unless --generate makes one."""
    _check_role(role)
    password = _new_password(generate)
    with _accounts(db) as session:
        user = crud.create_user(session, name=name, password_hash=hash_password(password), role=role)
    typer.echo(f"user {user.name!r} added as {user.role}")
    _show_generated(password, generate)


@user_app.command("passwd")
def user_passwd(
    name: str = typer.Argument(..., help="Login name."),
    generate: bool = GENERATE_OPTION,
    db: str | None = DB_OPTION,
) -> None:
    """Change an account's password; every browser signed in as it is signed out."""
    with _accounts(db) as session:
        user = crud.get_user(session, name=name)
        password = _new_password(generate)
        crud.set_password(session, user=user, password_hash=hash_password(password))
    typer.echo(f"password of {name!r} changed; its logins are ended")
    _show_generated(password, generate)


@user_app.command("role")
def user_role(
    name: str = typer.Argument(..., help="Login name."),
    role: str = typer.Argument(..., help=f"One of: {', '.join(ROLES)}."),
    db: str | None = DB_OPTION,
) -> None:
    """Change an account's role; every browser signed in as it is signed out (its API tokens act in the new role)."""
    _check_role(role)
    with _accounts(db) as session:
        crud.set_role(session, user=crud.get_user(session, name=name), role=role)
    typer.echo(f"{name!r} is now a {role}; its logins are ended")


@user_app.command("token")
def user_token(
    name: str = typer.Argument(..., help="The user the token acts as."),
    label: str = typer.Option("script", "--label", help="What the token is for."),
    expires_days: int | None = typer.Option(None, "--expires-days", min=1,
                                            help="Refuse the token after this many days (default: never)."),
    db: str | None = DB_OPTION,
) -> None:
    """Make an API token (Authorization: Bearer TOKEN) for a user; it is printed once, only its hash is kept."""
    token = new_api_token()
    expires_at = None if expires_days is None else now() + timedelta(days=expires_days)
    with _accounts(db) as session:
        crud.add_api_token(session, user_id=crud.get_user(session, name=name).id, name=label,
                           token_hash=hash_api_token(token), expires_at=expires_at)
    typer.echo(token)


@user_app.command("tokens")
def user_tokens(
    name: str = typer.Argument(..., help="Whose tokens to list."),
    db: str | None = DB_OPTION,
) -> None:
    """List a user's API tokens (id, label, created, last used, expiry, state); the tokens themselves are never kept."""
    with _accounts(db) as session:
        tokens = crud.api_tokens(session, user_id=crud.get_user(session, name=name).id)
    if not tokens:
        typer.echo(f"{name!r} has no API tokens: saescope user token {name} makes one")
    for line in token_table(tokens, now()):
        typer.echo(line)


@user_app.command("revoke")
def user_revoke(
    token_id: int = typer.Argument(..., help="The token's id, as `saescope user tokens NAME` lists it."),
    db: str | None = DB_OPTION,
) -> None:
    """Revoke an API token: calls with it are refused (401) from now on; it stays listed as revoked."""
    with _accounts(db) as session:
        token = crud.revoke_api_token(session, token_id=token_id)
        owner = token.user.name
    typer.echo(f"token {token.id} ({token.name!r} of {owner!r}) revoked at {_when(token.revoked_at)}")


def token_table(tokens: list[ApiToken], moment: datetime) -> list[str]:
    """`saescope user tokens` as aligned columns, a header first (empty for no tokens)."""
    if not tokens:
        return []
    rows = [("id", "label", "created", "last used", "expires", "state")]
    rows += [(str(t.id), t.name, _when(t.created_at), _when(t.last_used_at), _when(t.expires_at), t.state(moment))
             for t in tokens]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def _when(moment: datetime | None) -> str:
    return "never" if moment is None else as_utc(moment).strftime("%Y-%m-%d %H:%M UTC")


app.command("explain")(explain_command(open_session, USER_ERRORS))


def main() -> None:
    """Console-script entry point: the library's commands plus the store's."""
    run(app)
