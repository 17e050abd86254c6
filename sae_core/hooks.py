"""Context managers that read or rewrite the activation at a site; handles are always removed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .sites import Site, site_module


class StopForward(Exception):
    """Raised inside a hook to end the forward pass once the site has been read."""


class Captured:
    """Holds the activation a `capture` hook saw, [batch, seq, d]."""

    value: torch.Tensor | None = None

    def tensor(self) -> torch.Tensor:
        """The activation seen; an error if the site's hook never ran (a forward that skipped the site)."""
        if self.value is None:
            raise RuntimeError("the site's hook never ran")
        return self.value


def _first(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a module output that may be a tensor or a tuple headed by one."""
    return output if isinstance(output, torch.Tensor) else output[0]


def _replace_first(output: Any, tensor: torch.Tensor) -> Any:
    """The same output with its hidden-state tensor swapped, keeping any tuple tail."""
    if isinstance(output, torch.Tensor):
        return tensor
    return (tensor, *output[1:])


def _register(module: nn.Module, site: Site, fn: Callable[[torch.Tensor], torch.Tensor | None]):
    """Attach `fn` to the site; a tensor it returns replaces the activation, None leaves it."""
    if site.reads_input:

        def pre_hook(_module, args, kwargs):
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
            new = fn(kwargs[key])
            return None if new is None else (args, {**kwargs, key: new})

        return module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def hook(_module, _args, output):
        new = fn(_first(output))
        return None if new is None else _replace_first(output, new)

    return module.register_forward_hook(hook)


@contextmanager
def capture_sites(model: nn.Module, sites: Sequence[Site], stop: bool = True) -> Iterator[list[Captured]]:
    """Record each site's activation during a forward (one Captured per site, in order); with `stop`, the
    forward ends as soon as the last of them has been read.

    Stopping saves the compute of every later layer (and of the unembedding), which dominates when the
    sites are early in the model; one forward serves every site, however many.
    """
    captured = [Captured() for _ in sites]

    def reader(slot: Captured) -> Callable[[torch.Tensor], None]:
        def read(x: torch.Tensor) -> None:
            slot.value = x
            if stop and all(c.value is not None for c in captured):
                raise StopForward

        return read

    handles = [_register(site_module(model, site), site, reader(slot)) for site, slot in zip(sites, captured)]
    try:
        yield captured
    except StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture(model: nn.Module, site: Site, stop: bool = True) -> Iterator[Captured]:
    """Record one site's activation during a forward; with `stop`, the forward ends right there."""
    with capture_sites(model, (site,), stop) as (captured,):
        yield captured


@contextmanager
def splice(model: nn.Module, site: Site, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Iterator[None]:
    """Replace the site's activation [batch, seq, d] by `fn` of it for every forward in the block (None: keep it)."""
    handle = _register(site_module(model, site), site, fn)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def splice_from(model: nn.Module, source: Site, target: Site,
                fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None]) -> Iterator[None]:
    """Replace the activation at `target` by `fn(activation at source, activation at target)` for every forward in
    the block; `source` must be computed first (or be `target`). A transcoder replaces an MLP's output so."""
    if source.depth > target.depth:
        raise ValueError(f"{source.name} is computed after {target.name}: a splice can only read what came before")
    read = Captured()

    def remember(x: torch.Tensor) -> None:
        read.value = x

    handles = [_register(site_module(model, source), source, remember)]
    handles.append(_register(site_module(model, target), target, lambda y: fn(read.tensor(), y)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def truncated_forward_sites(model: nn.Module, sites: Sequence[Site], input_ids: torch.Tensor) -> list[torch.Tensor]:
    """Each site's activation for a batch of token ids, from one forward that computes no layer past the deepest."""
    with capture_sites(model, sites, stop=True) as captured:
        model(input_ids=input_ids, use_cache=False)
    return [slot.tensor() for slot in captured]


def truncated_forward(model: nn.Module, site: Site, input_ids: torch.Tensor) -> torch.Tensor:
    """The site's activation for a batch of token ids, computing no layer past the site."""
    return truncated_forward_sites(model, (site,), input_ids)[0]
