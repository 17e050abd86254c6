"""A model with its attention patterns and normalisation scales frozen at their values on one prompt.

With both frozen, everything between the MLPs is linear in the residual stream (Ameisen et al. 2025, the
local replacement model): attention mixes the value vectors by fixed weights, and each norm multiplies its
input by fixed per-element gains. The first forward under `frozen` records the patterns and gains; every
later one replays them, so a forward with a changed input computes the frozen linearisation exactly (what
an edge's finite difference is checked against) and its gradient is the linear map's transpose.

Patterns are replayed through a registered attention implementation, so any model whose attention goes
through transformers' attention interface is covered; norms are the RMSNorm family (Llama, Qwen, Mistral,
Gemma), whose output is its input times per-element gains. Other norms are refused with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel

FROZEN_ATTENTION = "saescope_frozen"


class FreezeError(ValueError):
    """The model has a part the freezing does not cover; the message names it."""


@dataclass
class Freeze:
    """One prompt's attention patterns and norm gains, recorded by the first forward, replayed after it."""

    patterns: dict[nn.Module, torch.Tensor] = field(default_factory=dict)
    """Attention module -> softmax pattern [1, heads, T, T]."""
    gains: dict[nn.Module, torch.Tensor] = field(default_factory=dict)
    """Norm module -> output / input, per element [1, ..., D]."""
    recording: bool = True


_ACTIVE: ContextVar[Freeze | None] = ContextVar("saescope_freeze", default=None)


def _pattern(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
    """Softmax attention weights [B, H, Tq, Tk], causal when no mask is given (grouped keys repeated per head)."""
    key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    scores = (query @ key.transpose(-1, -2)).float() * scaling
    n_q, n_k = scores.shape[-2:]
    if mask is None:
        future = torch.ones(n_q, n_k, dtype=torch.bool, device=scores.device).triu(n_k - n_q + 1)
        scores = scores.masked_fill(future, float("-inf"))
    elif mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask[..., :n_k], float("-inf"))
    else:
        scores = scores + mask[..., :n_k].float()
    return scores.softmax(-1).to(query.dtype)


def _attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
               **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The registered implementation: records a pattern on the first forward, replays it on later ones."""
    freeze = _ACTIVE.get()
    if freeze is None:
        raise FreezeError("the frozen attention ran outside `frozen`")
    if freeze.recording:
        pattern = _pattern(query, key, attention_mask, scaling if scaling is not None else query.shape[-1] ** -0.5)
        freeze.patterns[module] = pattern[:1].detach()
    pattern = freeze.patterns[module].expand(query.shape[0], -1, -1, -1)
    value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
    return (pattern @ value).transpose(1, 2).contiguous(), pattern


AttentionInterface.register(FROZEN_ATTENTION, _attention)


def norm_modules(model: nn.Module) -> list[nn.Module]:
    """Every normalisation module; refuses a model with norms the freezing cannot replay."""
    norms = [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]
    others = sorted({type(m).__name__ for m in model.modules()
                     if isinstance(m, nn.LayerNorm | nn.GroupNorm) or type(m).__name__.endswith("LayerNorm")})
    if others or not norms:
        raise FreezeError(f"the replacement model freezes RMSNorm scales; this model normalises with "
                          f"{', '.join(others) or 'no RMSNorm'}")
    return norms


def _norm_hook(freeze: Freeze):
    def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        if freeze.recording:
            # Where an input element is exactly 0 the gain is unknowable and the output is 0 too; 0 keeps it so.
            freeze.gains[module] = torch.where(x != 0, output / torch.where(x != 0, x, 1), 0)[:1].detach()
        return x * freeze.gains[module]

    return hook


@contextmanager
def frozen(model: PreTrainedModel, freeze: Freeze) -> Iterator[Freeze]:
    """Run forwards with `freeze`'s patterns and gains (recorded by the first forward while `recording`)."""
    previous = model.config._attn_implementation
    norms = norm_modules(model)
    token = _ACTIVE.set(freeze)
    with ExitStack() as stack:
        stack.callback(_ACTIVE.reset, token)
        model.set_attn_implementation(FROZEN_ATTENTION)
        stack.callback(model.set_attn_implementation, previous)
        for module in norms:
            stack.callback(module.register_forward_hook(_norm_hook(freeze)).remove)
        yield freeze
