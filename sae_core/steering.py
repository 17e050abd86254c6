"""Interventions on SAE features, and generation and strength sweeps under them.

The encoder reads its site's activation x; the features f = encode(x) become f' under the interventions,
and decode(f') - decode(f) is added where the decoder writes: at the same site for an SAE, so x becomes
x + decode(f') - decode(f); at the MLP's output for a transcoder, which reads the MLP's input. Either way
what the model computed there is kept (for an SAE its reconstruction error x - decode(f)), so a run without
interventions is exactly the unsteered model. The decoder is affine, so the difference is
(f'_S - f_S) @ W_dec[S] over the touched features S alone; the encoder still runs in full, since a TopK
SAE's activations depend on every pre-activation.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Literal, cast

import torch

from .generation import (
    Generation,
    GenerationError,
    Limits,
    Sampling,
    TokenEvent,
    Turn,
    check_request,
    collect,
    stream,
)
from .hooks import splice_from
from .lm import LoadedModel

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from .saes import SAE


class SteeringError(GenerationError):
    """An intervention the SAE cannot carry out; a GenerationError, so one except clause serves a request.

    `field` names the request field at fault (e.g. "trigger.feature") when one is, for a 422 that says which.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


Mode = Literal["clamp", "add", "scale", "ablate", "cap", "rescale"]
Positions = Literal["all", "prompt", "generated"]
Control = Literal["random", "flipped"]


@dataclass(frozen=True)
class _Rule:
    """A mode as q' = min(a * q + b, cap), q being the feature's SAE activation or, with `projection`, the
    activation's component along the feature's unit decoder direction; q' - q is added along that direction."""

    a: float
    b: float
    cap: float = math.inf
    projection: bool = False


MODES: dict[Mode, Callable[[float], _Rule]] = {
    "clamp": lambda value: _Rule(0.0, value),
    "add": lambda value: _Rule(1.0, value),
    "scale": lambda value: _Rule(value, 0.0),
    "ablate": lambda value: _Rule(0.0, 0.0),
    # Projection cap and component rescale act on x . u for the unit direction u, leaving x's orthogonal rest.
    "cap": lambda value: _Rule(1.0, 0.0, value, projection=True),
    "rescale": lambda value: _Rule(value, 0.0, projection=True),
}

# Which positions a run steers, as (prompt tokens, generated tokens).
POSITIONS: dict[Positions, tuple[bool, bool]] = {
    "all": (True, True),
    "prompt": (True, False),
    "generated": (False, True),
}


@dataclass(frozen=True)
class Direction:
    """A raw direction in the site's activation space (e.g. a contrastive mean difference), steerable like a
    feature: add adds value times the vector; cap and rescale act on the component along its unit vector."""

    name: str
    vector: tuple[float, ...]
    """d_in floats."""


DIRECTION_MODES: tuple[Mode, ...] = ("add", "cap", "rescale")
"""The modes a raw direction takes: the others need an SAE activation to set."""


@dataclass(frozen=True)
class Intervention:
    """One feature's (or raw direction's) change."""

    feature: int | Direction
    """Index of the SAE feature, or a raw direction."""
    mode: Mode
    """clamp (set to value), add (add value: a multiple of the decoder direction), scale (multiply), ablate;
    cap (limit the activation's component along the unit decoder direction to value), rescale (multiply
    that component by value)."""
    value: float = 0.0
    """The mode's operand; ignored by ablate."""

    def __post_init__(self):
        if self.mode not in MODES:
            raise SteeringError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if isinstance(self.feature, Direction) and self.mode not in DIRECTION_MODES:
            raise SteeringError(f"direction {self.feature.name!r} has no SAE activation to {self.mode}; "
                                f"choose one of {', '.join(DIRECTION_MODES)}")

    @classmethod
    def parse(cls, spec: str) -> Intervention:
        """Read `FEATURE:MODE[:VALUE]`, e.g. `1234:clamp:8` or `77:ablate`."""
        parts = spec.split(":")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            return cls(int(parts[0]), cast(Mode, parts[1]), float(parts[2]) if len(parts) == 3 else 0.0)
        except ValueError:
            raise SteeringError(f"cannot read intervention {spec!r}; write FEATURE:MODE[:VALUE]") from None

    @property
    def reads(self) -> Literal["feature", "projection", "nothing"]:
        """What the change is computed from: the SAE activation, the component along the unit direction, or
        nothing (adding along a raw direction)."""
        if MODES[self.mode](self.value).projection:
            return "projection"
        return "nothing" if isinstance(self.feature, Direction) else "feature"


