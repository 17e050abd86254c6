"""Activation data for training and evaluation: harvested directories, `.npy` arrays, `.safetensors` files.

Every source is a list of chunks (harvest shards, or fixed row ranges of one file) read lazily. Training
batches come from a stream that is a pure function of (seed, row position): each epoch visits the chunks
in a seeded order, a window of several chunks at a time, rows shuffled within the window. Memory stays
bounded by the window, and resuming needs only the row position.

Every chunk is checked for NaN and infinities as it is read (one reduction per chunk): a non-finite row
stops the reader with its file and row. With `skip_nonfinite` the source is scanned once when opened and
such rows are left out of their chunks, so row positions, and with them exact resume, stay well defined.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from .distributed import Dist
from .finite import finite_row_mask, nonfinite_error, nonfinite_rows
from .harvest import HarvestError, load_shard, provenance_of, read_manifest
from .provenance import Provenance
from .sites import Site

FILE_CHUNK_ROWS = 65536
"""Rows per chunk when one file holds all activations."""


class ActivationsError(ValueError):
    """Activation data that cannot be read: the message names the file and the problem.

    A shard found corrupt only when training reaches it raises harvest's HarvestError instead.
    """


@dataclass(frozen=True)
class Chunk:
    """A lazily loaded block of activation rows."""

    rows: int
    load: Callable[[], torch.Tensor] = field(repr=False)
    origin: str = "<memory>"
    """The file the rows are read from, for messages about them."""
    first_row: int = 0
    """The row of that file the chunk starts at."""

    def part(self, start: int, stop: int) -> Chunk:
        """Rows [start, stop) of this chunk, still loaded lazily."""
        return Chunk(stop - start, partial(_rows_of, self.load, start, stop), self.origin, self.first_row + start)


def _rows_of(load: Callable[[], torch.Tensor], start: int, stop: int) -> torch.Tensor:
    return load()[start:stop]


def _rows_at(load: Callable[[], torch.Tensor], index_R: torch.Tensor) -> torch.Tensor:
    return load()[index_R]


@dataclass(frozen=True)
class ActivationSource:
    """Activation rows of one width, in chunks, with what is known of where they came from."""

    path: Path
    d_in: int
    chunks: tuple[Chunk, ...]
    provenance: Provenance = Provenance()
    """Where the rows came from, as far as the source records it (a harvest's manifest does; a bare array not)."""
    nonfinite_skipped: int = 0
    """Rows of the files left out for holding NaN or infinities (`open_activations(skip_nonfinite=True)`)."""

    @classmethod
    def in_memory(cls, rows_ND: torch.Tensor, provenance: Provenance = Provenance()) -> ActivationSource:
        """Rows already in memory (e.g. held out from a model stream) as a one-chunk source."""
        return cls(Path("<memory>"), rows_ND.shape[1], (Chunk(len(rows_ND), lambda: rows_ND),), provenance)

    @property
    def n_rows(self) -> int:
        return sum(c.rows for c in self.chunks)

    def at_site(self, site: Site) -> ActivationSource:
        """The same rows, known to come from `site` (a bare array names none); refused where the source names another."""
        known = self.provenance.site
        if known is not None and known != site:
            raise ActivationsError(f"{self.path} holds activations of {known.name}, not {site.name}")
        return replace(self, provenance=replace(self.provenance, site=site, foreign_hook=None))

    def head(self, n_rows: int) -> torch.Tensor:
        """The first `n_rows` rows in storage order, float32 (for initialisation and evaluation)."""
        parts, have = [], 0
        for chunk in self.chunks:
            if have >= n_rows:
                break
            part = chunk.load()[: n_rows - have]
            parts.append(part)
            have += len(part)
        return torch.cat(parts).float()

    def split_tail(self, n_rows: int) -> tuple[ActivationSource, ActivationSource]:
        """(all but the last `n_rows` rows, the last `n_rows`): held-out rows for evaluation after training.

        Harvest rows are stored in corpus order, so the tail comes from text no training row came from.
        """
        if not 0 < n_rows < self.n_rows:
            raise ValueError(f"cannot hold out {n_rows} of {self.n_rows} rows; hold out 1..{self.n_rows - 1}")
        head, tail, cut = [], [], self.n_rows - n_rows
        start = 0
        for chunk in self.chunks:
            end = start + chunk.rows
            if end <= cut:
                head.append(chunk)
            elif start >= cut:
                tail.append(chunk)
            else:
                a = cut - start
                head.append(chunk.part(0, a))
                tail.append(chunk.part(a, chunk.rows))
            start = end
        return replace(self, chunks=tuple(head)), replace(self, chunks=tuple(tail))

    def iter_rows(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Every row once, in storage order, in float32 batches (for evaluation)."""
        for chunk in self.chunks:
            yield from chunk.load().float().split(batch_size)

    def batches(self, batch_size: int, seed: int, start_row: int = 0, window: int = 8) -> Iterator[torch.Tensor]:
        """Endless shuffled float32 batches starting at row `start_row` of the seeded stream."""
        return rebatch(self._stream(seed, start_row, window), batch_size)

    def rank_batches(self, batch_size: int, seed: int, start_row: int, window: int, dist: Dist) -> Iterator[torch.Tensor]:
        """This rank's contiguous share of each global batch of the stream (every rank reads the same windows)."""
        return (batch[dist.share(batch_size)] for batch in self.batches(batch_size, seed, start_row, window))

    def _stream(self, seed: int, start_row: int, window: int) -> Iterator[torch.Tensor]:
        """Rows of the stream from `start_row` on, one shuffled window at a time."""
        epoch, skip = divmod(start_row, self.n_rows)
        while True:
            order = permutation(len(self.chunks), seed, epoch)
            for w, first in enumerate(range(0, len(order), window)):
                members = [self.chunks[i] for i in order[first : first + window]]
                size = sum(c.rows for c in members)
                if skip >= size:
                    skip -= size
                    continue
                rows = torch.cat([c.load() for c in members])
                yield rows[permutation(size, seed, epoch, w + 1)][skip:]
                skip = 0
            epoch += 1


def holdout_rows(n_rows: int) -> int:
    """Rows held out of training for metrics.json by default: a tenth, at most 65536."""
    return min(n_rows // 10, 65536)


def rebatch(blocks: Iterator[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """Float32 batches of exactly `batch_size` rows cut from a stream of row blocks of any sizes."""
    carry = torch.empty(0)
    for rows in blocks:
        if len(carry):
            rows = torch.cat([carry, rows])
        starts = range(0, len(rows) - batch_size + 1, batch_size)
        for a in starts:
            yield rows[a : a + batch_size].float()
        carry = rows[len(starts) * batch_size :]


def permutation(n: int, *key: int) -> torch.Tensor:
    """A permutation of range(n) that depends only on the integers in `key`."""
    state = np.random.SeedSequence(list(key)).generate_state(2)
    generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randperm(n, generator=generator)


def open_activations(path: str | Path, skip_nonfinite: bool = False) -> ActivationSource:
    """An activation source for a harvest directory, a .npy [N, d] array or a .safetensors file.

    A row holding NaN or an infinity raises NonFiniteError (naming its file and row) when it is read;
    with `skip_nonfinite` every chunk is read once now and such rows are left out and counted instead.
    """
    path = Path(path)
    if path.is_dir():
        source = _open_harvest(path)
    elif not path.is_file():
        raise ActivationsError(f"no activations at {path}: the path does not exist")
    elif path.suffix == ".npy":
        source = _open_npy(path)
    elif path.suffix == ".safetensors":
        source = _open_safetensors(path)
    else:
        raise ActivationsError(f"{path}: expected a harvest directory, a .npy file or a .safetensors file")
    return _finite_only(source) if skip_nonfinite else replace(source, chunks=tuple(map(_checked, source.chunks)))


def _checked(chunk: Chunk) -> Chunk:
    """The chunk, refusing to load rows that hold NaN or infinities."""
    def load() -> torch.Tensor:
        rows = chunk.load()
        bad = nonfinite_rows(rows)
        if bad is not None:
            raise nonfinite_error(chunk.origin, chunk.first_row + int(bad[0]))
        return rows

    return replace(chunk, load=load)


def _finite_only(source: ActivationSource) -> ActivationSource:
    """The source without its non-finite rows: one read of every chunk finds them, later reads leave them out."""
    chunks, skipped = [], 0
    for chunk in source.chunks:
        keep_N = finite_row_mask(chunk.load())
        kept = int(keep_N.sum())
        skipped += chunk.rows - kept
        if kept == chunk.rows:
            chunks.append(chunk)
        elif kept:
            index = keep_N.nonzero().flatten()
            chunks.append(replace(chunk, rows=kept, load=partial(_rows_at, chunk.load, index)))
    if not chunks:
        raise ActivationsError(f"{source.path}: every activation row holds NaN or infinite values")
    return replace(source, chunks=tuple(chunks), nonfinite_skipped=skipped)


def _check_shape(path: Path, shape: tuple[int, ...]) -> None:
    if len(shape) != 2:
        raise ActivationsError(f"{path}: activations must be 2-D [rows, d], got shape {shape}")
    if shape[0] == 0:
        raise ActivationsError(f"{path}: holds no activation rows")


def _row_chunks(path: Path, n_rows: int, read: Callable[[int, int], torch.Tensor]) -> list[Chunk]:
    """Split rows [0, n_rows) of one file into fixed-size lazily read chunks."""
    return [
        Chunk(min(FILE_CHUNK_ROWS, n_rows - a), partial(read, a, min(a + FILE_CHUNK_ROWS, n_rows)), str(path), a)
        for a in range(0, n_rows, FILE_CHUNK_ROWS)
    ]


def _open_npy(path: Path) -> ActivationSource:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ActivationsError(f"{path}: unreadable .npy file ({err})") from None
    if array.dtype.kind != "f":
        raise ActivationsError(f"{path}: activations must be floating point, got {array.dtype}")
    _check_shape(path, array.shape)
    chunks = _row_chunks(path, array.shape[0], lambda a, b: torch.from_numpy(np.array(array[a:b])))
    return ActivationSource(path, array.shape[1], tuple(chunks))


def _open_safetensors(path: Path) -> ActivationSource:
    try:
        with safe_open(path, "pt") as f:
            if "activations" not in set(f.keys()):
                raise ActivationsError(f"{path}: no tensor named 'activations' (found {', '.join(f.keys()) or 'none'})")
            shape = tuple(f.get_slice("activations").get_shape())
    except (SafetensorError, OSError) as err:
        raise ActivationsError(f"{path}: unreadable safetensors file ({err})") from None
    _check_shape(path, shape)

    def read(a: int, b: int) -> torch.Tensor:
        with safe_open(path, "pt") as f:
            return f.get_slice("activations")[a:b]

    return ActivationSource(path, shape[1], tuple(_row_chunks(path, shape[0], read)))


def _shard_activations(directory: Path, entry: dict, d_model: int) -> torch.Tensor:
    return load_shard(directory, entry, d_model, ("activations",))["activations"]


def _open_harvest(directory: Path) -> ActivationSource:
    try:
        manifest = read_manifest(directory)
    except HarvestError as err:
        raise ActivationsError(str(err)) from None
    d_model = manifest["d_model"]
    if not isinstance(d_model, int) or d_model <= 0:
        raise ActivationsError(f"{directory}: manifest d_model must be a positive integer, got {d_model!r}")
    chunks = [Chunk(int(e["rows"]), partial(_shard_activations, directory, e, d_model), str(directory / e["file"]))
              for e in manifest["shards"] if e.get("rows")]
    _check_shape(directory, (sum(c.rows for c in chunks), d_model))
    return ActivationSource(directory, d_model, tuple(chunks), provenance_of(manifest))
