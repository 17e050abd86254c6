"""Activation sources: the three input kinds, the resumable shuffled stream, and bad inputs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sae_core.activations import ActivationsError, open_activations
from sae_core.finite import NonFiniteError

D = 8


def write_harvest(directory, shard_rows=(50, 30, 40), d=D, dtype=torch.bfloat16, bad_rows=()):
    """A harvest directory in the `saescope-activations/1` layout, rows numbered in column 0; `bad_rows` NaN."""
    directory.mkdir(parents=True)
    shards, first_row, first_context = [], 0, 0
    for i, rows in enumerate(shard_rows):
        contexts = (rows + 9) // 10
        acts = torch.randn(rows, d, generator=torch.Generator().manual_seed(i))
        acts[:, 0] = torch.arange(first_row, first_row + rows)
        for row in bad_rows:
            if first_row <= row < first_row + rows:
                acts[row - first_row, 3] = float("nan")
        positions = torch.stack([torch.arange(rows) // 10 + first_context, torch.arange(rows) % 10 + 1], 1)
        save_file({"activations": acts.to(dtype), "tokens": torch.ones(contexts, 11, dtype=torch.int32),
                   "positions": positions.to(torch.int32)}, directory / f"shard_{i:05d}.safetensors")
        shards.append({"file": f"shard_{i:05d}.safetensors", "rows": rows, "contexts": contexts,
                       "first_context": first_context})
        first_row += rows
        first_context += contexts
    manifest = {"format": "saescope-activations/1", "model": "tiny", "model_spec": "tiny", "site": "layers.1.resid_post",
                "hook_name": "blocks.1.hook_resid_post", "d_model": d, "dtype": str(dtype).removeprefix("torch."),
                "context_len": 11, "dataset": "demo", "n_contexts": first_context, "n_tokens": first_row,
                "complete": True, "shards": shards}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def numbered(n, d=D, bad_rows=()):
    x = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    x[:, 0] = np.arange(n)
    for i, row in enumerate(bad_rows):
        x[row, 2] = (np.nan, np.inf, -np.inf)[i % 3]
    return x


def ids(batch):
    return batch[:, 0].round().long().tolist()


KINDS = ["harvest", "npy", "safetensors"]


def write_source(kind, tmp_path, bad_rows=()):
    """120 numbered rows of one kind of input (rows in `bad_rows` non-finite); the path to open."""
    if kind == "harvest":
        return write_harvest(tmp_path / "h", bad_rows=bad_rows)
    if kind == "npy":
        np.save(tmp_path / "a.npy", numbered(120, bad_rows=bad_rows))
        return tmp_path / "a.npy"
    save_file({"activations": torch.from_numpy(numbered(120, bad_rows=bad_rows))}, tmp_path / "a.safetensors")
    return tmp_path / "a.safetensors"


@pytest.fixture
def several_chunks(monkeypatch):
    monkeypatch.setattr("sae_core.activations.FILE_CHUNK_ROWS", 37)  # several chunks from one file


@pytest.fixture(params=KINDS)
def source(request, tmp_path, several_chunks):
    return open_activations(write_source(request.param, tmp_path))


def test_source_shape_and_order(source):
    assert source.d_in == D and source.n_rows == 120
    assert ids(torch.cat(list(source.iter_rows(16)))) == list(range(120))
    assert ids(source.head(45)) == list(range(45))


def test_stream_visits_every_row_once_per_epoch(source):
    stream = source.batches(batch_size=24, seed=3, buffer_rows=50)
    rows = [i for _ in range(10) for i in ids(next(stream))]  # two epochs
    assert sorted(rows[:120]) == list(range(120)) and sorted(rows[120:]) == list(range(120))
    assert rows[:120] != list(range(120)), "not shuffled"
    assert rows[:120] != rows[120:], "every epoch has its own order"


def test_stream_is_deterministic_and_resumable(source):
    full = [next(b) for b in [source.batches(16, seed=1, buffer_rows=50)] for _ in range(20)]
    again = source.batches(16, seed=1, buffer_rows=50)
    assert all(torch.equal(a, next(again)) for a in full)
    for start in (3, 7, 14):
        resumed = source.batches(16, seed=1, start_row=start * 16, buffer_rows=50)
        assert all(torch.equal(full[i], next(resumed)) for i in range(start, 20))
    other = next(source.batches(16, seed=2, buffer_rows=50))
    assert not torch.equal(other, full[0])


def test_harvest_metadata(tmp_path):
    src = open_activations(write_harvest(tmp_path / "h"))
    assert src.provenance.hook_name == "blocks.1.hook_resid_post" and src.provenance.context_len == 11


def test_bad_inputs(tmp_path):
    with pytest.raises(ActivationsError, match="does not exist"):
        open_activations(tmp_path / "none.npy")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ActivationsError, match="expected a harvest directory"):
        open_activations(tmp_path / "a.txt")
    np.save(tmp_path / "flat.npy", np.zeros(5, dtype=np.float32))
    with pytest.raises(ActivationsError, match="2-D"):
        open_activations(tmp_path / "flat.npy")
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), dtype=np.float32))
    with pytest.raises(ActivationsError, match="no activation rows"):
        open_activations(tmp_path / "empty.npy")
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.zeros((3, 4), dtype=np.float32)))
    with pytest.raises(ActivationsError, match="Fortran order"):
        open_activations(tmp_path / "fortran.npy")
    np.save(tmp_path / "int.npy", np.zeros((3, 4), dtype=np.int64))
    with pytest.raises(ActivationsError, match="floating point"):
        open_activations(tmp_path / "int.npy")
    save_file({"other": torch.zeros(3, 4)}, tmp_path / "x.safetensors")
    with pytest.raises(ActivationsError, match="no tensor named 'activations'"):
        open_activations(tmp_path / "x.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(ActivationsError, match="unreadable"):
        open_activations(tmp_path / "bad.safetensors")
    (tmp_path / "dir").mkdir()
    with pytest.raises(ActivationsError, match="not a harvest directory"):
        open_activations(tmp_path / "dir")


@pytest.mark.parametrize("n_tail", [1, 35, 40, 119])
def test_split_tail_holds_out_the_last_rows_across_chunk_boundaries(source, n_tail):
    train, heldout = source.split_tail(n_tail)
    everything = torch.cat(list(source.iter_rows(1000)))
    assert (train.n_rows, heldout.n_rows) == (source.n_rows - n_tail, n_tail)
    assert torch.equal(torch.cat(list(train.iter_rows(7))), everything[:-n_tail])
    assert torch.equal(torch.cat(list(heldout.iter_rows(7))), everything[-n_tail:])
    assert train.d_in == heldout.d_in == source.d_in and train.provenance == source.provenance


@pytest.mark.parametrize("n_tail", [0, -1, 120])
def test_split_tail_refuses_impossible_sizes(source, n_tail):
    with pytest.raises(ValueError, match="cannot hold out"):
        source.split_tail(n_tail)


# Rows 5 and 60 (in the second file chunk, and in the harvest's second shard at its row 10) are non-finite.
FIRST_BAD = {"harvest": "shard_00000.safetensors: row 5 ", "npy": "a.npy: row 5 ", "safetensors": "a.safetensors: row 5 "}
LATER_BAD = {"harvest": "shard_00001.safetensors: row 10 ", "npy": "a.npy: row 60 ", "safetensors": "a.safetensors: row 60 "}


@pytest.mark.parametrize("kind", KINDS)
def test_a_non_finite_row_is_refused_naming_its_file_and_row(kind, tmp_path, several_chunks):
    source = open_activations(write_source(kind, tmp_path, bad_rows=(5, 60)))
    with pytest.raises(NonFiniteError, match=re.escape(FIRST_BAD[kind]) + ".*--skip-nonfinite"):
        list(source.iter_rows(16))
    with pytest.raises(NonFiniteError, match=re.escape(LATER_BAD[kind])):
        source.split_tail(70)[1].head(70)  # the held-out tail starts at row 50: row 60 is its first bad one
    with pytest.raises(NonFiniteError):
        next(source.batches(16, seed=0, buffer_rows=80))


@pytest.mark.parametrize("kind", KINDS)
def test_skip_nonfinite_leaves_the_rows_out_and_counts_them(kind, tmp_path, several_chunks):
    source = open_activations(write_source(kind, tmp_path, bad_rows=(5, 60, 61)), skip_nonfinite=True)
    kept = [i for i in range(120) if i not in (5, 60, 61)]
    assert source.nonfinite_skipped == 3 and source.n_rows == 117
    assert ids(torch.cat(list(source.iter_rows(16)))) == kept
    stream = source.batches(9, seed=1, buffer_rows=50)
    epoch = [i for _ in range(13) for i in ids(next(stream))]
    assert sorted(epoch) == kept
    resumed = source.batches(9, seed=1, start_row=9 * 4, buffer_rows=50)
    assert [i for _ in range(9) for i in ids(next(resumed))] == epoch[9 * 4 :]
    assert source.split_tail(17)[0].nonfinite_skipped == 3


def test_skip_nonfinite_refuses_a_file_with_no_finite_row(tmp_path):
    np.save(tmp_path / "nan.npy", np.full((4, 3), np.nan, dtype=np.float32))
    with pytest.raises(ActivationsError, match="every activation row holds NaN"):
        open_activations(tmp_path / "nan.npy", skip_nonfinite=True)


def test_large_finite_float16_rows_are_not_taken_for_infinite(tmp_path):
    """The check sums each row first; a float16 row whose sum overflows (8 x 60000 > 65504) is still finite."""
    rows = np.full((5, D), 60000, dtype=np.float16)
    rows[3, 1] = np.inf
    np.save(tmp_path / "big.npy", rows)
    source = open_activations(tmp_path / "big.npy", skip_nonfinite=True)
    assert source.nonfinite_skipped == 1 and source.n_rows == 4
    with pytest.raises(NonFiniteError, match=r"big\.npy: row 3 "):
        open_activations(tmp_path / "big.npy").head(5)