@dataclass(frozen=True)
class Trigger:
    """Steer only where a feature fires: the interventions apply at a position only when this feature's SAE
    activation there (before any change) exceeds the threshold."""

    feature: int
    """Index of the trigger feature."""
    threshold: float = 0.0
    """The activation it must exceed."""
    stop: bool = False
    """End the row (finished "trigger") at the first token drawn after the trigger fires on the row's latest
    token."""


@dataclass(frozen=True)
class Steering:
    """What one run does to the SAE's features."""

    interventions: tuple[Intervention, ...]
    """Features changed together; each feature at most once."""
    positions: Positions = "all"
    """Which tokens are steered: all, prompt (only the prompt's) or generated (only new ones)."""
    trigger: Trigger | None = None
    """Steer only where this feature fires (conditional steering); None steers every chosen position."""
    control: Control | None = None
    """A control run: each change is added along a random unit direction scaled to the decoder direction's
    norm ("random") or subtracted ("flipped"), with the coefficient the real run computes at each token."""
    control_seed: int = 0
    """Seed of a random control's directions."""

    def __post_init__(self):
        if self.positions not in POSITIONS:
            raise SteeringError(f"unknown positions {self.positions!r}; choose one of {', '.join(POSITIONS)}")
        features = [i.feature for i in self.interventions]
        if len(set(features)) != len(features):
            shown = [f if isinstance(f, int) else f.name for f in features]
            raise SteeringError(f"a feature appears twice among the interventions: {shown}")

    def at_strength(self, strength: float) -> Steering:
        """The same steering with every intervention's value set to `strength`."""
        return replace(self, interventions=tuple(replace(i, value=strength) for i in self.interventions))

    def as_control(self, control: Control, seed: int = 0) -> Steering:
        """The same steering as a control run (see `control`)."""
        return replace(self, control=control, control_seed=seed)


@dataclass(frozen=True)
class _Plan:
    """The batch's rows as tensors over the slots S: the union of (feature or direction, what it reads) pairs."""

    features_S: torch.Tensor
    """Each slot's feature index (0 for a raw direction's, which reads no SAE activation)."""
    reads_S: torch.Tensor
    """0: the SAE activation, 1: the component along the unit direction, 2: nothing (q = 0)."""
    units_SD: torch.Tensor
    """Each slot's unit direction (what a projection slot reads)."""
    a_BS: torch.Tensor
    b_BS: torch.Tensor
    cap_BS: torch.Tensor
    dirs_BSD: torch.Tensor
    """The direction each row adds a slot's change along: the decoder row or raw vector, or a control's."""
    prompt_B: torch.Tensor
    """Whether each row steers prompt tokens."""
    generated_B: torch.Tensor
    """Whether each row steers generated tokens."""
    trigger_B: torch.Tensor
    """Each row's trigger feature, -1 for none."""
    threshold_B: torch.Tensor


READS = {"feature": 0, "projection": 1, "nothing": 2}


def check_features(n_features: int, features: Sequence[int | Direction], field: str = "interventions") -> None:
    """Refuse a feature index outside the SAE, naming the request field."""
    bad = [f for f in features if isinstance(f, int) and not 0 <= f < n_features]
    if bad:
        raise SteeringError(f"feature {bad[0]} is out of range: this SAE has features 0..{n_features - 1}", field)


