"""Whether a steering run worked: each row's feature effect, coherence and target likelihood, and sweeps.

Every row is read back after it is generated, by a forward over the prompt plus the row's own continuation
with no intervention: the SAE reads the site, and the model scores the text. The KL also needs the steered
model's next-token distributions along the continuation; the generation computed exactly those, so when it
kept them (Generation.logp, asked for by `keep_logp` under a memory budget) they are read back, and only
otherwise does a second forward run under the row's steering. Steering that silently does
nothing shows as an unchanged feature effect and zero KL; steering that wrecks the model, as a perplexity
far above the baseline's. A control row (Steering.control) is measured like any other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .generation import Generation, Limits, Sampling
from .hooks import capture
from .lm import LoadedModel
from .steering import Steering, SteeringError, generate_steered, steer

if TYPE_CHECKING:
    from .saes import SAE

LOGIT_BUDGET = 2**25
"""Logit floats held at once while measuring (128 MiB in float32): rows are measured in chunks under it, so
nine rows of 256 tokens over SmolLM2's 49k-token vocabulary do not need gigabytes."""


KEPT_LOGP_BUDGET = 2**26
"""Log-probability floats a generation may keep for its measures (256 MiB in float32): nine rows of 128
tokens over SmolLM2's 49k-token vocabulary fit; longer runs measure with a second, steered forward."""


def keep_logp(lm: LoadedModel, n_rows: int, sampling: Sampling) -> bool:
    """Whether a generation of `n_rows` rows should keep every token's distribution for measure_rows."""
    return n_rows * sampling.max_new_tokens * lm.model.config.get_text_config().vocab_size <= KEPT_LOGP_BUDGET


@dataclass(frozen=True)
class FeatureEffect:
    """A steered feature's activation on a row's continuation, read by the SAE with no intervention."""

    feature: int
    mean: float
    """Mean activation over the continuation's tokens."""
    fired: float
    """Fraction of the continuation's tokens where it is above zero."""


@dataclass(frozen=True)
class RowMeasures:
    """One row's measured outcome."""

    effects: tuple[FeatureEffect, ...]
    """Each feature the batch's steering touches (its interventions and triggers), in index order."""
    perplexity: float | None
    """exp of the mean negative log-likelihood of the continuation under the unsteered model; None when empty."""
    kl_tokens: tuple[float, ...]
    """Per continuation token: KL(unsteered || steered) of the next-token distributions there; zeros for the
    baseline."""
    target_logprob: float | None
    """Log-probability the row's steered model gives the target text right after the prompt; None without one."""

    @property
    def kl(self) -> float:
        """Mean of the per-token KL (0 for an empty continuation)."""
        return sum(self.kl_tokens) / len(self.kl_tokens) if self.kl_tokens else 0.0


_Reading = tuple[tuple[FeatureEffect, ...], float | None, tuple[float, ...]]
"""A row's effects, perplexity and per-token KL, before the target is added."""


def touched_features(runs: Sequence[Steering | None]) -> list[int]:
    """The features any run intervenes on or is triggered by, sorted (raw directions have no SAE reading)."""
    features = {i.feature for run in runs if run for i in run.interventions if isinstance(i.feature, int)}
    return sorted(features | {run.trigger.feature for run in runs if run and run.trigger})


def encode_target(lm: LoadedModel, target: str) -> list[int]:
    """Token ids of a target text as it would continue the prompt (no BOS); refuses an empty one."""
    target_ids = lm.tokenizer(target, add_special_tokens=False).input_ids
    if not target_ids:
        raise SteeringError("the target text is empty", "target")
    return target_ids


def target_logprobs(
    lm: LoadedModel, sae: SAE, prompt_ids: list[int], runs: Sequence[Steering | None], target_ids: list[int]
) -> list[float]:
    """Each run's log-probability of the target tokens right after the prompt."""
    ids = torch.tensor([prompt_ids + target_ids[:-1]] * len(runs), device=lm.model.device)
    with steer(lm.model, sae, runs, len(prompt_ids)), torch.inference_mode():
        logits = lm.model(input_ids=ids, use_cache=False, logits_to_keep=len(target_ids)).logits
    logp_BLV = torch.log_softmax(logits.float(), dim=-1)
    target_L = torch.tensor(target_ids, device=logp_BLV.device)
    return logp_BLV.gather(-1, target_L.expand(len(runs), -1)[..., None]).squeeze(-1).sum(-1).tolist()


