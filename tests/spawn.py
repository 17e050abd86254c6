"""Local processes the tests start: ranks joined over gloo as torchrun would launch them, and servers."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
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


@dataclass
class Server:
    """A server process a test started on a port; `output` holds everything it printed once it is stopped."""

    process: subprocess.Popen[str]
    port: int
    output: str = ""

    def page(self, path: str = "/", timeout: float = 120) -> httpx.Response | None:
        """The server's answer on `path` once it listens; None if it exits or stays silent past `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)
            except httpx.TransportError:
                time.sleep(0.5)
        return None


@contextmanager
def serving(command: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[Server]:
    """Run `command`, a server listening on `port`, for the block; then stop it and keep its output."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = Server(process, port)
    try:
        yield server
    finally:
        process.terminate()
        server.output = process.communicate(timeout=30)[0]