def _control_dirs(run: Steering, dirs_SD: torch.Tensor, slots: list[int]) -> torch.Tensor:
    """A control row's directions: the real ones negated, or random unit directions of the same norms."""
    out_SD = dirs_SD.clone()
    if run.control == "flipped":
        out_SD[slots] = -dirs_SD[slots]
    elif run.control == "random":
        generator = torch.Generator().manual_seed(run.control_seed)
        r_SD = torch.randn(len(slots), dirs_SD.shape[1], generator=generator, dtype=torch.float64)
        r_SD = r_SD / r_SD.norm(dim=1, keepdim=True) * dirs_SD[slots].double().norm(dim=1, keepdim=True).cpu()
        out_SD[slots] = r_SD.to(dirs_SD.device, dirs_SD.dtype)
    return out_SD


def _slot_vectors(sae: SAE, keys: Sequence[tuple[int | Direction, str]]) -> torch.Tensor:
    """Each slot's decoder row or raw vector [S, D]; refuses a raw vector of the wrong width."""
    W_dec = sae.W_dec
    rows = []
    for target, _ in keys:
        if isinstance(target, int):
            rows.append(W_dec[target])
            continue
        if len(target.vector) != W_dec.shape[1]:
            raise SteeringError(f"direction {target.name!r} is {len(target.vector)} wide; this SAE's site is "
                                f"{W_dec.shape[1]} wide", "interventions")
        rows.append(torch.tensor(target.vector, device=W_dec.device, dtype=W_dec.dtype))
    return torch.stack(rows) if rows else W_dec[:0]


NOT_ON_A_TRANSCODER = {
    "projection": "cap and rescale read the activation's component along a decoder direction, which lies in the "
                  "MLP's output while a transcoder reads the MLP's input",
    "nothing": "a raw direction is a vector in the space the transcoder reads (the MLP's input), but its changes go "
               "to the MLP's output",
}
"""Why an intervention that reads other than a feature's activation (see Intervention.reads) has no meaning on a
transcoder, whose encoder and decoder live in different spaces."""


def _refuse_on_transcoder(sae: SAE, runs: Sequence[Steering | None]) -> None:
    """Refuse cap, rescale and raw directions on a transcoder (see NOT_ON_A_TRANSCODER), naming the field."""
    if not sae.transcodes:
        return
    for i in (i for run in runs if run for i in run.interventions):
        if i.reads in NOT_ON_A_TRANSCODER:
            target = f"feature {i.feature}" if isinstance(i.feature, int) else f"direction {i.feature.name!r}"
            raise SteeringError(f"{i.mode} on {target} cannot steer a transcoder ({sae.cfg.architecture}): "
                                f"{NOT_ON_A_TRANSCODER[i.reads]}; steer its features with clamp, add, scale or ablate",
                                "interventions")