def measure_rows(
    lm: LoadedModel,
    sae: SAE,
    prompt_ids: list[int],
    runs: Sequence[Steering | None],
    generations: Sequence[Generation],
    target_ids: list[int] | None = None,
) -> list[RowMeasures]:
    """Every row's measures (see RowMeasures), given the generations the runs produced from the prompt."""
    if len(runs) != len(generations):
        raise SteeringError(f"{len(runs)} runs but {len(generations)} generations to measure")
    features = touched_features(runs)
    longest = max((len(g.token_ids) for g in generations), default=0)
    width = max(1, LOGIT_BUDGET // (2 * (longest + 1) * lm.model.config.get_text_config().vocab_size))
    rows: list[_Reading] = []
    for start in range(0, len(runs), width):
        chunk = slice(start, start + width)
        rows += _measure_chunk(lm, sae, prompt_ids, runs[chunk], generations[chunk], features)
    targets = target_logprobs(lm, sae, prompt_ids, runs, target_ids) if target_ids else [None] * len(runs)
    return [RowMeasures(*row, target) for row, target in zip(rows, targets)]


def _measure_chunk(
    lm: LoadedModel, sae: SAE, prompt_ids: list[int], runs: Sequence[Steering | None],
    generations: Sequence[Generation], features: list[int],
) -> list[_Reading]:
    """Effects, perplexity and per-token KL of a few rows; continuations are right-padded (causal attention
    keeps padding from reaching the real tokens)."""
    continuations = [g.token_ids for g in generations]
    n_prompt, longest = len(prompt_ids), max(len(c) for c in continuations)
    if longest == 0:
        return [((), None, ()) for _ in continuations]
    ids_BT = torch.tensor([prompt_ids + c + [0] * (longest - len(c)) for c in continuations], device=lm.model.device)
    with capture(lm.model, sae.site_in(lm.model), stop=False) as captured, torch.inference_mode():
        plain_BLV = _next_token_logp(lm, ids_BT, longest)
        x_BLD = captured.tensor()[:, n_prompt:]
        f_BLS = sae.encode(x_BLD.flatten(0, 1).to(sae.W_dec.dtype))[:, features].view(*x_BLD.shape[:2], -1).float()
        kl_BL = _kl_from_unsteered(lm, sae, n_prompt, runs, ids_BT, plain_BLV, [g.logp for g in generations])
        token_logp_BL = plain_BLV.gather(-1, ids_BT[:, n_prompt:, None]).squeeze(-1)
    out: list[_Reading] = []
    for row, continuation in enumerate(continuations):
        n = len(continuation)
        if n == 0:
            out.append(((), None, ()))
            continue
        f_LS = f_BLS[row, :n]
        effects = tuple(FeatureEffect(f, float(f_LS[:, s].mean()), float((f_LS[:, s] > 0).float().mean()))
                        for s, f in enumerate(features))
        out.append((effects, math.exp(-float(token_logp_BL[row, :n].mean())), tuple(kl_BL[row, :n].tolist())))
    return out


def _next_token_logp(lm: LoadedModel, ids_BT: torch.Tensor, n: int) -> torch.Tensor:
    """Log-probabilities [B, n, vocab] the model gives each of the last n tokens (from the position before)."""
    logits = lm.model(input_ids=ids_BT, use_cache=False, logits_to_keep=n + 1).logits[:, :n]
    return torch.log_softmax(logits.float(), dim=-1)


def _kl_from_unsteered(
    lm: LoadedModel, sae: SAE, n_prompt: int, runs: Sequence[Steering | None], ids_BT: torch.Tensor,
    plain_BLV: torch.Tensor, kept: Sequence[torch.Tensor | None],
) -> torch.Tensor:
    """KL(unsteered || steered) [B, L] at each continuation token, from the distributions the generation
    kept; when a steered row has none, the steered rows run again."""
    kl_BL = torch.zeros(plain_BLV.shape[:2], device=plain_BLV.device)
    steered = [r for r, run in enumerate(runs) if run is not None]
    if all(kept[r] is not None for r in steered):
        for r in steered:
            logp_LV = kept[r]
            assert logp_LV is not None
            kl_BL[r, :len(logp_LV)] = _kl(plain_BLV[r, :len(logp_LV)], logp_LV.to(plain_BLV.device))
        return kl_BL
    with steer(lm.model, sae, [runs[r] for r in steered], n_prompt):
        steered_SLV = _next_token_logp(lm, ids_BT[steered], plain_BLV.shape[1])
    kl_BL[steered] = _kl(plain_BLV[steered], steered_SLV)
    return kl_BL


def _kl(p_logp: torch.Tensor, q_logp: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dimension; rounding can make the KL of equal distributions a hair below
    zero, so it is clamped there."""
    return (p_logp.exp() * (p_logp - q_logp)).sum(-1).clamp_min(0.0)


def strongest_within(points: Sequence[SweepPoint], factor: float) -> float | None:
    """The strongest (largest in size) strength whose perplexity is at most `factor` times the baseline's."""
    baseline = points[0].measures.perplexity
    if baseline is None:
        return None
    fluent = [p.strength for p in points[1:]
              if p.strength is not None and p.measures.perplexity is not None
              and p.measures.perplexity <= factor * baseline]
    return max(fluent, key=abs, default=None)


@dataclass(frozen=True)
class SweepPoint:
    """One strength of a sweep: its output and its measures."""

    strength: float | None
    """The value every intervention was given; None for the baseline."""
    generation: Generation
    measures: RowMeasures


@dataclass(frozen=True)
class Sweep:
    """One steering at several strengths, each generated beside the baseline in one batch."""

    steering: Steering
    strengths: tuple[float, ...]

    def __post_init__(self):
        if not self.strengths or not self.steering.interventions:
            raise SteeringError("a sweep needs at least one strength and one intervention", "strengths")
        if all(i.mode == "ablate" for i in self.steering.interventions):
            raise SteeringError("a sweep sets the value of clamp, add or scale interventions; ablate takes none",
                                "strengths")

    @property
    def runs(self) -> list[Steering | None]:
        """The batch's rows: the baseline (None), then the steering at each strength."""
        return [None, *(self.steering.at_strength(s) for s in self.strengths)]

    def score(
        self, lm: LoadedModel, sae: SAE, prompt_ids: list[int], generations: Sequence[Generation],
        target_ids: list[int] | None = None,
    ) -> list[SweepPoint]:
        """Each row's measures, given the rows' generations from `runs`."""
        measures = measure_rows(lm, sae, prompt_ids, self.runs, generations, target_ids)
        return [SweepPoint(s, g, m) for s, g, m in zip([None, *self.strengths], generations, measures)]


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
    """Generate at several strengths in one batch beside the baseline, and measure each row."""
    plan = Sweep(steering, tuple(strengths))
    target_ids = encode_target(lm, target) if target is not None else None
    generations = generate_steered(lm, sae, prompt_ids, plan.runs, sampling, limits,
                                   keep_logp(lm, len(plan.runs), sampling))
    return plan.score(lm, sae, prompt_ids, generations, target_ids)
