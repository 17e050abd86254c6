"""Activation data for training and evaluation: harvested directories, `.npy` arrays, `.safetensors` files.

Every source is a list of chunks (harvest shards, or fixed row ranges of one file) whose rows are read by
position, a range at a time (rowfiles.py). Training batches come from a bounded shuffle buffer
(shuffle.py): a pure function of (seed, row position), holding `buffer_rows` rows whatever the source's
size, so peak memory does not grow with the harvest and resuming needs only the row position.

Every range is checked for NaN and infinities as it is read (one reduction per range): a non-finite row
stops the reader with its file and row. With `skip_nonfinite` the source is scanned once when opened and
such rows are left out of their chunks, so row positions, and with them exact resume, stay well defined.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch

from .distributed import Dist
from .finite import finite_row_mask, nonfinite_error, nonfinite_rows
from .harvest import HarvestError, provenance_of, read_manifest, shard_rows
from .provenance import Provenance
from .rowfiles import RowFileError, npy_rows, safetensors_rows
from .shuffle import shuffled_blocks
from .sites import Site

FILE_CHUNK_ROWS = 65536
"""Rows per chunk when one file holds all activations."""

DEFAULT_BUFFER_ROWS = 1 << 17
"""Rows of the training shuffle buffer unless told otherwise (see TrainConfig.shuffle_rows)."""

Reader = Callable[[int, int], torch.Tensor]
"""(start, stop) -> rows [start, stop) of a chunk, as a new tensor."""


class ActivationsError(ValueError):
    """Activation data that cannot be read: the message names the file and the problem.

    A shard found corrupt only when training reaches it raises harvest's HarvestError instead.
    """


@dataclass(frozen=True)
class Chunk:
    """A block of activation rows, read a range at a time."""

    rows: int
    read: Reader = field(repr=False)
    origin: str = "<memory>"
    """The file the rows are read from, for messages about them."""
    first_row: int = 0
    """The row of that file the chunk starts at."""

    def load(self) -> torch.Tensor:
        """All the chunk's rows."""
        return self.read(0, self.rows)

    def part(self, start: int, stop: int) -> Chunk:
        """Rows [start, stop) of this chunk, read only when asked for."""
        return Chunk(stop - start, partial(_shifted, self.read, start), self.origin, self.first_row + start)


def _shifted(read: Reader, offset: int, start: int, stop: int) -> torch.Tensor:
    return read(offset + start, offset + stop)