def _plan(sae: SAE, runs: Sequence[Steering | None]) -> _Plan:
    """Compile the rows' steerings; a row without interventions gets a = 1, b = 0 and no positions."""
    _refuse_on_transcoder(sae, runs)
    n_features = sae.W_dec.shape[0]
    check_features(n_features, [i.feature for run in runs if run for i in run.interventions])
    check_features(n_features, [run.trigger.feature for run in runs if run and run.trigger], "trigger.feature")
    keys = list(dict.fromkeys((i.feature, i.reads) for run in runs if run for i in run.interventions))
    column = {key: s for s, key in enumerate(keys)}
    device, dtype = sae.W_dec.device, sae.W_dec.dtype
    features_S = torch.tensor([f if isinstance(f, int) else 0 for f, _ in keys], dtype=torch.long, device=device)
    reads_S = torch.tensor([READS[r] for _, r in keys], dtype=torch.long, device=device)
    W_SD = _slot_vectors(sae, keys)
    units_SD = W_SD / W_SD.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    dirs_SD = torch.where((reads_S == READS["projection"])[:, None], units_SD, W_SD)
    n_rows, n_slots = len(runs), len(keys)
    a_BS, b_BS = torch.ones(n_rows, n_slots), torch.zeros(n_rows, n_slots)
    cap_BS = torch.full((n_rows, n_slots), math.inf)
    where = torch.zeros(n_rows, 2, dtype=torch.bool)
    trigger_B, threshold_B = torch.full((n_rows,), -1, dtype=torch.long), torch.zeros(n_rows)
    dirs = [dirs_SD] * n_rows
    for row, run in enumerate(runs):
        if not run or not run.interventions:
            continue
        where[row] = torch.tensor(POSITIONS[run.positions])
        if run.trigger:
            trigger_B[row], threshold_B[row] = run.trigger.feature, run.trigger.threshold
        slots = []
        for i in run.interventions:
            rule = MODES[i.mode](i.value)
            s = column[(i.feature, i.reads)]
            a_BS[row, s], b_BS[row, s], cap_BS[row, s] = rule.a, rule.b, rule.cap
            slots.append(s)
        if run.control:
            dirs[row] = _control_dirs(run, dirs_SD, slots)
    return _Plan(
        features_S, reads_S, units_SD,
        a_BS.to(device, dtype), b_BS.to(device, dtype), cap_BS.to(device, dtype),
        torch.stack(dirs) if n_rows else torch.zeros(0, n_slots, sae.W_dec.shape[1], device=device, dtype=dtype),
        where[:, 0].to(device), where[:, 1].to(device), trigger_B.to(device), threshold_B.to(device, dtype),
    )


