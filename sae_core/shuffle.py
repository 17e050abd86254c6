"""A bounded shuffle buffer over row chunks: every row once per epoch, in an order set by (seed, row position).

Each epoch cuts the chunks into pieces of at most `PIECE_ROWS` rows, puts the pieces of the whole source in
a seeded order, and fills the buffer with consecutive pieces of that order until the next would overflow
it: a window. A window's rows are emitted in a seeded permutation, then the buffer is refilled. A window
thus mixes pieces from all over the source (not a few neighbouring shards), while memory holds one buffer
of `buffer_rows` rows whatever the source's size. Every window's size follows from the chunks' row counts
alone, so resuming at a row position reads only the window that position falls in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

PIECE_ROWS = 1024
"""Rows per piece: one positioned read (1.2 MB at width 576 in bf16); small enough to mix a window well."""


@dataclass(frozen=True)
class Piece:
    """Rows [start, stop) of chunk `chunk`."""

    chunk: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def permutation(n: int, *key: int) -> torch.Tensor:
    """A permutation of range(n) that depends only on the integers in `key`."""
    state = np.random.SeedSequence(list(key)).generate_state(2)
    generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randperm(n, generator=generator)


def cut_pieces(chunk_rows: Sequence[int], piece_rows: int) -> list[Piece]:
    """Every chunk cut into consecutive pieces of at most `piece_rows` rows."""
    return [Piece(c, a, min(a + piece_rows, rows)) for c, rows in enumerate(chunk_rows) for a in range(0, rows, piece_rows)]


def windows(pieces: Sequence[Piece], buffer_rows: int) -> list[list[Piece]]:
    """The pieces, in their order, grouped greedily into windows of at most `buffer_rows` rows each."""
    groups: list[list[Piece]] = [[]]
    held = 0
    for piece in pieces:
        if held + piece.rows > buffer_rows and groups[-1]:
            groups.append([])
            held = 0
        groups[-1].append(piece)
        held += piece.rows
    return groups


def shuffled_blocks(chunk_rows: Sequence[int], read: Callable[[int, int, int], torch.Tensor], buffer_rows: int,
                    seed: int, start_row: int = 0, block_rows: int = 4096) -> Iterator[torch.Tensor]:
    """Rows of the seeded stream from `start_row` on, endlessly, in new tensors of at most `block_rows` rows.

    `read(chunk, start, stop)` returns rows [start, stop) of a chunk. The buffer is allocated once and
    refilled in place; each block is gathered out of it, so a block stays valid after the buffer moves on.
    """
    if buffer_rows < 1:
        raise ValueError(f"the shuffle buffer must hold at least one row, not {buffer_rows}")
    total = sum(chunk_rows)
    buffer_rows = min(buffer_rows, total)
    pieces = cut_pieces(chunk_rows, min(PIECE_ROWS, buffer_rows))
    epoch, skip = divmod(start_row, total)
    buffer: torch.Tensor | None = None
    while True:
        order = permutation(len(pieces), seed, epoch).tolist()
        for w, window in enumerate(windows([pieces[i] for i in order], buffer_rows)):
            size = sum(p.rows for p in window)
            if skip >= size:
                skip -= size
                continue
            buffer = _fill(buffer, window, read, buffer_rows)
            shuffled = permutation(size, seed, epoch, w + 1)
            for a in range(skip, size, block_rows):
                yield buffer[shuffled[a : a + block_rows]]
            skip = 0
        epoch += 1


def _fill(buffer: torch.Tensor | None, window: list[Piece], read: Callable[[int, int, int], torch.Tensor],
          buffer_rows: int) -> torch.Tensor:
    """The window's rows, in order, at the start of the buffer (allocated at the first piece's width and dtype)."""
    at = 0
    for piece in window:
        rows = read(piece.chunk, piece.start, piece.stop)
        if buffer is None:
            buffer = rows.new_empty(buffer_rows, rows.shape[1])
        buffer[at : at + piece.rows] = rows
        at += piece.rows
    assert buffer is not None, "a window holds at least one piece"
    return buffer
