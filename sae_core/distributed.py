"""torch.distributed for saescope: process-group setup from torchrun's environment, and the few collectives.

A process started without torchrun is a world of one whose collectives are identities, so library code
calls them unconditionally and a single process runs the very code every rank of a distributed run runs.
The backend follows the device: NCCL for CUDA, gloo for CPU (and for tests on this CPU-only machine).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from .devices import resolve_device

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank, world size and the device it computes on."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0 writes every file a run leaves behind, so ranks never race on one path."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def share(self, n: int) -> slice:
        """This rank's contiguous share of `n` items (`n` must divide evenly: every rank does equal work)."""
        if n % self.world:
            raise ValueError(f"{n} does not split evenly over {self.world} processes; choose a multiple of {self.world}")
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    # --- collectives (identities in a world of one) --------------------------------------------

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The elementwise sum over ranks, as a new tensor."""
        return self._reduce(t, dist.ReduceOp.SUM)

    def max(self, t: torch.Tensor) -> torch.Tensor:
        return self._reduce(t, dist.ReduceOp.MAX)

    def min(self, t: torch.Tensor) -> torch.Tensor:
        return self._reduce(t, dist.ReduceOp.MIN)

    def any(self, mask: torch.Tensor) -> torch.Tensor:
        """Elementwise OR of a bool tensor over ranks (gloo reduces integers, not bools)."""
        return self.max(mask.to(torch.int32)).bool() if self.active else mask

    def _reduce(self, t: torch.Tensor, op: dist.ReduceOp.RedOpType) -> torch.Tensor:
        if not self.active:
            return t
        out = t.detach().clone()
        dist.all_reduce(out, op=op)
        return out

    def mean_grads_(self, params: list[torch.nn.Parameter]) -> None:
        """Average the gradients of `params` over ranks in one flat all-reduce (one message, not one per tensor)."""
        grads = [p.grad for p in params if p.grad is not None]
        if not self.active or not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))

    def broadcast_(self, tensors: list[torch.Tensor]) -> None:
        """Overwrite `tensors` with rank 0's values, in place."""
        if self.active:
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (small picklable values: scales, paths, manifests)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_cat(self, t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Every rank's `t`, concatenated along `dim` in rank order; shapes must agree off `dim`.

        Sizes along `dim` may differ between ranks: each is padded to the largest for the collective.
        """
        if not self.active:
            return t
        t = t.movedim(dim, 0).contiguous()
        sizes = [int(s) for s in self._all_gather(torch.tensor([t.shape[0]], device=t.device))]
        padded = t.new_zeros((max(sizes), *t.shape[1:]))
        padded[: t.shape[0]] = t
        parts = self._all_gather(padded)
        return torch.cat([p[:n] for p, n in zip(parts, sizes)]).movedim(0, dim)

    def _all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        as_int = t.dtype == torch.bool
        src = t.to(torch.uint8) if as_int else t
        parts = [torch.empty_like(src) for _ in range(self.world)]
        dist.all_gather(parts, src)
        return [p.bool() for p in parts] if as_int else parts

    def top_mask(self, vals: torch.Tensor, k: int) -> torch.Tensor:
        """Bool mask of this rank's entries of `vals` among the k largest along the last dim, over all ranks.

        The exact global top-k from each rank's candidates: every rank's candidates (equal counts) are
        gathered, one top-k picks the winners, and each rank keeps its own. The gathered tensor is the same
        on every rank, so every rank agrees on the winners, ties included.
        """
        width = vals.shape[-1]
        gathered = self.gather_cat(vals, dim=-1)
        if gathered.shape[-1] != width * self.world:
            raise ValueError("top_mask needs the same number of candidates on every rank")
        won = torch.zeros_like(gathered, dtype=torch.bool)
        won.scatter_(-1, gathered.topk(k, dim=-1, sorted=False).indices, True)
        return won[..., self.rank * width : (self.rank + 1) * width]

    def centred_ss(self, x_ND: torch.Tensor) -> torch.Tensor:
        """Sum of squared deviations from the mean row, over the rows of every rank (a batch variance's numerator)."""
        n = self.sum(torch.tensor(float(len(x_ND)), device=x_ND.device))
        mean_D = self.sum(x_ND.detach().float().sum(0)) / n
        return self.sum((x_ND.detach().float() - mean_D).pow(2).sum())

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher speaking its protocol) started this process."""
    return all(v in os.environ for v in TORCHRUN_VARIABLES)


def init_distributed(device: str = "auto", require: bool = False) -> Dist:
    """Join torchrun's process group when launched by torchrun; otherwise a world of one.

    `require` (the CLI's --distributed) makes a missing torchrun environment an error rather than a
    silent single-process run.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if not launched_by_torchrun():
        if require:
            raise ValueError("--distributed needs torchrun's environment: launch with torchrun --nproc-per-node N")
        return Dist(device=dev)
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), dev)


def close_distributed() -> None:
    """Leave the process group (torch warns at exit about a group never destroyed)."""
    if dist.is_initialized():
        dist.destroy_process_group()
