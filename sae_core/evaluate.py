"""Evaluate an SAE: reconstruction and sparsity on stored activations, and CE loss with it spliced in.

No figure is computed over NaN: stored activations are checked as they are read (see activations.py), and
the CE pass checks the site's activations and each loss on the positions it counts, naming the context.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch import nn

from .activations import ActivationSource
from .data import iter_contexts, iter_documents, special_ids
from .finite import NonFiniteError, finite_row_mask
from .harvest import batched
from .hooks import splice_from
from .lm import LoadedModel
from .metrics import ReconstructionStats, ce_loss_recovered
from .saes import SAE
from .sites import Site


@torch.no_grad()
def reconstruction_metrics(sae: SAE, batches: Iterable[torch.Tensor]) -> dict[str, float | int]:
    """mse, fvu, explained variance, l0, dead and dense fractions over every row of `batches`.

    The figures are of the SAE's target: the rows themselves, or a transcoder's MLP output (`split_rows`).
    """
    stats = ReconstructionStats()
    for rows_ND in batches:
        x_ND, y_ND = sae.split_rows(rows_ND.float())
        selection = sae.row_topk_selection(x_ND)
        if selection is None:
            f_NF = sae.encode(x_ND)
            stats.add(y_ND, sae.add_skip(sae.decode(f_NF), x_ND), f_NF)
        else:  # k per row: decoded from the k, not a dense [N, d_sae] product (half the evaluation's time)
            acts = selection[1]
            stats.add(y_ND, sae.add_skip(sae.decode_sparse(acts), x_ND), fired_count_F=acts.fire_counts(sae.d_local))
    return stats.summary()


def evaluate_activations(sae: SAE, source: ActivationSource, max_rows: int | None = None,
                         batch_size: int = 4096) -> dict[str, float | int]:
    """Reconstruction metrics on the first `max_rows` rows of a source (all rows when None)."""
    if source.d_in != sae.row_width:
        raise ValueError(f"the activations have width {source.d_in}, the {sae.cfg.architecture} expects rows "
                         f"{sae.row_width} wide (d_in={sae.cfg.d_in})")
    return reconstruction_metrics(sae, _limited(source.iter_rows(batch_size), max_rows))


def _limited(batches: Iterable[torch.Tensor], max_rows: int | None) -> Iterable[torch.Tensor]:
    remaining = max_rows
    for batch in batches:
        if remaining is not None:
            if remaining <= 0:
                return
            batch = batch[:remaining]
            remaining -= len(batch)
        yield batch


def _next_token_losses(model: nn.Module, ids_BT: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of predicting token t+1 at every position t, [B, T-1]."""
    logits = model(input_ids=ids_BT, use_cache=False).logits[:, :-1].float()
    return F.cross_entropy(logits.flatten(0, 1), ids_BT[:, 1:].flatten(), reduction="none").view(len(ids_BT), -1)


def _reconstruct(sae: SAE, x_BTD: torch.Tensor) -> torch.Tensor:
    """The SAE's reconstruction of [B, T, D] activations, in their dtype."""
    return sae(x_BTD.flatten(0, -2).float()).view_as(x_BTD).to(x_BTD.dtype)


def _require_finite(finite_BT: torch.Tensor, counted_BT: torch.Tensor, what: str, first_context: int) -> None:
    """Raise naming the first counted position of a batch where `finite_BT` is False (one reduction when none)."""
    bad_BT = counted_BT & ~finite_BT
    if bool(bad_BT.any()):
        b, t = bad_BT.nonzero()[0].tolist()
        raise NonFiniteError(f"{what} at context {first_context + b}, position {t}; no CE figure is computed over them")


@torch.no_grad()
def ce_metrics(model: nn.Module, spliced: Sequence[tuple[SAE, Site]], contexts: Iterable[torch.Tensor],
               special_ids: torch.Tensor, first_context: int = 0) -> dict[str, float]:
    """CE loss clean, with every SAE's reconstruction spliced in at once, and with those sites zero-ablated.

    The site each SAE writes is its output site: the site it reads, or for a transcoder reading an MLP's input
    the MLP's output, replaced by the transcoder's prediction from that input (and zero-ablated for the
    baseline). With one transcoder per layer this is the replacement model's loss, every MLP replaced.

    Positions holding special tokens (BOS above all) keep their activation and are left out of the
    loss: SAEs are trained without them, and their huge norms would dominate the comparison. The first
    context is number `first_context` in the messages about non-finite values.
    """
    if not spliced:
        raise ValueError("give at least one SAE to splice in")
    totals = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    count = 0
    for ids_BT in contexts:
        ids_BT = ids_BT.long()
        keep_BT = torch.isin(ids_BT, special_ids)
        counted = ~keep_BT[:, :-1]
        for name in totals:
            with ExitStack() as stack:
                for sae, site in spliced:
                    fn = _replacement(name, sae, sae.output_site(site), keep_BT, first_context)
                    stack.enter_context(splice_from(model, site, sae.output_site(site), fn))
                losses_BT = _next_token_losses(model, ids_BT)
            _require_finite(torch.isfinite(losses_BT), counted, f"the {name} next-token loss is NaN or infinite",
                            first_context)
            totals[name] += float(losses_BT[counted].double().sum())
        count += int(counted.sum())
        first_context += len(ids_BT)
    if count == 0:
        raise ValueError("no non-special token positions to evaluate the CE loss on")
    result = {f"ce_{name}": total / count for name, total in totals.items()}
    result["ce_loss_recovered"] = ce_loss_recovered(result["ce_clean"], result["ce_sae"], result["ce_zero"])
    result["ce_tokens"] = count
    return result


def _replacement(name: str, sae: SAE, written: Site, keep_BT: torch.Tensor,
                 first_context: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """What one pass of ce_metrics puts at a site (special-token positions always keep their activation):
    the activation checked finite ("clean"), the SAE's reconstruction ("sae"), or zeros ("zero")."""
    def clean(_x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        finite_BT = finite_row_mask(y.flatten(0, -2)).view(keep_BT.shape)
        _require_finite(finite_BT, ~keep_BT, f"the model's activations at {written.name} are NaN or infinite",
                        first_context)
        return y

    def with_sae(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(keep_BT[..., None], y, _reconstruct(sae, x))

    def zeroed(_x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(keep_BT[..., None], y, torch.zeros_like(y))

    return {"clean": clean, "sae": with_sae, "zero": zeroed}[name]


def ce_on_corpus(lm: LoadedModel, sae: SAE | Sequence[SAE], dataset: str, *, n_contexts: int = 64, context_len: int = 128,
                 skip_contexts: int = 0, batch_size: int = 8, text_field: str = "text") -> dict[str, float]:
    """CE metrics over `n_contexts` contexts of a corpus, after skipping the first `skip_contexts`, with one SAE
    or several (a transcoder per layer: the replacement model) spliced in.

    Skipping the contexts a harvest used keeps the CE evaluation on text the SAE was not trained on.
    """
    if n_contexts <= 0:
        raise ValueError(f"the CE evaluation needs at least one context, got {n_contexts}")
    contexts = itertools.islice(iter_contexts(iter_documents(dataset, text_field), lm.tokenizer, context_len),
                                skip_contexts, skip_contexts + n_contexts)
    saes = [sae] if isinstance(sae, SAE) else list(sae)
    return ce_metrics(lm.model, [(s, s.site_in(lm.model)) for s in saes], batched(contexts, batch_size),
                      special_ids(lm.tokenizer), first_context=skip_contexts)

