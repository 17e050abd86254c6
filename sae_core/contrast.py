"""Which SAE features separate two sets of texts, and the raw direction between them at the SAE's site.

Each text is read as the recording pass reads a context (BOS, then its tokens), the forward stopping at the
site. A text's value for a feature is its mean activation over the text's tokens (BOS left out), so long
and short texts weigh alike; a feature "fires" in a text when it is above zero on any of its tokens. Per
feature the sets are compared by Cohen's d, the difference of the means over the pooled standard deviation;
the pooled deviation is floored at a tenth of the difference, capping |d| at 10, so that a feature firing
faintly in every text of one set and never in the other does not outrank strong separators by a division by
almost nothing. The raw direction is the difference of the sets' mean site activations (the same per-text
means), the contrastive vector of activation addition (Turner et al. 2023).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .data import bos_id
from .hooks import truncated_forward
from .lm import LoadedModel

if TYPE_CHECKING:
    from .saes import SAE

MIN_TEXTS = 2
"""Fewest texts per set: one text has no spread, so no effect size."""
MAX_TOKENS = 256
"""Tokens read per text (after BOS); longer texts are cut."""
BATCH_TOKENS = 4096
"""Tokens per forward, padding included: texts are batched by length under it."""
D_CAP = 10.0
"""The largest |Cohen's d| reported (see the module docstring)."""


class ContrastError(ValueError):
    """Text sets that cannot be contrasted; `field` is the set at fault ("a" or "b")."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class TextSet:
    """One set's per-text readings."""

    means_NF: torch.Tensor
    """Each text's mean activation of every feature."""
    fired_NF: torch.Tensor
    """Whether each feature fires on any token of each text."""
    site_ND: torch.Tensor
    """Each text's mean site activation."""
    tokens: int


@dataclass(frozen=True)
class FeatureContrast:
    """One feature's difference between the sets."""

    feature: int
    mean_a: float
    mean_b: float
    effect: float
    """Cohen's d of A over B (positive: stronger in A), capped at +-D_CAP."""
    fired_a: float
    """Fraction of A's texts it fires in."""
    fired_b: float


@dataclass(frozen=True)
class Contrast:
    """Two sets read by one SAE."""

    a: TextSet
    b: TextSet

    def effects_F(self) -> torch.Tensor:
        """Cohen's d of every feature, A over B."""
        mean_a, mean_b = self.a.means_NF.mean(0), self.b.means_NF.mean(0)
        n_a, n_b = len(self.a.means_NF), len(self.b.means_NF)
        pooled = ((n_a - 1) * self.a.means_NF.var(0) + (n_b - 1) * self.b.means_NF.var(0)) / (n_a + n_b - 2)
        diff = mean_a - mean_b
        sd = torch.maximum(pooled.sqrt(), diff.abs() / D_CAP)
        return torch.where(sd > 0, diff / sd, torch.zeros_like(diff)).clamp(-D_CAP, D_CAP)

    def top(self, n: int) -> list[FeatureContrast]:
        """The n features with the largest |d|, ties (the capped ones) broken by the larger difference of means."""
        effect_F = self.effects_F()
        mean_a, mean_b = self.a.means_NF.mean(0), self.b.means_NF.mean(0)
        fired_a, fired_b = self.a.fired_NF.float().mean(0), self.b.fired_NF.float().mean(0)
        diff_F = (mean_a - mean_b).abs()
        by_diff = diff_F.argsort(descending=True, stable=True)
        order = by_diff[effect_F[by_diff].abs().argsort(descending=True, stable=True)][:n].tolist()
        return [FeatureContrast(f, float(mean_a[f]), float(mean_b[f]), float(effect_F[f]), float(fired_a[f]),
                                float(fired_b[f])) for f in order]

    def direction_D(self) -> torch.Tensor:
        """Mean site activation of A minus that of B."""
        return self.a.site_ND.mean(0) - self.b.site_ND.mean(0)


def read_texts(path: Path) -> list[str]:
    """A set from a text file: one text per line, blank lines left out."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _token_ids(lm: LoadedModel, texts: list[str], field: str) -> list[list[int]]:
    if len(texts) < MIN_TEXTS:
        raise ContrastError(f"set {field.upper()} has {len(texts)} text(s); a contrast needs at least {MIN_TEXTS}",
                            field)
    bos = bos_id(lm.tokenizer)
    ids = [[bos, *lm.tokenizer(t, add_special_tokens=False).input_ids[:MAX_TOKENS]] for t in texts]
    empty = [k for k, row in enumerate(ids) if len(row) == 1]
    if empty:
        raise ContrastError(f"text {empty[0] + 1} of set {field.upper()} is empty", field)
    return ids


def _batches(lengths: list[int]) -> list[list[int]]:
    """Text indices grouped by length so that each batch, padded to its longest, stays under BATCH_TOKENS."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    for k in order:
        if batches and lengths[k] * (len(batches[-1]) + 1) <= BATCH_TOKENS:
            batches[-1].append(k)
        else:
            batches.append([k])
    return batches


@torch.inference_mode()
def read_set(lm: LoadedModel, sae: SAE, texts: list[str], field: str = "a") -> TextSet:
    """Every text of a set through the model up to the site, and the SAE."""
    ids = _token_ids(lm, texts, field)
    site = sae.site_in(lm.model)
    readings: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    for batch in _batches([len(row) for row in ids]):
        longest = len(ids[batch[-1]])
        input_BT = torch.tensor([ids[k] + [0] * (longest - len(ids[k])) for k in batch], device=lm.model.device)
        x_BTD = truncated_forward(lm.model, site, input_BT).to(sae.W_dec.dtype)
        for row, k in enumerate(batch):
            x_TD = x_BTD[row, 1:len(ids[k])]  # right padding never reaches real tokens under causal attention
            f_TF = sae.encode(x_TD)
            readings[k] = (f_TF.mean(0), (f_TF > 0).any(0), x_TD.mean(0))
    means, fired, sites = zip(*(readings[k] for k in range(len(ids))))
    return TextSet(torch.stack(means).float().cpu(), torch.stack(fired).cpu(), torch.stack(sites).float().cpu(),
                   sum(len(row) - 1 for row in ids))


def contrast(lm: LoadedModel, sae: SAE, texts_a: list[str], texts_b: list[str]) -> Contrast:
    """Read both sets; refuses a set of fewer than MIN_TEXTS texts or an empty text, naming the set."""
    _token_ids(lm, texts_b, "b")  # refuse a bad B before spending time on A
    return Contrast(read_set(lm, sae, texts_a, "a"), read_set(lm, sae, texts_b, "b"))
