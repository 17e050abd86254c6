"""The steps behind `saescope import` and `saescope record`: load an SAE, register it, record it, store it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session

from sae_core.distributed import Dist
from sae_core.lm import LoadedModel
from sae_core.records import RecordConfig, SAERecord, record_sae
from sae_core.saes import SAE, load_sae_and_layout
from sae_core.saes.artifact import read_reports, sae_directory, sae_set_members

from . import crud
from .ingest import store_record
from .models import Sae


@dataclass(frozen=True)
class LoadedSae:
    """An SAE read from disk together with where and in which layout it was found."""

    sae: SAE
    path: Path
    source_format: str

    @property
    def directory(self) -> Path:
        """The SAE's directory, where the runs that made it left their reports."""
        return sae_directory(self.path)


def read_sae(path: str | Path) -> LoadedSae:
    """Load an SAE in any supported layout (SAEFormatError if none fits) and name the layout."""
    path = Path(path).expanduser().resolve()
    sae, layout = load_sae_and_layout(path)
    return LoadedSae(sae, path, layout.name)


def report_fields(loaded: LoadedSae) -> dict[str, Any]:
    """The SAE row's columns that come from the metrics and training log beside the SAE (only those written).

    Read when an SAE is registered and again when it is recorded, so a later `saescope eval --save`
    reaches the pages with the next recording. Reading first means a corrupt report leaves no row behind.
    """
    reports = read_reports(loaded.directory)
    fields: dict[str, Any] = {}
    if reports.metrics:
        fields["eval_metrics"] = reports.metrics
    if reports.training_log:
        fields["training_log"] = reports.training_log
    return fields


def register_sae(session: Session, *, loaded: LoadedSae, name: str | None = None, model_spec: str = "",
                 sae_set: str | None = None) -> Sae:
    """Add an SAE to the store (or return the one already registered from the same path), in the set named
    `sae_set` when given (made on first use; an SAE of another model, or at a site the set has, is refused)."""
    existing = [s for s in crud.list_saes(session) if s.source_path == str(loaded.path)]
    if existing and name in (None, existing[0].name):
        if sae_set is not None:
            crud.add_to_set(session, sae=existing[0], set_name=sae_set)
        return existing[0]
    cfg = loaded.sae.cfg
    provenance = cfg.provenance
    reports = report_fields(loaded)
    name = name or loaded.path.name
    model_name = provenance.model or "unknown"
    site = provenance.site.name if provenance.site else ""
    joins = None if sae_set is None else crud.set_to_join(session, name=sae_set, model_name=model_name, site=site,
                                                          sae_name=name)
    return crud.create_sae(
        session,
        name=name,
        set_id=None if joins is None else joins.id,
        model_name=model_name,
        model_spec=model_spec,
        site=site,
        hook_name=provenance.hook_name or "",
        architecture=cfg.architecture,
        d_in=cfg.d_in,
        d_sae=cfg.d_sae,
        k=cfg.k,
        source_path=str(loaded.path),
        source_format=loaded.source_format,
        config=cfg.to_dict(),
        **reports,
    )


def _registered_set(session: Session, found: FoundSaes) -> str | None:
    """The one set the directory's SAEs were registered into (`import --set NAME`), so that recording the same
    directory records those rows instead of registering the SAEs again under the directory's name."""
    paths = {str(one.path) for one in found.saes}
    sets = {s.set_id for s in crud.list_saes(session) if s.source_path in paths}
    set_id = sets.pop() if len(sets) == 1 else None
    return None if set_id is None else crud.find_sae_set(session, ref=set_id).name


@dataclass(frozen=True)
class FoundSaes:
    """What an SAE path holds: one SAE, or the SAEs of a set directory (`set_dir`) in forward order."""

    saes: list[LoadedSae]
    set_dir: Path | None = None


def read_saes(path: str | Path) -> FoundSaes:
    """The SAE at `path`, or every SAE of the set directory at `path`."""
    directory = Path(path).expanduser().resolve()
    members = sae_set_members(directory)
    if not members:
        return FoundSaes([read_sae(path)])
    return FoundSaes([read_sae(member) for member in members.values()], directory)


def register_saes(session: Session, *, found: FoundSaes, name: str | None = None, model_spec: str = "",
                  sae_set: str | None = None) -> list[Sae]:
    """Register one SAE as register_sae does, or every SAE of a set directory in one set.

    A set directory's SAEs are named `SET/SITE` in the set `sae_set` (default: `name`, else the directory's
    name), after checking that they read one model.
    """
    if found.set_dir is None:
        return [register_sae(session, loaded=found.saes[0], name=name, model_spec=model_spec, sae_set=sae_set)]
    set_name = sae_set or name or _registered_set(session, found) or found.set_dir.name
    models = sorted({str(one.sae.cfg.provenance.model) for one in found.saes})
    if len(models) > 1:
        raise crud.Conflict(f"the SAEs in {found.set_dir} read different models ({', '.join(models)}): a set holds "
                            "the SAEs of one model")
    return [register_sae(session, loaded=one, name=f"{set_name}/{one.path.name}", model_spec=model_spec,
                         sae_set=set_name) for one in found.saes]


DEFAULT_RECORD_CONTEXT = 128
"""Tokens per recording context for an SAE whose config does not say what it was trained on."""


def record_context_len(loaded: LoadedSae, given: int | None) -> int:
    """The context length to record with: the one asked for, else the SAE's own, else DEFAULT_RECORD_CONTEXT."""
    return given or loaded.sae.cfg.provenance.context_len or DEFAULT_RECORD_CONTEXT


def limit_tokens(contexts: Iterable[torch.Tensor], n_tokens: int) -> Iterator[torch.Tensor]:
    """Contexts until at least `n_tokens` tokens (after each context's BOS) have been given."""
    if n_tokens <= 0:
        raise ValueError(f"--tokens must be positive, got {n_tokens}")
    given = 0
    for context in contexts:
        if given >= n_tokens:
            return
        yield context
        given += context.numel() - 1


def record_into_store(
    session: Session,
    *,
    sae_row: Sae | None,
    loaded: LoadedSae,
    lm: LoadedModel,
    model_spec: str,
    contexts: Iterable[torch.Tensor],
    dataset: str,
    cfg: RecordConfig = RecordConfig(),
    progress: bool = True,
    dist: Dist | None = None,
) -> SAERecord:
    """Run the recording pass for a registered SAE and replace its stored features with the result.

    Under torchrun every rank records its share; the main rank (the only one given `sae_row`) stores it.
    """
    dist = dist or Dist()
    if loaded.sae.cfg.provenance.hook_name is None:
        raise ValueError(f"the SAE at {loaded.path} names no hook site in its config; cannot record it")
    site = loaded.sae.site_in(lm.model)
    if dist.is_main and sae_row is None:
        raise ValueError("the main rank needs the SAE's row in the store to record into")
    reports = report_fields(loaded) if sae_row is not None else {}  # read before the long pass
    record = record_sae(lm.model, loaded.sae, contexts, site=site, tokenizer=lm.tokenizer, cfg=cfg,
                        progress=progress, dist=dist)
    if sae_row is not None:  # the main rank: it stores the recording with the reports
        sae_row.model_spec = model_spec
        for column, value in reports.items():
            setattr(sae_row, column, value)
        store_record(session, sae_id=sae_row.id, record=record, dataset=dataset)
    return record
