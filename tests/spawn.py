"""Run a function on several local processes joined over gloo, as torchrun would launch them."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.multiprocessing as mp

from sae_core.distributed import close_distributed, init_distributed


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist = init_distributed("cpu")
    try:
        fn(dist, *args)
    finally:
        close_distributed()


def run_ranks(world: int, fn: Callable[..., Any], *args: Any) -> None:
    """Call `fn(dist, *args)` on `world` spawned processes; `fn` must be importable (module level).

    Results come back through files the function writes; a failing rank fails the call.
    """
    mp.spawn(_rank_main, args=(world, free_port(), fn, args), nprocs=world, join=True)
