"""`saescope explain`: draft and score explanations of an SAE's features into the store (issue 17)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import typer
from sqlalchemy.orm import Session
from tqdm import tqdm

from sae_core.cli import fail
from sae_core.explain import ExplainConfig, ExplainerError
from sae_core.lm import DEFAULT_MODEL

from . import crud
from .explanations import Selection, chat_model, parse_range, plan, run_job


def explain_command(open_session: Callable[..., AbstractContextManager[Session]],
                    user_errors: tuple[type[Exception], ...]) -> Callable[..., None]:
    """The `explain` command, given the store CLI's session opener and the errors it reports as one line",
    (app/cli.py registers it; this module does not import that one, which imports it)."""

    def explain(
        sae: str = typer.Option(..., "--sae", help="The id or name of an SAE in the store."),
        features: str | None = typer.Option(None, "--features", help="START:STOP, a range of feature indices."),
        unlabelled: bool = typer.Option(False, "--unlabelled", help="Only features with no label."),
        endpoint: str | None = typer.Option(None, help="Base URL of an OpenAI-compatible chat endpoint (…/v1)."),
        explainer_model: str | None = typer.Option(
            None, "--explainer-model", help="With --endpoint the model name it serves; else a model saescope loads "
                                            f"(built-in name, directory, GGUF or hub id; default {DEFAULT_MODEL})."),
        scorer_model: str | None = typer.Option(None, "--scorer-model",
                                                help="The scorer, served the same way (default: the explainer)."),
        api_key_env: str = typer.Option("SAESCOPE_EXPLAINER_API_KEY", help="Environment variable holding the key."),
        concurrency: int = typer.Option(8, min=1, max=256, help="Endpoint requests in flight at once."),
        timeout: float = typer.Option(60.0, min=1.0, help="Seconds per endpoint request."),
        db: str | None = typer.Option(None, "--db", help="Database URL (default: DATABASE_URL or sqlite:///saescope.db)."),
    ) -> None:
        """Draft an explanation of each feature with an explainer model and score it on held-out examples.

        Resumable: features that already have an explanation are skipped, and each is stored as it is finished.
        """
        try:
            selection = parse_range(features, unlabelled) if features else Selection(unlabelled_only=unlabelled)
            with open_session(db, migrate=True) as session:
                row = crud.find_sae(session, ref=sae)
                todo = plan(session, sae=row, selection=selection)
                if not todo:
                    typer.echo(f"nothing to explain in SAE {row.name!r}: every selected live feature has an explanation")
                    return
                explainer = chat_model(explainer_model, endpoint, api_key_env, concurrency, timeout)
                scorer = chat_model(scorer_model, endpoint, api_key_env, concurrency, timeout) if scorer_model else explainer
                started = time.monotonic()
                with tqdm(total=len(todo), unit="feature", desc="explain") as bar:
                    def advance(_index: int) -> None:
                        bar.update()
                        bar.set_postfix_str(f"{bar.n / max(time.monotonic() - started, 1e-9) * 60:.1f} features/min")
                    done = run_job(session, sae=row, indices=todo, explainer=explainer, scorer=scorer,
                                   config=ExplainConfig(), on_feature=advance)
        except ExplainerError as err:
            fail(f"explain stopped: {err} (finished features are stored; run again to go on)")
        except user_errors as err:
            fail(str(err).splitlines()[0])
        minutes = (time.monotonic() - started) / 60
        typer.echo(f"{done} features explained by {explainer.name}, scored by {scorer.name}, "
                   f"{done / max(minutes, 1e-9):.1f} features/min")

    return explain
