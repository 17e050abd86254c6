"""The local replacement model of one prompt, and its direct-effect edges (Ameisen et al. 2025, circuit-tracer).

Every MLP is replaced by its layer's transcoder plus an error term that makes the output exact on this prompt,
and attention patterns and norm scales are frozen (`frozen`). The model is then linear in the residual stream
from three kinds of source: each active feature (its activation times its decoder row, a constant on the
prompt), each (layer, position) error, and each token embedding. A target is a feature's encoder
pre-activation or a logit less the mean logit; its direct effect from a source is the source's value dotted
with the target's gradient at the source's place, and one backward pass per target gives it from every
source at once, batched over targets (each batch row holds one target).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from ..saes import SAE
from ..sites import Site, num_layers, site_module
from .frozen import Freeze, frozen
from .nodes import EMBEDDING, ERROR, FEATURE

LOGIT = 3
"""The kind of a logit target, beside nodes.py's feature, error and embedding kinds."""

__all__ = ["EMBEDDING", "ERROR", "FEATURE", "LOGIT", "ReplacementError", "ReplacementModel", "Sources", "Target"]


class ReplacementError(ValueError):
    """A transcoder set that cannot replace this model's MLPs; the message says which and why."""


def check_transcoders(model: nn.Module, transcoders: Sequence[SAE]) -> list[SAE]:
    """One transcoder per layer, in layer order, each reading that layer's MLP input at the model's width."""
    by_layer: dict[int, SAE] = {}
    for tc in transcoders:
        site = tc.cfg.provenance.site
        if not tc.transcodes or site is None or site.kind != "mlp_in":
            raise ReplacementError(f"{tc.cfg.architecture} at {site.name if site else 'no site'} is not a "
                                   "transcoder of an MLP; the replacement model needs one per layer")
        if site.layer in by_layer:
            raise ReplacementError(f"two transcoders read layers.{site.layer}.mlp_in")
        by_layer[site.layer] = tc
    missing = [layer for layer in range(num_layers(model)) if layer not in by_layer]
    if missing:
        raise ReplacementError(f"no transcoder for layer(s) {', '.join(map(str, missing))}: the replacement "
                               f"model replaces every MLP, so it needs a transcoder per layer")
    return [by_layer[layer].eval().requires_grad_(False) for layer in sorted(by_layer)]


def _mlp_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """The hidden states an MLP was called with, positionally or by keyword."""
    return args[0] if args else next(iter(kwargs.values()))


@dataclass(frozen=True)
class Sources:
    """Every source node of the prompt: active features (layer by layer), then errors, then embeddings."""

    layer_S: torch.Tensor
    pos_S: torch.Tensor
    feature_S: torch.Tensor
    """Feature index; -1 for error and embedding nodes."""
    kind_S: torch.Tensor
    value_S: torch.Tensor
    """A feature's activation; the norm of an error or embedding vector."""

    def __len__(self) -> int:
        return len(self.kind_S)


@dataclass(frozen=True)
class Target:
    """A node whose incoming direct effects are computed: a feature's pre-activation or a logit."""

    kind: int
    """FEATURE or LOGIT."""
    layer: int
    pos: int
    index: int
    """Feature index, or the logit's token id."""


