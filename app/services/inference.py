"""Run an SAE's model on typed text: per-token feature activations and next-token probabilities.

Models and SAEs are loaded on first use and kept for the life of the process (loading SmolLM2 takes
about 20 s; a forward over a sentence takes milliseconds), one copy per worker process. Every forward
("test it", text search, each token of a steering run) takes the model in turn, first come first served.
A model can also be loaded ahead of use on a background thread (at server start-up, or when a page first
asks for it); each model's status says whether it is loading, ready or failed, so pages can say so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch

from sae_core.data import CorpusError, bos_id
from sae_core.hooks import capture
from sae_core.lm import LoadedModel, ModelLoadError, load_model
from sae_core.records import token_pieces
from sae_core.saes import SAE, SAEFormatError
from sae_core.sites import Site, SiteError

from ..models import Sae
from ..pipeline import read_sae
from .heap import freeze_long_lived

log = logging.getLogger(__name__)

MAX_TEXT_TOKENS = 512
"""Longest text run at once: enough for a paragraph, short enough to keep a request quick on a CPU."""


class InferenceUnavailable(RuntimeError):
    """The SAE's model or weights cannot be loaded here (moved files, no model spec, wrong width)."""


@dataclass(frozen=True)
class TextActivations:
    """One text through the model: tokens (BOS first), SAE activations and the likeliest next tokens."""

    token_ids: list[int]
    pieces: list[str]
    acts_TF: torch.Tensor
    next_tokens: list[list[tuple[str, float]]]
    """Per position: the model's top next tokens with their probabilities."""

    def feature(self, index: int) -> list[float]:
        """One feature's activation on each token."""
        return self.acts_TF[:, index].tolist()

    def top_features(self, n: int) -> list[list[tuple[int, float]]]:
        """Per token: the `n` features that fire most, strongest first (zeros left out)."""
        values_TN, index_TN = self.acts_TF.topk(min(n, self.acts_TF.shape[1]), dim=1)
        return [[(i, v) for i, v in zip(idx, val) if v > 0]
                for idx, val in zip(index_TN.tolist(), values_TN.tolist())]


def model_spec(sae: Sae) -> str:
    """What loads an SAE's model: the spec it was recorded with, else its model name (a hub id)."""
    return sae.model_spec or sae.model_name


LoadPhase = Literal["idle", "loading", "ready", "failed"]


@dataclass(frozen=True)
class ModelStatus:
    """Where one model stands in this process: not loaded yet (idle), loading (or queued to load), ready, or
    failed, with the first line of why."""

    spec: str
    phase: LoadPhase
    error: str = ""
    started: float = 0.0
    """time.monotonic() when loading began (or was queued)."""

    @property
    def ready(self) -> bool:
        return self.phase == "ready"

    @property
    def waited_s(self) -> float:
        """Seconds since loading began; 0 unless loading."""
        return time.monotonic() - self.started if self.phase == "loading" else 0.0


@dataclass
class RunnableSae:
    """A store SAE ready to run: its model (shared by every SAE of that model), weights and site."""

    lm: LoadedModel
    sae: SAE
    site: Site


