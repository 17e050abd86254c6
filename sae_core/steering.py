"""Interventions on SAE features at the SAE's site, and generation and strength sweeps under them.

At the site the activation x becomes x + decode(f') - decode(f), with f = encode(x) and f' the features
after the interventions. The SAE's reconstruction error x - decode(f) is kept, so a run without
interventions is exactly the unsteered model. The decoder is affine, so the difference is
(f'_S - f_S) @ W_dec[S] over the touched features S alone; the encoder still runs in full, since a TopK
SAE's activations depend on every pre-activation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
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
from .hooks import splice
from .lm import LoadedModel

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from .saes import SAE


class SteeringError(GenerationError):
    """An intervention the SAE cannot carry out; a GenerationError, so one except clause serves a request."""


Mode = Literal["clamp", "add", "scale", "ablate"]
Positions = Literal["all", "prompt", "generated"]

# Each mode is the affine map f' = a * f + b, as (a, b) from the intervention's value.
MODES: dict[Mode, Callable[[float], tuple[float, float]]] = {
    "clamp": lambda value: (0.0, value),
    "add": lambda value: (1.0, value),
    "scale": lambda value: (value, 0.0),
    "ablate": lambda value: (0.0, 0.0),
}

# Which positions a run steers, as (prompt tokens, generated tokens).
POSITIONS: dict[Positions, tuple[bool, bool]] = {
    "all": (True, True),
    "prompt": (True, False),
    "generated": (False, True),
}


@dataclass(frozen=True)
class Intervention:
    """One feature's change."""

    feature: int
    """Index of the SAE feature."""
    mode: Mode
    """clamp (set to value), add (add value: a multiple of the decoder direction), scale (multiply), ablate."""
    value: float = 0.0
    """The mode's operand; ignored by ablate."""

    def __post_init__(self):
        if self.mode not in MODES:
            raise SteeringError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")

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


@dataclass(frozen=True)
class Steering:
    """What one run does to the SAE's features."""

    interventions: tuple[Intervention, ...]
    """Features changed together; each feature at most once."""
    positions: Positions = "all"
    """Which tokens are steered: all, prompt (only the prompt's) or generated (only new ones)."""

    def __post_init__(self):
        if self.positions not in POSITIONS:
            raise SteeringError(f"unknown positions {self.positions!r}; choose one of {', '.join(POSITIONS)}")
        features = [i.feature for i in self.interventions]
        if len(set(features)) != len(features):
            raise SteeringError(f"a feature appears twice among the interventions: {features}")

    def at_strength(self, strength: float) -> Steering:
        """The same steering with every intervention's value set to `strength`."""
        return replace(self, interventions=tuple(replace(i, value=strength) for i in self.interventions))


@dataclass(frozen=True)
class _Plan:
    """The interventions of a batch's rows as tensors over the union S of touched features."""

    features_S: torch.Tensor
    a_BS: torch.Tensor
    b_BS: torch.Tensor
    prompt_B: torch.Tensor
    """Whether each row steers prompt tokens."""
    generated_B: torch.Tensor
    """Whether each row steers generated tokens."""


def _plan(sae: SAE, runs: Sequence[Steering | None]) -> _Plan:
    """Compile the rows' steerings; a row without interventions gets a = 1, b = 0 and no positions."""
    n_features = sae.W_dec.shape[0]
    features = sorted({i.feature for run in runs if run for i in run.interventions})
    bad = [f for f in features if not 0 <= f < n_features]
    if bad:
        raise SteeringError(f"feature {bad[0]} is out of range: this SAE has features 0..{n_features - 1}")
    column = {f: s for s, f in enumerate(features)}
    a_BS = torch.ones(len(runs), len(features))
    b_BS = torch.zeros(len(runs), len(features))
    where = torch.zeros(len(runs), 2, dtype=torch.bool)
    for row, run in enumerate(runs):
        if not run or not run.interventions:
            continue
        where[row] = torch.tensor(POSITIONS[run.positions])
        for i in run.interventions:
            a_BS[row, column[i.feature]], b_BS[row, column[i.feature]] = MODES[i.mode](i.value)
    device, dtype = sae.W_dec.device, sae.W_dec.dtype
    return _Plan(
        torch.tensor(features, dtype=torch.long, device=device),
        a_BS.to(device, dtype),
        b_BS.to(device, dtype),
        where[:, 0].to(device),
        where[:, 1].to(device),
    )