class ReplacementModel:
    """A model, a transcoder per layer and one prompt: the prompt's activations, errors and frozen state."""

    def __init__(self, model: PreTrainedModel, transcoders: Sequence[SAE], ids_T: torch.Tensor, zero_bos: bool = False):
        """`zero_bos`: the prompt starts with a special token (BOS) whose MLP outputs are large and the same for
        every prompt, so its features and errors are held constant instead of being nodes (circuit-tracer's
        zero_bos): they would otherwise lead every graph while saying nothing about the prompt."""
        self.model, self.ids_T, self.zero_bos = model, ids_T, zero_bos
        self.transcoders = check_transcoders(model, transcoders)
        self.mlps = [site_module(model, Site(layer, "mlp_in")) for layer in range(len(self.transcoders))]
        self.freeze = Freeze()
        self.acts: list[torch.Tensor] = []
        """Per layer, the feature activations [T, F] on the prompt."""
        self.errors: list[torch.Tensor] = []
        """Per layer, MLP output - transcoder output [T, D]."""
        self.embed_TD = torch.empty(0)
        with torch.no_grad():
            self.logits_TV = self._forward(record=True)[0][0]
        self.freeze.recording = False
        self.decoded = [self._decode(layer, acts) for layer, acts in enumerate(self.acts)]
        self.error_nodes = [self._error_nodes(err_TD) for err_TD in self.errors]
        """Per layer, the error nodes' vectors [T, D]: the errors, zero at a held-constant BOS."""

    def _decode(self, layer: int, acts_TF: torch.Tensor) -> torch.Tensor:
        """The features' part of a transcoder's output [T, D]: acts @ W_dec + b_dec, computed on the active ones."""
        tc = self.transcoders[layer]
        pos, feat = acts_TF.nonzero(as_tuple=True)
        out = tc.b_dec.float().expand(acts_TF.shape[0], -1).clone()
        out.index_add_(0, pos, acts_TF[pos, feat, None].float() * tc.W_dec[feat].float())
        return out

    @contextmanager
    def _hooks(self, record: bool, decoded: Sequence[torch.Tensor], embed_TD: torch.Tensor | None,
               errors: Sequence[torch.Tensor], probes: Sequence[torch.Tensor] | None,
               inputs: list[torch.Tensor]) -> Iterator[None]:
        """The embedding and every MLP rewired: recording, or the replacement with the given values."""
        def embed_hook(_m: nn.Module, _a: Any, out: torch.Tensor) -> torch.Tensor:
            if record:
                self.embed_TD = out[0].detach().float()
            value = out if embed_TD is None else embed_TD.to(out.dtype).expand(out.shape[0], -1, -1)
            return value + probes[0] if probes is not None else value

        def mlp_hook(layer: int):
            def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: torch.Tensor) -> torch.Tensor:
                x = _mlp_input(args, kwargs)
                tc = self.transcoders[layer]
                if record:
                    f_TF = tc.encode(x[0].to(tc.W_dec.dtype))
                    self.acts.append(f_TF.detach())
                    self.errors.append((out[0].float() - tc.add_skip(tc.decode(f_TF), x[0]).float()).detach())
                    return out
                inputs.append(x)
                y = decoded[layer] + errors[layer] + tc.add_skip(torch.zeros_like(decoded[layer]), x.float())
                return (y + probes[layer + 1] if probes is not None else y).to(out.dtype)

            return hook

        with ExitStack() as stack:
            stack.enter_context(frozen(self.model, self.freeze))
            stack.callback(self.model.get_input_embeddings().register_forward_hook(embed_hook).remove)
            for layer, mlp in enumerate(self.mlps):
                stack.callback(mlp.register_forward_hook(mlp_hook(layer), with_kwargs=True).remove)
            yield

    def _forward(self, record: bool = False, rows: int = 1, acts: Sequence[torch.Tensor] | None = None,
                 errors: Sequence[torch.Tensor] | None = None, embed_TD: torch.Tensor | None = None,
                 probes: Sequence[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits [rows, T, V] and each layer's MLP input, with features, errors or embeddings replaced."""
        decoded = [] if record else self.decoded if acts is None else [self._decode(i, a) for i, a in enumerate(acts)]
        inputs: list[torch.Tensor] = []
        with self._hooks(record, decoded, embed_TD, errors or self.errors, probes, inputs):
            logits = self.model(input_ids=self.ids_T[None].expand(rows, -1), use_cache=False).logits
        return logits.float(), inputs

    @torch.no_grad()
    def run(self, acts: Sequence[torch.Tensor] | None = None, errors: Sequence[torch.Tensor] | None = None,
            embed_TD: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The frozen replacement model on the prompt: logits [T, V] and each layer's MLP input [T, D], with any
        layer's activations, errors or the embeddings replaced (interventions with attention frozen)."""
        logits, inputs = self._forward(acts=acts, errors=errors, embed_TD=embed_TD)
        return logits[0], [x[0].float() for x in inputs]

    @torch.no_grad()
    def intervene(self, pins: Mapping[tuple[int, int, int], float], freeze_attention: bool = True) -> torch.Tensor:
        """Logits [T, V] with features pinned: {(layer, position, feature): value}. Every MLP is its transcoder
        re-encoding its (changed) input, with the pins applied and the prompt's error added, so features
        downstream of a pin respond to it; attention patterns and norm scales stay at the prompt's values
        when `freeze_attention`, else the model recomputes them. Without pins this is the model itself."""
        by_layer: dict[int, list[tuple[int, int, float]]] = {}
        for (layer, pos, feature), value in pins.items():
            if not (0 <= layer < len(self.transcoders) and 0 <= pos < len(self.ids_T)
                    and 0 <= feature < self.transcoders[layer].cfg.d_sae):
                raise ReplacementError(f"no feature {feature} at layer {layer}, position {pos} to pin")
            by_layer.setdefault(layer, []).append((pos, feature, value))

        def mlp_hook(layer: int):
            def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: torch.Tensor) -> torch.Tensor:
                x = _mlp_input(args, kwargs)[0]
                tc = self.transcoders[layer]
                f_TF = tc.encode(x.to(tc.W_dec.dtype))
                for pos, feature, value in by_layer.get(layer, []):
                    f_TF[pos, feature] = value
                return (tc.add_skip(tc.decode(f_TF), x).float() + self.errors[layer]).to(out.dtype)[None]

            return hook

        with ExitStack() as stack:
            if freeze_attention:
                stack.enter_context(frozen(self.model, self.freeze))
            for layer, mlp in enumerate(self.mlps):
                stack.callback(mlp.register_forward_hook(mlp_hook(layer), with_kwargs=True).remove)
            return self.model(input_ids=self.ids_T[None], use_cache=False).logits[0].float()

    def sources(self, upto: int | None = None) -> Sources:
        """Every source node at positions up to `upto` (default: all)."""
        last = len(self.ids_T) - 1 if upto is None else upto
        first = 1 if self.zero_bos else 0
        parts = []
        for layer, acts_TF in enumerate(self.acts):
            pos, feat = acts_TF[first: last + 1].nonzero(as_tuple=True)
            pos = pos + first
            parts.append((torch.full_like(pos, layer), pos, feat, torch.full_like(pos, FEATURE),
                          acts_TF[pos, feat].float()))
        positions = torch.arange(last + 1)
        for layer in range(len(self.errors)):
            parts.append((torch.full_like(positions, layer), positions, torch.full_like(positions, -1),
                          torch.full_like(positions, ERROR), self.error_nodes[layer][: last + 1].norm(dim=-1)))
        parts.append((torch.full_like(positions, -1), positions, torch.full_like(positions, -1),
                      torch.full_like(positions, EMBEDDING), self.embed_TD[: last + 1].norm(dim=-1)))
        return Sources(*(torch.cat(column) for column in zip(*parts, strict=True)))

    def target_value(self, target: Target, logits_TV: torch.Tensor, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """A target's value in a forward's output: the pre-activation, or the logit less the mean logit."""
        if target.kind == LOGIT:
            return logits_TV[target.pos, target.index] - logits_TV[target.pos].mean()
        tc = self.transcoders[target.layer]
        return inputs[target.layer][target.pos].to(tc.W_enc.dtype) @ tc.W_enc[:, target.index] + tc.b_enc[target.index]

    def edges_into(self, targets: Sequence[Target], sources: Sources) -> torch.Tensor:
        """Direct effects [len(targets), len(sources)] from one batched forward and backward."""
        rows, width = len(targets), self.embed_TD.shape[-1]
        probes = [torch.zeros(rows, len(self.ids_T), width, requires_grad=True) for _ in range(len(self.mlps) + 1)]
        with torch.enable_grad():
            logits, inputs = self._forward(rows=rows, probes=probes)
            seed = torch.stack([self.target_value(t, logits[r], [x[r] for x in inputs])
                                for r, t in enumerate(targets)]).sum()
            grads = torch.autograd.grad(seed, probes, allow_unused=True)
        return self._weights(grads, sources, rows)

    def _weights(self, grads: Sequence[torch.Tensor | None], sources: Sources, rows: int) -> torch.Tensor:
        """Each source's value dotted with each row's gradient at the source's place (0 where no path)."""
        out = torch.zeros(rows, len(sources))
        layer, pos, feat, kind = sources.layer_S, sources.pos_S, sources.feature_S, sources.kind_S
        for n, grad in enumerate(grads):
            if grad is None:
                continue
            here = layer == n - 1
            if n == 0:
                at = (kind == EMBEDDING).nonzero()[:, 0]
                out[:, at] = (grad[:, pos[at]] * self.embed_TD[pos[at]]).sum(-1)
                continue
            tc = self.transcoders[n - 1]
            at = (here & (kind == FEATURE)).nonzero()[:, 0]
            direction = tc.W_dec[feat[at]].float() * sources.value_S[at, None]
            out[:, at] = (grad[:, pos[at]] * direction).sum(-1)
            at = (here & (kind == ERROR)).nonzero()[:, 0]
            out[:, at] = (grad[:, pos[at]] * self.error_nodes[n - 1][pos[at]]).sum(-1)
        return out

    def _error_nodes(self, err_TD: torch.Tensor) -> torch.Tensor:
        """The error, zeroed at a held-constant BOS (every error node keeps its place in the graph, the BOS one
        with no edges)."""
        if not self.zero_bos:
            return err_TD
        return torch.cat([torch.zeros_like(err_TD[:1]), err_TD[1:]])