def _slice(rows_ND: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    return rows_ND[start:stop]


def _kept(read: Reader, index_R: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of a chunk that keeps only the rows `index_R` (ascending) of the underlying one."""
    if start == stop:
        return read(0, 0)
    first, last = int(index_R[start]), int(index_R[stop - 1])
    return read(first, last + 1)[index_R[start:stop] - first]


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
        return cls(Path("<memory>"), rows_ND.shape[1], (Chunk(len(rows_ND), partial(_slice, rows_ND)),), provenance)

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
            parts.append(chunk.read(0, min(chunk.rows, n_rows - have)))
            have += len(parts[-1])
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
        """Every row once, in storage order, in float32 batches read one at a time (for evaluation)."""
        for chunk in self.chunks:
            for a in range(0, chunk.rows, batch_size):
                yield chunk.read(a, min(a + batch_size, chunk.rows)).float()

    def batches(self, batch_size: int, seed: int, start_row: int = 0,
                buffer_rows: int = DEFAULT_BUFFER_ROWS) -> Iterator[torch.Tensor]:
        """Endless shuffled float32 batches starting at row `start_row` of the seeded stream.

        Memory: one buffer of `buffer_rows` rows in the files' dtype, plus a batch or two.
        """
        blocks = shuffled_blocks([c.rows for c in self.chunks], self._read, buffer_rows, seed, start_row, batch_size)
        return rebatch(blocks, batch_size)

    def rank_batches(self, batch_size: int, seed: int, start_row: int, buffer_rows: int,
                     dist: Dist) -> Iterator[torch.Tensor]:
        """This rank's contiguous share of each global batch of the stream (every rank reads the same windows)."""
        return (batch[dist.share(batch_size)] for batch in self.batches(batch_size, seed, start_row, buffer_rows))

    def _read(self, chunk: int, start: int, stop: int) -> torch.Tensor:
        return self.chunks[chunk].read(start, stop)


def paired(inputs: ActivationSource, outputs: ActivationSource) -> ActivationSource:
    """Rows that hold each input row and its output row side by side, [N, d_in + d_out]: a transcoder's pairs.

    Both sources must be one harvest's sites (the same tokens in the same shards), so row i of one is the
    same token as row i of the other; anything else is refused rather than mispaired.
    """
    if inputs.d_in != outputs.d_in:
        raise ActivationsError(f"cannot pair {inputs.path} ({inputs.d_in} wide) with {outputs.path} "
                               f"({outputs.d_in} wide): a transcoder's input and output must be equally wide")
    in_rows, out_rows = [c.rows for c in inputs.chunks], [c.rows for c in outputs.chunks]
    if in_rows != out_rows:
        raise ActivationsError(f"cannot pair {inputs.path} ({inputs.n_rows} rows) with {outputs.path} "
                               f"({outputs.n_rows} rows): they are not one harvest's rows of the same tokens "
                               "(a harvest that left out non-finite rows at one site only cannot be paired)")
    chunks = tuple(Chunk(a.rows, partial(_side_by_side, a.read, b.read), a.origin, a.first_row)
                   for a, b in zip(inputs.chunks, outputs.chunks))
    return ActivationSource(inputs.path, inputs.d_in + outputs.d_in, chunks, inputs.provenance,
                            inputs.nonfinite_skipped + outputs.nonfinite_skipped)


def _side_by_side(read_a: Reader, read_b: Reader, start: int, stop: int) -> torch.Tensor:
    return torch.cat([read_a(start, stop), read_b(start, stop)], dim=1)


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
    elif path.suffix in (".npy", ".safetensors"):
        source = _open_file(path)
    else:
        raise ActivationsError(f"{path}: expected a harvest directory, a .npy file or a .safetensors file")
    return _finite_only(source) if skip_nonfinite else replace(source, chunks=tuple(map(_checked, source.chunks)))


def _checked(chunk: Chunk) -> Chunk:
    """The chunk, refusing to return rows that hold NaN or infinities."""
    def read(start: int, stop: int) -> torch.Tensor:
        rows = chunk.read(start, stop)
        bad = nonfinite_rows(rows)
        if bad is not None:
            raise nonfinite_error(chunk.origin, chunk.first_row + start + int(bad[0]))
        return rows

    return replace(chunk, read=read)


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
            chunks.append(replace(chunk, rows=kept, read=partial(_kept, chunk.read, keep_N.nonzero().flatten())))
    if not chunks:
        raise ActivationsError(f"{source.path}: every activation row holds NaN or infinite values")
    return replace(source, chunks=tuple(chunks), nonfinite_skipped=skipped)


def _check_shape(path: Path, shape: tuple[int, ...]) -> None:
    if len(shape) != 2:
        raise ActivationsError(f"{path}: activations must be 2-D [rows, d], got shape {shape}")
    if shape[0] == 0:
        raise ActivationsError(f"{path}: holds no activation rows")


def _open_file(path: Path) -> ActivationSource:
    """One .npy array or the `activations` tensor of one .safetensors file, in chunks of FILE_CHUNK_ROWS rows."""
    try:
        rows = npy_rows(path) if path.suffix == ".npy" else safetensors_rows(path, "activations")
    except RowFileError as err:
        raise ActivationsError(str(err)) from None
    _check_shape(path, (rows.n_rows, rows.d))
    chunks = [Chunk(min(FILE_CHUNK_ROWS, rows.n_rows - a), partial(_shifted, rows.read, a), str(path), a)
              for a in range(0, rows.n_rows, FILE_CHUNK_ROWS)]
    return ActivationSource(path, rows.d, tuple(chunks))


def _shard_read(directory: Path, entry: dict, d_model: int, start: int, stop: int) -> torch.Tensor:
    """Rows of one shard; its header is read again each time, so a shard broken after opening is still named."""
    return shard_rows(directory, entry, d_model).read(start, stop)


def _open_harvest(directory: Path) -> ActivationSource:
    try:
        manifest = read_manifest(directory)
    except HarvestError as err:
        raise ActivationsError(str(err)) from None
    d_model = manifest["d_model"]
    if not isinstance(d_model, int) or d_model <= 0:
        raise ActivationsError(f"{directory}: manifest d_model must be a positive integer, got {d_model!r}")
    chunks = [Chunk(int(e["rows"]), partial(_shard_read, directory, e, d_model), str(directory / e["file"]))
              for e in manifest["shards"] if e.get("rows")]
    _check_shape(directory, (sum(c.rows for c in chunks), d_model))
    return ActivationSource(directory, d_model, tuple(chunks), provenance_of(manifest))
