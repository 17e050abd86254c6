"""The bounded shuffle buffer: every row once per epoch, seeded and resumable, never holding more than its size."""

from __future__ import annotations

import random

import pytest
import torch

import sae_core.shuffle
from sae_core.shuffle import cut_pieces, shuffled_blocks, windows

CHUNKS = (37, 100, 5, 64, 1, 93)
"""Chunk sizes that are not multiples of the piece size nor of one another."""


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch):
    monkeypatch.setattr(sae_core.shuffle, "PIECE_ROWS", 8)


class Rows:
    """Chunks whose rows are numbered by their global position; counts the rows read so far."""

    def __init__(self, chunk_rows=CHUNKS):
        self.chunk_rows, self.first = chunk_rows, [sum(chunk_rows[:c]) for c in range(len(chunk_rows))]
        self.read_rows = 0

    def read(self, chunk: int, start: int, stop: int) -> torch.Tensor:
        assert 0 <= start < stop <= self.chunk_rows[chunk]
        self.read_rows += stop - start
        ids = torch.arange(self.first[chunk] + start, self.first[chunk] + stop, dtype=torch.float32)
        return torch.stack([ids, -ids], 1)

    def stream(self, buffer_rows: int, seed: int = 0, start_row: int = 0, block_rows: int = 16):
        return shuffled_blocks(self.chunk_rows, self.read, buffer_rows, seed, start_row, block_rows)


def take(blocks, n_rows: int) -> list[int]:
    out: list[int] = []
    while len(out) < n_rows:
        out += next(blocks)[:, 0].long().tolist()
    return out[:n_rows]


@pytest.mark.parametrize("buffer_rows", [1, 7, 8, 50, 299, 10_000])
def test_every_row_once_per_epoch_in_a_new_order_each_epoch(buffer_rows):
    n = sum(CHUNKS)
    rows = take(Rows().stream(buffer_rows, seed=3), 3 * n)
    epochs = [rows[i * n : (i + 1) * n] for i in range(3)]
    assert all(sorted(e) == list(range(n)) for e in epochs)
    assert epochs[0] != list(range(n)) and epochs[0] != epochs[1] != epochs[2]


def test_the_order_is_a_function_of_the_seed():
    n = sum(CHUNKS)
    assert take(Rows().stream(50, seed=1), n) == take(Rows().stream(50, seed=1, block_rows=7), n)
    assert take(Rows().stream(50, seed=1), n) != take(Rows().stream(50, seed=2), n)


@pytest.mark.parametrize("start_row", [0, 1, 49, 50, 123, 299, 300, 555])
def test_resuming_at_a_row_continues_the_same_stream(start_row):
    whole = take(Rows().stream(50, seed=4), 900)
    assert take(Rows().stream(50, seed=4, start_row=start_row), 900 - start_row) == whole[start_row:]


@pytest.mark.parametrize("buffer_rows", [1, 8, 50, 120])
def test_rows_held_never_exceed_the_buffer(buffer_rows):
    """Rows read and not yet handed out (what memory holds) stay within the buffer at every block."""
    source = Rows()
    blocks, handed = source.stream(buffer_rows, block_rows=16), 0
    for _ in range(60):
        block = next(blocks)
        assert source.read_rows - handed <= buffer_rows
        handed += len(block)


def test_a_window_mixes_pieces_from_all_over_the_source():
    source = Rows((100,) * 20)
    first = take(source.stream(160, seed=0), 160)
    assert len({row // 100 for row in first}) >= 8, "the first window should draw on many chunks, not one or two"


def test_resuming_reads_only_the_window_it_starts_in():
    source = Rows()
    next(source.stream(50, start_row=250))
    assert source.read_rows <= 50


def test_windows_partition_the_pieces_within_the_buffer():
    rng = random.Random(0)
    for _ in range(50):
        chunks = [rng.randint(1, 40) for _ in range(rng.randint(1, 9))]
        buffer_rows = rng.randint(1, 60)
        pieces = cut_pieces(chunks, min(8, buffer_rows))
        groups = windows(pieces, buffer_rows)
        assert [p for g in groups for p in g] == pieces
        assert all(g and sum(p.rows for p in g) <= buffer_rows for g in groups)


def test_an_empty_buffer_is_refused():
    with pytest.raises(ValueError, match="at least one row"):
        next(Rows().stream(0))
