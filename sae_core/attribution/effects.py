"""Gradients of the metric with respect to every node: at the clean prompt (attribution patching) or averaged
along the straight path from the baseline to the clean prompt (integrated gradients, Sundararajan et al. 2017).

A node's effect is then gradient . (clean - baseline), the first-order estimate of
metric(clean) - metric(node at its baseline); see `nodes.build_nodes`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

from .dictionaries import Dictionary
from .inputs import Inputs
from .states import Rewire, SiteState, States, decompose, replacing, rewired


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


def _grads(leaves: list[tuple[torch.Tensor, torch.Tensor]], embed: torch.Tensor, mean: bool) -> States:
    """The leaves' gradients as States, for one row or averaged over rows (integrated gradients' steps)."""
    def grad(t: torch.Tensor) -> torch.Tensor:
        g = t.grad if t.grad is not None else torch.zeros_like(t)
        return g.mean(0) if mean else g[0]

    return States(grad(embed), tuple(SiteState(grad(f), grad(err)) for f, err in leaves))


def patching(model: PreTrainedModel, dicts: Sequence[Dictionary], inputs: Inputs) -> tuple[States, States, float]:
    """(clean states, their gradients, clean metric) from one forward and one backward through the spliced model.

    Each site passes on decode(f) + err + (x - x.detach()): the value is x, f and err are leaves that
    collect the metric's gradient, and the last term hands earlier layers the model's own gradient, so every
    layer's gradient is the unspliced model's (later SAEs are transparent to earlier nodes).
    """
    leaves: list[tuple[torch.Tensor, torch.Tensor]] = []
    embed: list[torch.Tensor] = []

    def on_embed(e: torch.Tensor) -> torch.Tensor:
        embed.append(_leaf(e))
        return embed[0]

    def on_site(dictionary: Dictionary) -> Rewire:
        def fn(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                f, err = decompose(dictionary.sae, x)
            f, err = _leaf(f), _leaf(err)
            leaves.append((f, err))
            return dictionary.sae.decode(f).to(x.dtype) + err + (x - x.detach())

        return fn

    with torch.enable_grad(), rewired(model, dicts, on_embed, [on_site(d) for d in dicts]):
        value = inputs.metric(model, inputs.ids_T[None])
        value.sum().backward()
    clean = States(embed[0].detach()[0], tuple(SiteState(f.detach()[0], e.detach()[0]) for f, e in leaves))
    return clean, _grads(leaves, embed[0], mean=False), float(value.detach())


def _path(clean: torch.Tensor, patch: torch.Tensor, alphas_S: torch.Tensor) -> torch.Tensor:
    """Leaves [S, ...] on the straight line from patch (alpha 0) to clean (alpha 1)."""
    shape = (-1,) + (1,) * clean.dim()
    return _leaf(patch + alphas_S.view(shape).to(clean.dtype) * (clean - patch))


def integrated(model: PreTrainedModel, dicts: Sequence[Dictionary], inputs: Inputs, clean: States, patch: States,
               steps: int) -> States:
    """Gradients averaged over `steps` midpoints of the path, one layer at a time (Marks et al. 2024).

    Per layer, its nodes' effects then sum to metric(clean) - metric(that layer at its baseline) up to the
    midpoint rule's error, which falls as 1 / steps^2.
    """
    alphas_S = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    ids_ST = inputs.ids_T[None].expand(steps, -1)
    no_sites: list[Rewire | None] = [None] * len(dicts)

    def run(embed: Rewire | None, sites: list[Rewire | None]) -> None:
        with torch.enable_grad(), rewired(model, dicts, embed, sites):
            inputs.metric(model, ids_ST).sum().backward()

    e = _path(clean.embed_TD, patch.embed_TD, alphas_S)
    run(lambda _x: e, no_sites)
    leaves = []
    for i, dictionary in enumerate(dicts):
        f = _path(clean.sites[i].f_TF, patch.sites[i].f_TF, alphas_S)
        err = _path(clean.sites[i].err_TD, patch.sites[i].err_TD, alphas_S)
        sites = list(no_sites)
        sites[i] = replacing(dictionary.sae, f, err)
        run(None, sites)
        leaves.append((f, err))
    return _grads(leaves, e, mean=True)
