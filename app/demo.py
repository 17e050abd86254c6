"""`saescope demo`: harvest, train, evaluate, record and map SAEs in one command, reusing finished stages.

By default it reads SmolLM2's residual stream at layers 3, 6 and 9 from one harvest, trains an SAE per layer
and records them as one set of SAEs, the unit the circuits page reads.

Each stage writes into a directory named after a hash of its own settings and of the stages before it,
and marks itself finished only once its output is whole. Running the demo again with the same settings
therefore finds every stage done and goes straight to the end; changing a setting reruns that stage and
the ones after it, beside the old output rather than over it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import typer
from sqlalchemy.orm import Session

from sae_core.config import HarvestConfig, TrainConfig
from sae_core.data import iter_contexts, iter_documents
from sae_core.devices import compute_dtype
from sae_core.distributed import Dist
from sae_core.evaluate import ce_on_corpus, evaluate_activations
from sae_core.fileio import atomic_write_json
from sae_core.harvest import harvest, read_manifest
from sae_core.lm import DEFAULT_MODEL, LoadedModel, load_model, parse_dtype
from sae_core.maps import MapConfig, MapError
from sae_core.records import RecordConfig
from sae_core.saes.artifact import write_metrics
from sae_core.train import sae_config_for, train
from sae_core.training_jobs import stored_jobs

from . import crud
from .mapping import map_into_store, map_is_current
from .models import Sae
from .pipeline import LoadedSae, limit_tokens, read_saes, record_into_store, register_saes
from .security import hash_password

DEMO_USER = "researcher"
"""The local account the demo creates, an admin, so that labelling and steering work at once."""

DONE_FILE = "stage.json"
"""Written last into a stage's directory: the settings it ran with."""


@dataclass(frozen=True)
class DemoConfig:
    """Every setting of the demo pipeline; the defaults are the embedded, offline demo."""

    model: str = DEFAULT_MODEL
    """Model name, local directory, .gguf file or hub id."""
    site: str = "layers.3.resid_post,layers.6.resid_post,layers.9.resid_post"
    """Hook site, or several comma-separated: one harvest reads them all and each gets an SAE, in one set."""
    dataset: str = "demo"
    """Corpus for every stage."""
    model_dtype: str = "auto"
    """Compute dtype of the model; auto: bfloat16 where the CPU has fast bf16 matmuls (3.5x faster than float32 on
    AMX), else float32 (`sae_core.devices.fast_bf16`)."""
    harvest_tokens: int = 120_000
    """Activation rows harvested at each site, from one forward (training cycles over them)."""
    features: int = 8192
    """SAE dictionary size."""
    k: int = 32
    """TopK: active features per token."""
    train_tokens: int = 400_000
    """Training budget in rows, of each SAE.

    Three SAEs share the 15-minute budget one SAE had (1M rows, 100k recorded, 32 CE contexts). Measured in
    CPU seconds, a training step (4096 rows, 8192 features) costs 0.94 s and the CE evaluation 85 s per SAE
    at 32 contexts; so each SAE gets 400k rows, 25k recorded tokens (3.8 ms CPU each) and 16 CE contexts, and the one harvest,
    which now runs to layer 9, 120k rows (an estimate of the whole from those rates, not a timed run)."""
    ce_contexts: int = 16
    """Held-out contexts for the CE-loss evaluation, of each SAE."""
    record_tokens: int = 25_000
    """Tokens recorded for the feature pages, of each SAE."""
    seed: int = 0
    """Seeds training and the recording's samples."""