class _Intervene:
    """The splice function; counts the tokens it has seen to know each one's absolute position.

    With a KV cache the first forward holds the prompt and each later one only the new token, so the
    count is what tells prompt from generated tokens across steps.
    """

    def __init__(self, sae: SAE, plan: _Plan, prompt_len: int):
        self.sae, self.plan, self.prompt_len = sae, plan, prompt_len
        self.seen = 0

    def __call__(self, x_BTD: torch.Tensor) -> torch.Tensor | None:
        n_rows, n_tokens, _ = x_BTD.shape
        if n_rows != len(self.plan.a_BS):
            raise SteeringError(f"the forward has {n_rows} rows but {len(self.plan.a_BS)} runs were planned")
        in_prompt_T = torch.arange(self.seen, self.seen + n_tokens, device=x_BTD.device) < self.prompt_len
        self.seen += n_tokens
        mask_BT = torch.where(in_prompt_T, self.plan.prompt_B[:, None], self.plan.generated_B[:, None])
        if not mask_BT.any():
            return None
        return self._apply(x_BTD, mask_BT)

    def _apply(self, x_BTD: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
        """Add (f'_S - f_S) @ W_dec[S] to the steered tokens, encoding only those tokens."""
        plan, W_dec = self.plan, self.sae.W_dec
        x_ND = x_BTD[mask_BT]
        f_NS = self.sae.encode(x_ND.to(W_dec.dtype))[:, plan.features_S]
        rows_N = mask_BT.nonzero()[:, 0]
        d_NS = plan.a_BS[rows_N] * f_NS + plan.b_BS[rows_N] - f_NS
        out_BTD = x_BTD.clone()
        out_BTD[mask_BT] = x_ND + (d_NS @ W_dec[plan.features_S]).to(x_BTD.dtype)
        return out_BTD


@contextmanager
def steer(model: PreTrainedModel, sae: SAE, runs: Sequence[Steering | None], prompt_len: int) -> Iterator[None]:
    """Apply one steering per batch row to every forward in the block; a None row is left untouched.

    Positions are counted from the block's first forward, so the block must hold one batch of
    sequences, fed whole or incrementally with a KV cache; `prompt_len` tokens are the prompt.
    """
    with splice(model, sae.site_in(model), _Intervene(sae, _plan(sae, runs), prompt_len)):
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
) -> Iterator[TokenEvent]:
    """Stream tokens of one row per run (None for a baseline) from one prompt under one seed.

    Bad inputs raise here, before any token. The hooks are spliced inside `turn()` for each forward and
    removed before it is left, so a forward someone else runs between two tokens never sees them.
    """
    check_request(lm.model, len(prompt_ids), len(runs), sampling, limits)
    site, intervene = sae.site_in(lm.model), _Intervene(sae, _plan(sae, runs), len(prompt_ids))

    @contextmanager
    def steered_turn() -> Iterator[None]:
        with turn(), splice(lm.model, site, intervene):
            yield

    return stream(lm.model, lm.tokenizer, prompt_ids, len(runs), sampling, cancel, steered_turn)


def generate_steered(
    lm: LoadedModel,
    sae: SAE,
    prompt_ids: list[int],
    runs: Sequence[Steering | None],
    sampling: Sampling,
    limits: Limits = Limits(),
) -> list[Generation]:
    """The whole output of each run, for callers that do not stream."""
    return collect(stream_steered(lm, sae, prompt_ids, runs, sampling, limits), len(runs))


@dataclass(frozen=True)
class SweepPoint:
    """One strength of a sweep: its output and its measured effect."""

    strength: float | None
    """The value every intervention was given; None for the baseline."""
    generation: Generation
    kl: float
    """Mean KL(baseline || steered) of the next-token distributions along the baseline's continuation."""
    target_logprob: float | None
    """Log-probability of the target text right after the prompt; None without a target."""