class FairLock:
    """A lock granted in the order it was asked for.

    threading.Lock wakes an arbitrary waiter, and a thread that releases it and asks again at once (a
    generation between two tokens) nearly always wins, so a "test it" forward would still wait for the
    whole run; here it gets the next turn.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._queue: deque[object] = deque()
        self._held = False

    def acquire(self) -> None:
        with self._changed:
            ticket = object()
            self._queue.append(ticket)
            try:
                while self._held or self._queue[0] is not ticket:
                    self._changed.wait()
            finally:
                self._queue.remove(ticket)
            self._held = True

    def release(self) -> None:
        with self._changed:
            self._held = False
            self._changed.notify_all()

    def waiting(self) -> int:
        """How many threads wait for the lock now."""
        return len(self._queue)

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *_exc: object) -> None:
        self.release()


class ModelCache:
    """Models and SAEs by spec and path, loaded once; one lock, granted in turn, keeps loading and forwards
    one at a time (hooks a forward splices into a shared model must not be seen by another)."""

    def __init__(self, device: str = "cpu", n_next: int = 5):
        self.device = device
        self.n_next = n_next
        self._models: dict[str, LoadedModel] = {}
        self._saes: dict[tuple[str, str], RunnableSae] = {}
        self._lock = FairLock()
        self._status: dict[str, ModelStatus] = {}
        self._queueing = threading.Lock()

    def status(self, spec: str) -> ModelStatus:
        """The model's status now; read without waiting for the model lock, which a load holds for its length."""
        if spec in self._models:
            return ModelStatus(spec, "ready")
        return self._status.get(spec, ModelStatus(spec, "idle"))

    def _model(self, spec: str) -> LoadedModel:
        """The model, loaded now if it is not yet (the caller holds the lock); a failure is kept in its status."""
        if spec not in self._models:
            started = self._status[spec].started if self.status(spec).phase == "loading" else time.monotonic()
            self._status[spec] = ModelStatus(spec, "loading", started=started)
            try:
                self._models[spec] = load_model(spec, device=self.device)
                freeze_long_lived()  # the model stays for the process's life
            except Exception as err:
                self._status[spec] = ModelStatus(spec, "failed", error=(str(err).splitlines() or [repr(err)])[0])
                raise
            self._status.pop(spec)
        return self._models[spec]

    def load_models(self, specs: Iterable[str]) -> None:
        """Load each model in turn (on the caller's thread); a failure is logged and kept in its status, and the
        next model is still loaded."""
        for spec in specs:
            try:
                with self._lock:
                    self._model(spec)
            except Exception as err:  # a bad spec is one line; anything else is a bug worth its traceback
                log.error("could not load the model %r: %s", spec, self.status(spec).error,
                          exc_info=not isinstance(err, ModelLoadError))

    def load_in_background(self, specs: Iterable[str]) -> threading.Thread | None:
        """Start loading those of the models that are neither loaded nor loading, on a thread of their own; they
        read as loading at once. None when there is nothing to load."""
        with self._queueing:
            todo = [s for s in dict.fromkeys(specs) if self.status(s).phase in ("idle", "failed")]
            for spec in todo:
                self._status[spec] = ModelStatus(spec, "loading", started=time.monotonic())
        if not todo:
            return None
        thread = threading.Thread(target=self.load_models, args=(todo,), name="model-load", daemon=True)
        thread.start()
        return thread

    def _load(self, sae: Sae) -> RunnableSae:
        spec = model_spec(sae)
        key = (spec, sae.source_path)
        if key not in self._saes:
            try:
                lm = self._model(spec)
                loaded = read_sae(sae.source_path).sae.to(self.device)
                self._saes[key] = RunnableSae(lm, loaded, loaded.site_in(lm.model))
            except (ModelLoadError, SAEFormatError, SiteError, OSError) as err:
                raise InferenceUnavailable(f"cannot run SAE {sae.name!r} here: {str(err).splitlines()[0]}") from err
        return self._saes[key]

    def load(self, sae: Sae) -> RunnableSae:
        """The SAE and its model, loaded on first use; the tokenizer may be used without holding the model."""
        with self._lock:
            return self._load(sae)

    @contextmanager
    def hold(self, sae: Sae) -> Iterator[RunnableSae]:
        """The model to oneself for a block; keep it short, since every other forward waits for it."""
        with self._lock:
            yield self._load(sae)

    @contextmanager
    def hold_all(self, saes: list[Sae]) -> Iterator[list[RunnableSae]]:
        """Several SAEs (of one model) loaded and the model to oneself, for a run that splices them all in."""
        with self._lock:
            yield [self._load(sae) for sae in saes]

    @contextmanager
    def turn(self) -> Iterator[None]:
        """The loaded models to oneself for one step (a generation's forward); others queue in order."""
        with self._lock:
            yield

    @torch.no_grad()
    def run(self, sae: Sae, text: str) -> TextActivations:
        """Tokenise `text` after a BOS, as the recording pass does, and run the model and the SAE on it."""
        with self.hold(sae) as loaded:
            tokenizer = loaded.lm.tokenizer
            try:
                bos = bos_id(tokenizer)
            except CorpusError as err:
                raise InferenceUnavailable(str(err)) from err
            ids = [bos, *tokenizer(text, add_special_tokens=False).input_ids][:MAX_TEXT_TOKENS]
            ids_1T = torch.tensor([ids], device=self.device)
            with capture(loaded.lm.model, loaded.site, stop=False) as captured:
                logits_1TV = loaded.lm.model(input_ids=ids_1T, use_cache=False).logits
            acts_TF = loaded.sae.encode(captured.tensor()[0].to(loaded.sae.W_dec.dtype)).float().cpu()
            probs_TK, next_TK = logits_1TV[0].float().softmax(-1).topk(self.n_next, dim=-1)
            text_of = token_pieces(tokenizer, torch.cat([ids_1T.flatten(), next_TK.flatten()]))
        next_tokens = [[(text_of[t], p) for t, p in zip(row_t, row_p)]
                       for row_t, row_p in zip(next_TK.tolist(), probs_TK.tolist())]
        return TextActivations(ids, [text_of[i] for i in ids], acts_TF, next_tokens)
