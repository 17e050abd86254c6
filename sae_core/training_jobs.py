"""What `train` trains from its inputs: one SAE per site of a several-site harvest, or one SAE; for a
transcoder, one per layer of a harvest of MLP inputs and outputs (`layers.N.mlp`), from their paired rows.

Each job is an SAE's rows, the rows it is scored on, its budget and its directory. The jobs of a several-site
harvest run one after another in one process; training is a pure function of its configs and data, so each
site's SAE is the one training it alone with the same seed makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .activations import ActivationSource, holdout_rows, open_activations, paired
from .distributed import Dist
from .harvest import harvest_sites
from .lm import LoadedModel
from .saes.artifact import set_member_directories, write_sae_set
from .sites import mlp_pairs, num_layers, parse_site
from .streaming import stream_from_corpus
from .train import TrainingData


@dataclass(frozen=True)
class TrainingJob:
    """One SAE to train: its rows, the rows it is scored on and how they were chosen, its budget and directory."""

    site: str
    source: Path | None
    """The activations the rows are read from; None for rows streamed from a model."""
    rows: TrainingData
    heldout: ActivationSource | None
    eval_rows: str
    budget: int
    out: Path
    extra: dict = field(default_factory=dict)
    """Further figures for metrics.json (rows left out as non-finite)."""


def stored_jobs(activations: Path, out: Path, tokens: int | None, holdout: int | None, skip_nonfinite: bool,
                dist: Dist, site: str | None = None, pairs: bool = False) -> list[TrainingJob]:
    """One SAE per site of a several-site harvest, each in its own directory of a set directory at `out`; else one.

    `site` names where a bare array was read (a harvest knows its own sites), so cfg.json can say it. With
    `pairs` (a transcoder) the jobs are one per layer, see `pair_jobs`.
    """
    sites = harvest_sites(activations)
    if pairs:
        return pair_jobs(activations, sites, out, tokens, holdout, skip_nonfinite, dist, site)
    if not sites:
        return [stored_job(activations, out, tokens, holdout, skip_nonfinite, site)]
    if site is not None:
        raise ValueError(f"--site names a bare array's site; {activations} is a harvest at {', '.join(sites)}")
    return [stored_job(sites[name], directory, tokens, holdout, skip_nonfinite)
            for name, directory in _set_directories(out, list(sites), dist).items()]


def _set_directories(out: Path, names: list[str], dist: Dist) -> dict[str, Path]:
    """Each member's directory of the set directory at `out` (rank 0 writes its listing)."""
    return write_sae_set(out, names) if dist.is_main else set_member_directories(out, names)


def pair_jobs(activations: Path, sites: dict[str, Path], out: Path, tokens: int | None, holdout: int | None,
              skip_nonfinite: bool, dist: Dist, site: str | None = None) -> list[TrainingJob]:
    """One transcoder per layer of a harvest at MLP inputs and outputs, on each layer's paired rows.

    One layer's transcoder is written to `out` itself; several make a set directory there, each transcoder named
    after the site its encoder reads (`layers.N.mlp_in`), as any set's SAEs are named after theirs.
    """
    if not sites:
        raise ValueError(f"a transcoder trains on a harvest of MLP inputs and outputs (harvest --site layers.N.mlp, "
                         f"or layers.A-B.mlp for several layers); {activations} holds one site's rows")
    if site is not None:
        raise ValueError(f"--site names a bare array's site; {activations} is a harvest at {', '.join(sites)}")
    layer_pairs = mlp_pairs([parse_site(name) for name in sites])
    directories = ({layer_pairs[0][0].name: out} if len(layer_pairs) == 1 else
                   _set_directories(out, [x.name for x, _ in layer_pairs], dist))
    return [_job(paired(open_activations(sites[x.name], skip_nonfinite), open_activations(sites[y.name], skip_nonfinite)),
                 sites[x.name], directories[x.name], tokens, holdout, skip_nonfinite)
            for x, y in layer_pairs]


def stored_job(activations: Path, out: Path, tokens: int | None, holdout: int | None,
               skip_nonfinite: bool, site: str | None = None) -> TrainingJob:
    """Training on stored rows, the tail held out for metrics.json; the budget defaults to one pass."""
    data = open_activations(activations, skip_nonfinite=skip_nonfinite)
    if site is not None:
        data = data.at_site(parse_site(site))
    return _job(data, activations, out, tokens, holdout, skip_nonfinite)


def _job(data: ActivationSource, activations: Path, out: Path, tokens: int | None, holdout: int | None,
         skip_nonfinite: bool) -> TrainingJob:
    """The job over a source's rows, its tail held out (`holdout` rows, or the default share)."""
    held = holdout_rows(data.n_rows) if holdout is None else holdout
    train_rows, heldout = data.split_tail(held) if held else (data, data)
    site = data.provenance.site.name if data.provenance.site else str(activations)
    return TrainingJob(site, activations, train_rows, heldout, "held-out tail" if held else "training rows",
                       tokens or train_rows.n_rows, out,
                       {"nonfinite_rows_skipped": data.nonfinite_skipped} if skip_nonfinite else {})


def streamed_job(lm: LoadedModel, site: str, dataset: str, context: int, holdout_contexts: int, tokens: int,
                 out: Path) -> TrainingJob:
    """Training on rows streamed from the model; its first contexts are held out for metrics.json."""
    parsed = parse_site(site, num_layers(lm.model))
    rows, heldout = stream_from_corpus(lm, parsed, dataset, context_len=context, holdout_contexts=holdout_contexts)
    return TrainingJob(parsed.name, None, rows, heldout, f"first {holdout_contexts} contexts (not trained on)", tokens, out)