def _scored_logits(
    lm: LoadedModel, sae: SAE, runs: Sequence[Steering | None], prompt_ids: list[int], continuation: list[int]
) -> torch.Tensor:
    """Log-probabilities [rows, len(continuation), vocab] each run gives the continuation's tokens in turn."""
    ids = torch.tensor([prompt_ids + continuation[:-1]] * len(runs), device=lm.model.device)
    with steer(lm.model, sae, runs, len(prompt_ids)), torch.inference_mode():
        logits = lm.model(input_ids=ids, use_cache=False, logits_to_keep=len(continuation)).logits
    return torch.log_softmax(logits.float(), dim=-1)


def measure(
    lm: LoadedModel,
    sae: SAE,
    prompt_ids: list[int],
    runs: Sequence[Steering | None],
    baseline: Generation,
    target_ids: list[int] | None = None,
) -> tuple[list[float], list[float] | None]:
    """Per run: mean KL from the baseline run along `baseline`'s tokens, and the target's log-probability.

    Runs[0] must be the baseline (None), whose KL is 0 by construction.
    """
    if runs[0] is not None:
        raise SteeringError("the first run of a measurement must be the baseline (None)")
    logp_BKV = _scored_logits(lm, sae, runs, prompt_ids, baseline.token_ids)
    kl_B = (logp_BKV[0].exp() * (logp_BKV[0] - logp_BKV)).sum(-1).mean(-1)
    if not target_ids:
        return kl_B.tolist(), None
    logp_BLV = _scored_logits(lm, sae, runs, prompt_ids, target_ids)
    target_L = torch.tensor(target_ids, device=logp_BLV.device)
    logprob_B = logp_BLV.gather(-1, target_L.expand(len(runs), -1)[..., None]).squeeze(-1).sum(-1)
    return kl_B.tolist(), logprob_B.tolist()


def encode_target(lm: LoadedModel, target: str) -> list[int]:
    """Token ids of a target text as it would continue the prompt (no BOS); refuses an empty one."""
    target_ids = lm.tokenizer(target, add_special_tokens=False).input_ids
    if not target_ids:
        raise SteeringError("the target text is empty")
    return target_ids


@dataclass(frozen=True)
class Sweep:
    """One steering at several strengths, each generated beside the baseline in one batch."""

    steering: Steering
    strengths: tuple[float, ...]

    def __post_init__(self):
        if not self.strengths or not self.steering.interventions:
            raise SteeringError("a sweep needs at least one strength and one intervention")
        if all(i.mode == "ablate" for i in self.steering.interventions):
            raise SteeringError("a sweep sets the value of clamp, add or scale interventions; ablate takes none")

    @property
    def runs(self) -> list[Steering | None]:
        """The batch's rows: the baseline (None), then the steering at each strength."""
        return [None, *(self.steering.at_strength(s) for s in self.strengths)]

    def score(
        self, lm: LoadedModel, sae: SAE, prompt_ids: list[int], generations: Sequence[Generation],
        target_ids: list[int] | None = None,
    ) -> list[SweepPoint]:
        """Each row's measured effect (see measure), given the rows' generations from `runs`."""
        kls, logprobs = measure(lm, sae, prompt_ids, self.runs, generations[0], target_ids)
        return [
            SweepPoint(s, g, kl, logprobs[i] if logprobs else None)
            for i, (s, g, kl) in enumerate(zip([None, *self.strengths], generations, kls))
        ]


def sweep(
    lm: LoadedModel,
    sae: SAE,
    prompt_ids: list[int],
    steering: Steering,
    strengths: Sequence[float],
    sampling: Sampling,
    limits: Limits = Limits(),
    target: str | None = None,
) -> list[SweepPoint]:
    """Generate at several strengths in one batch beside the baseline, and measure each one's effect."""
    plan = Sweep(steering, tuple(strengths))
    generations = generate_steered(lm, sae, prompt_ids, plan.runs, sampling, limits)
    target_ids = encode_target(lm, target) if target is not None else None
    return plan.score(lm, sae, prompt_ids, generations, target_ids)