class _Intervene:
    """The splice function; counts the tokens it has seen to know each one's absolute position.

    It reads the activation the encoder reads and adds the change to the one the decoder writes (see
    `_steering_hooks`). With a KV cache the first forward holds the prompt and each later one only the new
    token, so the count is what tells prompt from generated tokens across steps. `fired_B` says, after each
    forward, whether each row's trigger fired on the row's latest token (what a stopping trigger ends the row on).
    """

    def __init__(self, sae: SAE, plan: _Plan, prompt_len: int):
        self.sae, self.plan, self.prompt_len = sae, plan, prompt_len
        self.seen = 0
        self.fired_B = torch.zeros(len(plan.a_BS), dtype=torch.bool)

    def __call__(self, x_BTD: torch.Tensor, y_BTD: torch.Tensor) -> torch.Tensor | None:
        """`y_BTD` plus the change the features of `x_BTD` get at the steered tokens; None where none is steered."""
        n_rows, n_tokens, _ = x_BTD.shape
        if n_rows != len(self.plan.a_BS):
            raise SteeringError(f"the forward has {n_rows} rows but {len(self.plan.a_BS)} runs were planned")
        in_prompt_T = torch.arange(self.seen, self.seen + n_tokens, device=x_BTD.device) < self.prompt_len
        self.seen += n_tokens
        mask_BT = torch.where(in_prompt_T, self.plan.prompt_B[:, None], self.plan.generated_B[:, None])
        self.fired_B = torch.zeros(n_rows, dtype=torch.bool)
        if not mask_BT.any():
            return None
        out_BTD = y_BTD.clone()
        out_BTD[mask_BT] = y_BTD[mask_BT] + self._delta(x_BTD, mask_BT).to(y_BTD.dtype)
        return out_BTD

    def _delta(self, x_BTD: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
        """The change [N, D] at the steered tokens: each slot's q' - q along its row's direction, encoding only
        those tokens."""
        plan, W_dec = self.plan, self.sae.W_dec
        x_ND = x_BTD[mask_BT].to(W_dec.dtype)
        rows_N = mask_BT.nonzero()[:, 0]
        f_NF = self.sae.encode(x_ND)
        reads_S = plan.reads_S
        q_NS = torch.where(reads_S == READS["projection"], x_ND @ plan.units_SD.T,
                           torch.where(reads_S == READS["feature"], f_NF[:, plan.features_S], 0.0))
        new_NS = torch.minimum(plan.a_BS[rows_N] * q_NS + plan.b_BS[rows_N], plan.cap_BS[rows_N])
        fires_N = self._fires(f_NF, rows_N, mask_BT)
        d_NS = torch.where(fires_N[:, None], new_NS - q_NS, torch.zeros_like(q_NS))
        delta_ND = torch.zeros_like(x_ND)
        for row in rows_N.unique().tolist():
            at_N = rows_N == row
            delta_ND[at_N] = d_NS[at_N] @ plan.dirs_BSD[row]
        return delta_ND

    def _fires(self, f_NF: torch.Tensor, rows_N: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
        """Which steered tokens pass their row's trigger (all of them for rows without one); notes fired_B."""
        trigger_N = self.plan.trigger_B[rows_N]
        value_N = f_NF.gather(1, trigger_N.clamp_min(0)[:, None]).squeeze(1)
        fires_N = (trigger_N < 0) | (value_N > self.plan.threshold_B[rows_N])
        last_BT = torch.zeros_like(mask_BT)
        last_BT[:, -1] = True
        latest_N = last_BT[mask_BT]
        self.fired_B[rows_N[latest_N & fires_N & (trigger_N >= 0)].cpu()] = True
        return fires_N


def _steering_hooks(model: PreTrainedModel, sae: SAE, intervene: _Intervene) -> Callable[[], AbstractContextManager[None]]:
    """What hooks `intervene` in for a block of forwards: it reads the site the encoder reads and rewrites the one
    the decoder writes (the same site for an SAE; for a transcoder the MLP's output, its own output kept).

    The sites are resolved here, once, so an SAE that does not fit the model fails before any forward.
    """
    site = sae.site_in(model)
    return partial(splice_from, model, site, sae.output_site(site), intervene)


@contextmanager
def steer(model: PreTrainedModel, sae: SAE, runs: Sequence[Steering | None], prompt_len: int) -> Iterator[None]:
    """Apply one steering per batch row to every forward in the block; a None row is left untouched.

    Positions are counted from the block's first forward, so the block must hold one batch of
    sequences, fed whole or incrementally with a KV cache; `prompt_len` tokens are the prompt.
    """
    with _steering_hooks(model, sae, _Intervene(sae, _plan(sae, runs), prompt_len))():
        yield


def stream_steered(
    lm: LoadedModel,
    sae: SAE,
    prompt_ids: list[int],
    runs: Sequence[Steering | None],
    sampling: Sampling,
    limits: Limits = Limits(),
    cancel: threading.Event | None = None,
    turn: Turn = nullcontext,
    keep_logp: bool = False,
) -> Iterator[TokenEvent]:
    """Stream tokens of one row per run (None for a baseline) from one prompt under one seed.

    Bad inputs raise here, before any token. The hooks are spliced inside `turn()` for each forward and
    removed before it is left, so a forward someone else runs between two tokens never sees them.
    `keep_logp`: see generation.stream (the steered rows' distributions, which measuring reads).
    """
    check_request(lm.model, len(prompt_ids), len(runs), sampling, limits)
    intervene = _Intervene(sae, _plan(sae, runs), len(prompt_ids))
    hooks = _steering_hooks(lm.model, sae, intervene)
    stops_B = torch.tensor([bool(run and run.trigger and run.trigger.stop) for run in runs])

    @contextmanager
    def steered_turn() -> Iterator[None]:
        with turn(), hooks():
            yield

    def stopped() -> list[bool]:
        return (intervene.fired_B & stops_B).tolist()

    return stream(lm.model, lm.tokenizer, prompt_ids, len(runs), sampling, cancel, steered_turn,
                  stopped if stops_B.any() else None, keep_logp)


def generate_steered(
    lm: LoadedModel,
    sae: SAE,
    prompt_ids: list[int],
    runs: Sequence[Steering | None],
    sampling: Sampling,
    limits: Limits = Limits(),
    keep_logp: bool = False,
) -> list[Generation]:
    """The whole output of each run, for callers that do not stream."""
    return collect(stream_steered(lm, sae, prompt_ids, runs, sampling, limits, keep_logp=keep_logp), len(runs))
