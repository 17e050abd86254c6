"""Model + site + corpus -> activation shards on disk, with a manifest that later stages read.

Layout of a harvest directory (format `saescope-activations/1`):
- `manifest.json`: model, site, d_model, dtype, context length, counts and the list of finished shards;
  `n_nonfinite_skipped` counts rows left out for holding NaN or infinities (only with `skip_nonfinite`,
  else such a row stops the harvest), and a shard that left some out says how many (`nonfinite_skipped`),
  so a resume that redoes it does not count them twice.
- `shard_NNNNN.safetensors`: `activations` [rows, d_model], `tokens` [contexts, context_len] int32 (the
  shard's contexts, BOS first) and `positions` [rows, 2] int32 (global context index, position), so any
  activation row can be shown with its text.
A shard is listed in the manifest only after it is fully on disk, so an interrupted run never leaves a
shard that readers would trust half-written. `resume` harvests again from the first context of the last
listed shard: that shard may end where an earlier, smaller `--tokens` cut a context short, and redoing it
(at most one shard of work) makes a resumed harvest, with any larger budget, byte for byte the harvest a
direct run with that budget writes (given the same `--batch-size` and `--shard-tokens`: the same batches).

Under torchrun each of N ranks harvests every N-th context (rank r: contexts r, r+N, ...) and its share
of the rows, into `shard_rR_NNNNN.safetensors` files under its own `manifest.rankR.json` (its resume
state), so ranks never write one path. When all are done rank 0 merges them into `manifest.json`, which
lists every shard (ordered by first context) and records `world` and each shard's `context_stride`.

A harvest at several sites (`site` naming them comma-separated) runs each batch through the model once,
stopping after the deepest site, and writes one harvest directory per site under `out`, named after the site
(`out/layers.3.resid_post/`), each exactly what a harvest at that site alone writes; `sites.json` (format
`saescope-activations-sites/1`) names the model and the sites in forward order and is the mark of such a
directory (`harvest_sites` reads it). Resuming one continues every site from one context (see `_common_start`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm import tqdm
from transformers import PreTrainedModel

from .config import HarvestConfig
from .data import bos_id, iter_contexts, iter_documents, special_ids
from .distributed import Dist
from .fileio import atomic_write, atomic_write_json
from .finite import finite_row_mask, nonfinite_error, nonfinite_rows
from .hooks import truncated_forward_sites
from .lm import LoadedModel, load_model, parse_dtype
from .provenance import Provenance
from .sites import Site, hidden_size, num_layers, parse_site, parse_sites

FORMAT = "saescope-activations/1"
MANIFEST = "manifest.json"
SITES_FORMAT = "saescope-activations-sites/1"
SITES_FILE = "sites.json"
# Fields that must agree for a resumed run to extend the same data set.
IDENTITY = ("model_spec", "site", "dataset", "text_field", "context_len", "dtype", "model_dtype")


class HarvestError(ValueError):
    """A harvest directory that cannot be written to or read as activations."""


def read_manifest(directory: Path | str, name: str = MANIFEST) -> dict:
    """The manifest of a harvest directory (or one rank's, by `name`), checked for the fields readers rely on."""
    path = Path(directory) / name
    if not path.is_file():
        raise HarvestError(f"{directory} is not a harvest directory (no {name})")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise HarvestError(f"{path}: corrupt manifest ({err.msg})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise HarvestError(f"{path}: not a {FORMAT} manifest")
    missing = [k for k in ("d_model", "dtype", "shards", "n_tokens", "site") if k not in manifest]
    if missing:
        raise HarvestError(f"{path}: manifest lacks {', '.join(missing)}")
    return manifest


def load_shard(directory: Path | str, entry: dict, d_model: int,
               names: tuple[str, ...] = ("activations", "tokens", "positions")) -> dict[str, torch.Tensor]:
    """The named tensors of one shard, with a clear error for a missing, corrupt or mis-shaped file."""
    path = Path(directory) / entry["file"]
    try:
        with safe_open(path, "pt") as handle:
            missing = set(names) - set(handle.keys())
            if missing:
                raise HarvestError(f"{path}: shard lacks {', '.join(sorted(missing))}")
            tensors = {name: handle.get_tensor(name) for name in names}
    except (FileNotFoundError, SafetensorError, OSError) as err:
        raise HarvestError(f"{path}: unreadable shard ({err})") from None
    acts = tensors.get("activations")
    if acts is not None and tuple(acts.shape) != (entry["rows"], d_model):
        raise HarvestError(f"{path}: expected activations [{entry['rows']}, {d_model}], found {tuple(acts.shape)}")
    return tensors


def provenance_of(manifest: dict) -> Provenance:
    """Where a harvest's rows came from, as its manifest records it."""
    return Provenance(model=manifest.get("model"), site=parse_site(manifest["site"]), dataset=manifest.get("dataset"),
                      context_len=manifest.get("context_len"))


def harvest_sites(directory: Path | str) -> dict[str, Path]:
    """The harvest directory of each site of a several-site harvest, by site name in forward order; {} for
    any other path (a one-site harvest among them)."""
    path = Path(directory) / SITES_FILE
    if not path.is_file():
        return {}
    try:
        listing = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise HarvestError(f"{path}: corrupt site list ({err.msg})") from None
    if not isinstance(listing, dict) or listing.get("format") != SITES_FORMAT or not listing.get("sites"):
        raise HarvestError(f"{path}: not a {SITES_FORMAT} site list")
    return {name: Path(directory) / name for name in listing["sites"]}


def describe(manifest: dict) -> str:
    """What a harvest wrote, in one line, from the manifest `harvest` returns (one site's, or sites.json's)."""
    skipped = manifest.get("n_nonfinite_skipped", 0)
    sites = ", ".join(manifest["sites"]) if "sites" in manifest else manifest["site"]
    return (f"wrote {manifest['n_tokens']} activations of {manifest['model']} at {sites}"
            + (f"; left out {skipped} rows holding NaN or infinities" if skipped else ""))


@dataclass
class _ShardBuffer:
    """Rows, positions and contexts gathered since the last shard was written."""

    acts: list[torch.Tensor] = field(default_factory=list)
    positions: list[torch.Tensor] = field(default_factory=list)
    tokens: list[torch.Tensor] = field(default_factory=list)
    rows: int = 0
    first_context: int = 0
    nonfinite_skipped: int = 0

    def add(self, acts_RD: torch.Tensor, positions_R2: torch.Tensor, tokens_BT: torch.Tensor,
            first_context: int, nonfinite_skipped: int = 0) -> None:
        if not self.acts:
            self.first_context = first_context
        self.acts.append(acts_RD)
        self.positions.append(positions_R2)
        self.tokens.append(tokens_BT)
        self.rows += acts_RD.shape[0]
        self.nonfinite_skipped += nonfinite_skipped

    def take(self) -> tuple[dict[str, torch.Tensor], int, int]:
        tensors = {
            "activations": torch.cat(self.acts).contiguous(),
            "positions": torch.cat(self.positions).contiguous(),
            "tokens": torch.cat(self.tokens).to(torch.int32).contiguous(),
        }
        skipped, self.nonfinite_skipped = self.nonfinite_skipped, 0
        self.acts, self.positions, self.tokens, self.rows = [], [], [], 0
        return tensors, self.first_context, skipped


class _ShardWriter:
    """Writes shards on a background thread (so disk time overlaps the forward) and keeps the manifest."""

    def __init__(self, out: Path, manifest: dict, dist: Dist):
        self.out = out
        self.manifest = manifest
        self.dist = dist
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending: Future | None = None

    def submit(self, shard: tuple[dict[str, torch.Tensor], int, int]) -> None:
        self.wait()  # at most one shard in flight bounds memory to two shards
        self.pending = self.pool.submit(self._write, *shard)

    def wait(self) -> None:
        if self.pending is not None:
            self.pending.result()
            self.pending = None

    def close(self) -> None:
        self.wait()
        self.pool.shutdown()

    def _write(self, tensors: dict[str, torch.Tensor], first_context: int, nonfinite_skipped: int) -> None:
        shards = self.manifest["shards"]
        name = shard_name(self.dist, len(shards))
        atomic_write(self.out / name, lambda tmp: save_file(tensors, tmp))
        shards.append({"file": name, "rows": tensors["activations"].shape[0],
                       "contexts": tensors["tokens"].shape[0], "first_context": first_context,
                       "context_stride": self.dist.world}
                      | ({"nonfinite_skipped": nonfinite_skipped} if nonfinite_skipped else {}))
        self.manifest["n_tokens"] += tensors["activations"].shape[0]
        self.manifest["n_contexts"] += tensors["tokens"].shape[0]
        self.manifest["n_nonfinite_skipped"] = self.manifest.get("n_nonfinite_skipped", 0) + nonfinite_skipped
        atomic_write_json(self.out / manifest_name(self.dist), self.manifest)


def shard_name(dist: Dist, index: int) -> str:
    """The file of this rank's shard number `index`."""
    rank = f"r{dist.rank}_" if dist.active else ""
    return f"shard_{rank}{index:05d}.safetensors"


def manifest_name(dist: Dist) -> str:
    """The manifest a rank keeps its progress in: the directory's own in a one-process run."""
    return f"manifest.rank{dist.rank}.json" if dist.active else MANIFEST


def _new_manifest(cfg: HarvestConfig, lm: LoadedModel, provenance: Provenance, site: Site, world: int) -> dict:
    return {
        "format": FORMAT,
        "model": provenance.model,
        "model_spec": cfg.model,
        "site": site.name,
        "hook_name": site.hook_name,
        "d_model": hidden_size(lm.model),
        "dtype": cfg.dtype,
        "model_dtype": cfg.model_dtype,
        "context_len": provenance.context_len,
        "dataset": provenance.dataset,
        "text_field": cfg.text_field,
        "bos_token_id": bos_id(lm.tokenizer),
        "n_contexts": 0,
        "n_tokens": 0,
        "n_nonfinite_skipped": 0,
        "world": world,
        "complete": False,
        "shards": [],
    }


def _existing_manifest(cfg: HarvestConfig, site: Site, out: Path, resume: bool, dist: Dist) -> dict | None:
    """This rank's manifest to continue from, or None for a fresh directory; refuses to clobber data."""
    if not (out / manifest_name(dist)).exists():
        if (out / MANIFEST).exists():
            raise HarvestError(f"{out} already holds activations from a run of another number of processes; "
                               "resume with the same number or choose another --out")
        return None
    if not resume:
        raise HarvestError(f"{out} already holds activations; pass --resume to continue it or choose another --out")
    manifest = read_manifest(out, manifest_name(dist))
    manifest.setdefault("world", 1)  # manifests from before distributed harvesting
    wanted = {**cfg.to_dict(), "model_spec": cfg.model, "site": site.name, "world": dist.world}
    clashes = [f"{k}: {manifest.get(k)!r} != {wanted[k]!r}" for k in (*IDENTITY, "world") if manifest.get(k) != wanted[k]]
    if clashes:
        raise HarvestError(f"cannot resume {out}: it was harvested with other settings ({'; '.join(clashes)})")
    return manifest


def batched(contexts: Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """Stack contexts into [batch, context_len] tensors; the last batch may be smaller."""
    it = iter(contexts)
    while batch := list(islice(it, batch_size)):
        yield torch.stack(batch)


def harvest(cfg: HarvestConfig, out: Path | str, resume: bool = False, lm: LoadedModel | None = None,
            progress: bool = True, contexts: Iterable[torch.Tensor] | None = None, dist: Dist | None = None) -> dict:
    """Write `cfg.tokens` activation rows at each of `cfg.site`'s sites into `out`; returns the final manifest
    (for several sites, sites.json's, which counts the rows of the site with fewest).

    `contexts` replaces the corpus named in `cfg` (benchmarks feed the very batches they compare with).
    With `dist` of several ranks every rank calls this; each harvests its share and rank 0 merges.
    """
    dist = dist or Dist()
    out = Path(out)
    if cfg.tokens < max(1, dist.world):
        raise HarvestError(f"--tokens must be positive and at least one per process, got {cfg.tokens}")
    sites = parse_sites(cfg.site)  # a malformed name fails before the model's slow load
    _check_layout(out, sites)
    dirs = _site_directories(out, sites)
    found = [_existing_manifest(cfg, site, d, resume, dist) for site, d in zip(sites, dirs)]
    manifests = [m for m in found if m is not None and m["n_tokens"] >= rank_tokens(cfg.tokens, dist)]
    if len(manifests) < len(sites):
        manifests = _harvest_share(cfg, out, sites, found, lm, progress, contexts, dist)
    for directory, manifest in zip(dirs, manifests):
        if not manifest["complete"]:  # killed after writing its last shard, before saying it was done
            manifest["complete"] = True
            atomic_write_json(directory / manifest_name(dist), manifest)
    if dist.active:
        dist.barrier()
        if dist.is_main:
            for directory in dirs:
                merge_rank_manifests(directory, dist.world)
        dist.barrier()
        manifests = [read_manifest(d) for d in dirs]
    if len(sites) == 1:
        return manifests[0]
    return _write_site_list(out, cfg, sites, manifests, dist)


def _site_directories(out: Path, sites: Sequence[Site]) -> list[Path]:
    """Where each site's harvest goes: `out` itself for one site, a directory per site (named after it) for several."""
    return [out] if len(sites) == 1 else [out / site.name for site in sites]


def _check_layout(out: Path, sites: Sequence[Site]) -> None:
    """Refuse to mix layouts: one site's harvest where several sites' lives, or the reverse, or other sites."""
    listed = list(harvest_sites(out))
    wanted = [site.name for site in sites] if len(sites) > 1 else []
    if listed != wanted and (listed or (out / MANIFEST).exists()):
        raise HarvestError(f"{out} already holds activations at {', '.join(listed) or 'one site'}, not at "
                           f"{', '.join(s.name for s in sites)}; choose another --out")


def _write_site_list(out: Path, cfg: HarvestConfig, sites: Sequence[Site], manifests: Sequence[dict] | None,
                     dist: Dist) -> dict:
    """sites.json (rank 0 writes it): the sites in forward order, and once they are done, what they hold."""
    listing: dict = {"format": SITES_FORMAT, "model_spec": cfg.model, "sites": [site.name for site in sites],
                     "complete": False}
    if manifests:
        listing.update(model=manifests[0]["model"], n_tokens=min(m["n_tokens"] for m in manifests),
                       n_nonfinite_skipped=sum(m.get("n_nonfinite_skipped", 0) for m in manifests),
                       complete=all(m["complete"] for m in manifests))
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / SITES_FILE, listing)
    return listing


def rank_tokens(tokens: int, dist: Dist) -> int:
    """This rank's share of the rows (the first `tokens % world` ranks take one more)."""
    return tokens // dist.world + (dist.rank < tokens % dist.world)


def _harvest_share(cfg: HarvestConfig, out: Path, sites: Sequence[Site], manifests: Sequence[dict | None],
                   lm: LoadedModel | None, progress: bool, contexts: Iterable[torch.Tensor] | None,
                   dist: Dist) -> list[dict]:
    """This rank's rows at every site: every world-th context from its rank on, continuing after its last shards."""
    dtype = parse_dtype(cfg.dtype)
    lm = lm or load_model(cfg.model, dtype=parse_dtype(cfg.model_dtype), device=str(dist.device))
    sites = [site.within(num_layers(lm.model)) for site in sites]
    fresh = [_new_manifest(cfg, lm, Provenance(model=lm.name, site=site, dataset=cfg.dataset,
                                               context_len=cfg.context_len), site, dist.world) for site in sites]
    reopened = [_reopen_last_shard(m) if m else new for m, new in zip(manifests, fresh)]
    start = _common_start(reopened)
    if len(sites) > 1:
        _write_site_list(out, cfg, sites, None, dist)
    outputs = []
    for site, directory, manifest in zip(sites, _site_directories(out, sites), reopened):
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(directory / manifest_name(dist), manifest)  # before any shard file is written again
        outputs.append(_SiteOutput(site, directory, manifest, rank_tokens(cfg.tokens, dist), dist))
    if contexts is None:
        contexts = iter_contexts(iter_documents(cfg.dataset, cfg.text_field), lm.tokenizer, cfg.context_len)
    mine = islice(contexts, dist.rank + start * dist.world, None, dist.world)
    _run(cfg, lm, outputs, mine, start, dtype, progress and dist.is_main)
    for output in outputs:
        output.manifest["complete"] = True
        atomic_write_json(output.out / manifest_name(dist), output.manifest)
    return [output.manifest for output in outputs]


def _reopen_last_shard(manifest: dict) -> dict:
    """The manifest without its last shard, marked incomplete: resuming redoes that shard from its first context.

    The last shard may stop inside a batch, where the old budget ran out, and a direct run with a larger
    budget would have carried on there; shard boundaries also differ. Every earlier shard ended where a
    full batch took it past `shard_tokens`, as it does in any run, so continuing from here is exact.
    """
    if manifest["shards"]:
        _drop_last_shard(manifest)
    manifest["complete"] = False
    return manifest


def _drop_last_shard(manifest: dict) -> None:
    last = manifest["shards"].pop()
    manifest["n_tokens"] -= last["rows"]
    manifest["n_contexts"] -= last["contexts"]
    manifest["n_nonfinite_skipped"] = manifest.get("n_nonfinite_skipped", 0) - last.get("nonfinite_skipped", 0)


def _common_start(manifests: Sequence[dict]) -> int:
    """Drop sites' trailing shards until all end at one context, where one forward continues them all; that context.

    Sites part only when a kill lands between their shard writes, or when rows left out by `skip_nonfinite`
    move their shard boundaries. Every boundary kept is a non-last one, so resuming stays exact (above).
    """
    while len(ends := {m["n_contexts"] for m in manifests}) > 1:
        for manifest in manifests:
            while manifest["n_contexts"] > min(ends):
                _drop_last_shard(manifest)
    return manifests[0]["n_contexts"]


def merge_rank_manifests(out: Path, world: int) -> dict:
    """One manifest listing every rank's shards, ordered by first context; complete when every rank is."""
    parts = [read_manifest(out, manifest_name(Dist(rank, world))) for rank in range(world)]
    merged = {**parts[0], "shards": sorted((e for p in parts for e in p["shards"]), key=lambda e: e["first_context"]),
              "n_tokens": sum(p["n_tokens"] for p in parts), "n_contexts": sum(p["n_contexts"] for p in parts),
              "n_nonfinite_skipped": sum(p.get("n_nonfinite_skipped", 0) for p in parts),
              "complete": all(p["complete"] for p in parts)}
    atomic_write_json(out / MANIFEST, merged)
    return merged


class _SiteOutput:
    """One site's side of a harvest run: its manifest and shard writer, the rows buffered and the rows written."""

    def __init__(self, site: Site, out: Path, manifest: dict, budget: int, dist: Dist):
        self.site, self.out, self.manifest, self.budget, self.dist = site, out, manifest, budget, dist
        self.writer = _ShardWriter(out, manifest, dist)
        self.buffer = _ShardBuffer()
        self.done = manifest["n_tokens"]
        self.shards = len(manifest["shards"])

    @property
    def rows(self) -> int:
        """Rows written or buffered."""
        return self.done + self.buffer.rows

    @property
    def finished(self) -> bool:
        return self.done >= self.budget

    def add(self, cfg: HarvestConfig, dtype: torch.dtype, acts_RD: torch.Tensor, positions_R2: torch.Tensor,
            ids_BT: torch.Tensor, first: int) -> None:
        """Buffer a batch's rows up to the budget; a full shard, or the budget reached, goes to the writer."""
        # Checked as stored: a float16 cast overflows to inf above 65504.
        acts_RD, positions_R2, bad_R2 = _finite_rows(acts_RD.to(dtype), positions_R2, cfg.skip_nonfinite,
                                                     self.out / shard_name(self.dist, self.shards), self.buffer.rows)
        keep = min(acts_RD.shape[0], self.budget - self.rows)
        if keep < acts_RD.shape[0]:  # the budget ends inside this batch: keep only contexts it reaches
            ids_BT = ids_BT[: (int(positions_R2[keep - 1, 0]) - first) // self.dist.world + 1]
        skipped = int((bad_R2[:, 0] < first + ids_BT.shape[0] * self.dist.world).sum())  # in the contexts kept
        self.buffer.add(acts_RD[:keep], positions_R2[:keep], ids_BT, first, skipped)
        if self.buffer.rows >= cfg.shard_tokens or self.rows >= self.budget:
            self.flush()

    def flush(self) -> None:
        """Hand the buffered rows, if any, to the writer as one shard."""
        if self.buffer.rows:
            self.done += self.buffer.rows
            self.writer.submit(self.buffer.take())
            self.shards += 1


def _run(cfg: HarvestConfig, lm: LoadedModel, outputs: Sequence[_SiteOutput], contexts: Iterator[torch.Tensor],
         next_context: int, dtype: torch.dtype, progress: bool) -> None:
    """The harvesting loop: one forward per batch for the sites short of their budget, rows to each site's shards.

    `next_context` counts this rank's contexts; the global number of the next is rank + next_context * world.
    """
    specials = special_ids(lm.tokenizer)
    dist = outputs[0].dist
    bar = tqdm(total=outputs[0].budget, initial=min(o.rows for o in outputs), unit="tok", unit_scale=True,
               desc="harvest", disable=not progress)
    try:
        for ids_BT in batched(contexts, cfg.batch_size):
            first = dist.rank + next_context * dist.world
            pending = [o for o in outputs if not o.finished]
            acts, positions_R2 = _activation_rows(lm, [o.site for o in pending], ids_BT, specials, first, dist.world)
            for output, acts_RD in zip(pending, acts):
                output.add(cfg, dtype, acts_RD, positions_R2, ids_BT, first)
            next_context += ids_BT.shape[0]
            bar.update(min(o.rows for o in outputs) - bar.n)
            if all(o.finished for o in outputs):
                break
        for output in outputs:
            output.flush()
    finally:
        for output in outputs:
            output.writer.close()
        bar.close()
    if any(o.manifest["n_tokens"] == 0 for o in outputs):
        raise HarvestError("the corpus produced no activation rows")


def _finite_rows(acts_RD: torch.Tensor, positions_R2: torch.Tensor, skip: bool, shard: Path,
                 shard_row: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(finite rows, their positions, the positions of the rows left out); without `skip` a non-finite row is an error.

    One row-sum check per batch (finite.nonfinite_rows); the error names the shard and row the bad one would have been.
    """
    bad = nonfinite_rows(acts_RD)
    if bad is None:
        return acts_RD, positions_R2, positions_R2[:0]
    if not skip:
        context, position = positions_R2[int(bad[0])].tolist()
        detail = f" (context {context}, position {position}), so that shard was not written and the shards before it are kept"
        hint = "pass --skip-nonfinite (with --resume to keep them) to leave such rows out, or --dtype bfloat16 if fp16 overflowed"
        raise nonfinite_error(str(shard), shard_row + int(bad[0]), detail, hint)
    keep_R = finite_row_mask(acts_RD)
    return acts_RD[keep_R], positions_R2[keep_R], positions_R2[~keep_R]


@torch.inference_mode()
def _activation_rows(lm: LoadedModel, sites: Sequence[Site], ids_BT: torch.Tensor, specials: torch.Tensor,
                     first_context: int, stride: int = 1) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each site's activations of the non-special tokens of a batch (one forward), with their (global context,
    position) addresses, the same for every site.

    Row b of the batch is global context `first_context + b * stride` (a rank takes every stride-th context).
    """
    acts, keep_BT = sites_token_rows(lm.model, sites, ids_BT, specials)
    positions_R2 = keep_BT.nonzero().to(torch.int32)
    positions_R2[:, 0] = positions_R2[:, 0] * stride + first_context
    return [acts_RD.cpu() for acts_RD in acts], positions_R2


def token_rows(model: PreTrainedModel, site: Site, ids_BT: torch.Tensor,
               specials: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations [R, D] of the non-special tokens of a batch of contexts (on the model's device), and the mask.

    Special tokens (BOS above all) are left out of every activation set: their norms are outliers. The
    mask [B, T] says which positions the rows are, on the device `ids_BT` came on.
    """
    [acts_RD], keep_BT = sites_token_rows(model, (site,), ids_BT, specials)
    return acts_RD, keep_BT


def sites_token_rows(model: PreTrainedModel, sites: Sequence[Site], ids_BT: torch.Tensor,
                     specials: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """token_rows at several sites from one forward that stops after the deepest: rows [R, D] per site, one mask."""
    acts = truncated_forward_sites(model, sites, ids_BT.to(model.device))
    keep_BT = ~torch.isin(ids_BT, specials)
    keep_on_device = keep_BT.to(acts[0].device)
    return [acts_BTD[keep_on_device] for acts_BTD in acts], keep_BT