def stage_key(**parts: Any) -> str:
    """A short stable hash of a stage's settings."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def finished(directory: Path, key: str) -> bool:
    """Whether `directory` holds a whole run of the stage with this key."""
    try:
        return json.loads((directory / DONE_FILE).read_text()).get("key") == key
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def mark_finished(directory: Path, key: str, settings: dict[str, Any]) -> None:
    atomic_write_json(directory / DONE_FILE, {"key": key, "settings": settings})


@dataclass
class DemoRun:
    """The demo's stages over one output directory; the model is loaded once, when a stage first needs it."""

    cfg: DemoConfig
    out: Path
    say: Callable[[str], None] = typer.echo
    _lm: LoadedModel | None = None

    @property
    def model_dtype(self) -> str:
        """The model's compute dtype on this machine (`auto` resolved)."""
        return compute_dtype(self.cfg.model_dtype, torch.device("cpu"))

    @property
    def lm(self) -> LoadedModel:
        if self._lm is None:
            self.say(f"      loading {self.cfg.model} ({self.model_dtype})")
            self._lm = load_model(self.cfg.model, dtype=parse_dtype(self.model_dtype))
        return self._lm

    def harvest_config(self) -> HarvestConfig:
        c = self.cfg
        return HarvestConfig(model=c.model, site=c.site, dataset=c.dataset, tokens=c.harvest_tokens,
                             model_dtype=self.model_dtype)

    def activations(self) -> tuple[Path, str]:
        """Stage 1: the harvested activations (reused when a harvest with the same settings finished)."""
        hcfg = self.harvest_config()
        key = stage_key(stage="harvest", **hcfg.to_dict())
        directory = self.out / f"activations-{key}"
        if finished(directory, key):
            self.say(f"[1/5] activations: reusing {directory}")
            return directory, key
        self.say(f"[1/5] harvesting {hcfg.tokens} activations of {hcfg.model} at {hcfg.site} from {hcfg.dataset}")
        harvest(hcfg, directory, resume=True, lm=self.lm)
        mark_finished(directory, key, hcfg.to_dict())
        return directory, key

    def sae(self, activations: Path, upstream: str) -> tuple[Path, str]:
        """Stage 2: a TopK SAE per site trained on its activations (a set directory for several), scored on
        held-out rows; resumes a killed run."""
        c = self.cfg
        settings = {"features": c.features, "k": c.k, "tokens": c.train_tokens, "seed": c.seed}
        key = stage_key(stage="train", upstream=upstream, **settings)
        directory = self.out / f"sae-{key}"
        if finished(directory, key):
            self.say(f"[2/5] SAE: reusing {directory}")
            return directory, key
        for job in stored_jobs(activations, directory, c.train_tokens, None, False, Dist()):
            assert job.source is not None and job.heldout is not None  # stored rows: a harvest and its held-out tail
            self.say(f"[2/5] training a TopK SAE ({c.features} features, k={c.k}) on {c.train_tokens} tokens "
                     f"at {job.site}")
            sae = train(sae_config_for(job.rows, "topk", c.features, k=c.k), TrainConfig(tokens=job.budget, seed=c.seed),
                        job.rows, job.out, resume=True)
            write_metrics(job.out, {**evaluate_activations(sae, job.heldout), "eval_rows": job.eval_rows})
            self.say(f"[3/5] measuring CE loss with the SAE spliced in over {c.ce_contexts} held-out contexts")
            write_metrics(job.out, ce_on_corpus(self.lm, sae, c.dataset, n_contexts=c.ce_contexts,
                                                skip_contexts=read_manifest(job.source)["n_contexts"]))
        mark_finished(directory, key, settings)
        return directory, key

    def record(self, session: Session, sae_dir: Path, upstream: str) -> list[Sae]:
        """Stage 4: every feature's examples and statistics in the store (skipped where already recorded); the SAEs
        of several sites go in one set, named as the SAE of one site is."""
        c = self.cfg
        found = read_saes(sae_dir)
        rows = register_saes(session, found=found, name=f"demo-{upstream}", model_spec=c.model)
        for loaded, row in zip(found.saes, rows):
            self._record_one(session, loaded, row)
        return rows

    def _record_one(self, session: Session, loaded: LoadedSae, row: Sae) -> None:
        c = self.cfg
        rcfg = RecordConfig(seed=c.seed).for_width(row.d_sae)
        if row.recorded_at is not None and row.record_config == asdict(rcfg) and row.n_tokens is not None \
                and row.n_tokens >= c.record_tokens and row.dataset == c.dataset:
            self.say(f"[4/5] features: already recorded as {row.name!r}")
            return
        self.say(f"[4/5] recording {c.features} features of {row.name!r} over {c.record_tokens} tokens into the store")
        contexts = limit_tokens(iter_contexts(iter_documents(c.dataset), self.lm.tokenizer), c.record_tokens)
        record_into_store(session, sae_row=row, loaded=loaded, lm=self.lm, model_spec=c.model, contexts=contexts,
                          dataset=c.dataset, cfg=rcfg)

    def map(self, session: Session, row: Sae) -> None:
        """Stage 5: the feature map (skipped when made with these settings after the latest recording)."""
        mcfg = MapConfig(seed=self.cfg.seed)
        if map_is_current(session, sae_row=row, cfg=mcfg):
            self.say(f"[5/5] feature map of {row.name!r}: reusing the stored one")
            return
        self.say(f"[5/5] mapping {row.d_sae} features of {row.name!r} (UMAP of the decoder directions, HDBSCAN clusters)")
        try:
            fmap = map_into_store(session, sae_row=row, cfg=mcfg)
        except MapError as err:  # a dictionary too small or too dead to map: the pages work without one
            self.say(f"      no map: {err}")
            return
        self.say(f"      {fmap.n_clusters} clusters, {fmap.n_noise} live features in none, {fmap.n_dead} dead left out")


def ensure_account(session: Session) -> str | None:
    """Create the demo's account on first run; its password (shown once), or None when it exists."""
    if crud.find_user(session, name=DEMO_USER) is not None:
        return None
    password = secrets.token_urlsafe(12)
    crud.create_user(session, name=DEMO_USER, password_hash=hash_password(password), role="admin")
    return password


def summary(row: Sae) -> str:
    """The demo SAE's key figures in one line."""
    m = row.eval_metrics or {}

    def fmt(name: str) -> str:
        value = m.get(name)
        return f"{value:.3f}" if isinstance(value, (int, float)) else "?"

    return (f"SAE {row.name!r}: {row.d_sae} features, FVU {fmt('fvu')}, L0 {fmt('l0')}, dead {fmt('dead_fraction')}, "
            f"CE loss recovered {fmt('ce_loss_recovered')}")
