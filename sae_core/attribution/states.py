"""Each layer's decomposition of one prompt: token embeddings, and per site the features and the SAE error.

A site's activation is x = decode(f) + err with f = encode(x) and err = x - decode(f), so the spliced model
computes exactly what the model alone does. Splicing is done by `rewired`, which hooks the embedding and
any sites; the hook functions decide what each one does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from ..hooks import StopForward, splice
from ..saes import SAE
from .dictionaries import Dictionary

Rewire = Callable[[torch.Tensor], torch.Tensor | None]
"""A hook function on [batch, seq, d]: a tensor it returns replaces the activation, None leaves it."""


@dataclass(frozen=True)
class SiteState:
    """One site's decomposition of one prompt."""

    f_TF: torch.Tensor
    """Feature activations."""
    err_TD: torch.Tensor
    """The SAE's error, x - decode(f)."""


@dataclass(frozen=True)
class States:
    """The decomposition of one prompt at every layer of the graph."""

    embed_TD: torch.Tensor
    """Output of the token-embedding module."""
    sites: tuple[SiteState, ...]

    def held_before(self, clean: States, first: int) -> States:
        """This baseline with positions before `first` at their clean values: nodes there then change nothing."""
        def held(base: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
            return torch.cat([value[:first], base[first:]])

        return States(held(self.embed_TD, clean.embed_TD),
                      tuple(SiteState(held(b.f_TF, c.f_TF), held(b.err_TD, c.err_TD))
                            for b, c in zip(self.sites, clean.sites, strict=True)))

    def zeros(self) -> States:
        """The zero-ablation baseline: every node at 0 (a site then reads the SAE's b_dec)."""
        return States(torch.zeros_like(self.embed_TD),
                      tuple(SiteState(torch.zeros_like(s.f_TF), torch.zeros_like(s.err_TD)) for s in self.sites))


def encode(sae: SAE, x_BTD: torch.Tensor) -> torch.Tensor:
    """Features [B, T, F] of activations [B, T, D] (the SAEs encode rows)."""
    batch, seq, width = x_BTD.shape
    return sae.encode(x_BTD.reshape(batch * seq, width).to(sae.W_dec.dtype)).view(batch, seq, -1)


def decompose(sae: SAE, x_BTD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(f, err) of activations, err = x - decode(f)."""
    f_BTF = encode(sae, x_BTD)
    return f_BTF, x_BTD - sae.decode(f_BTF).to(x_BTD.dtype)


def replacing(sae: SAE, f: torch.Tensor, err: torch.Tensor) -> Rewire:
    """A site hook that passes on decode(f) + err in place of the activation (f, err: leaves to differentiate)."""
    return lambda x: sae.decode(f).to(x.dtype) + err


@contextmanager
def rewired(model: PreTrainedModel, dicts: Sequence[Dictionary], embed: Rewire | None,
            sites: Sequence[Rewire | None]) -> Iterator[None]:
    """Hook the embedding output and each dictionary's site with the given functions (None: not hooked)."""
    with ExitStack() as stack:
        if embed is not None:
            handle = model.get_input_embeddings().register_forward_hook(lambda _m, _a, out: embed(out))
            stack.callback(handle.remove)
        for dictionary, fn in zip(dicts, sites, strict=True):
            if fn is not None:
                stack.enter_context(splice(model, dictionary.site, fn))
        yield


@torch.no_grad()
def capture_states(model: PreTrainedModel, dicts: Sequence[Dictionary], ids_T: torch.Tensor) -> States:
    """The decomposition of a prompt, from one forward that stops after the deepest site."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str, stop: bool) -> Rewire:
        def fn(x: torch.Tensor) -> None:
            seen[name] = x[0]
            if stop:
                raise StopForward

        return fn

    site_fns = [keep(str(i), i == len(dicts) - 1) for i in range(len(dicts))]
    try:
        with rewired(model, dicts, keep("embed", False), site_fns):
            model(input_ids=ids_T[None], use_cache=False)
    except StopForward:
        pass
    sites = []
    for i, dictionary in enumerate(dicts):
        f_BTF, err_BTD = decompose(dictionary.sae, seen[str(i)][None])
        sites.append(SiteState(f_BTF[0], err_BTD[0]))
    return States(seen["embed"], tuple(sites))
