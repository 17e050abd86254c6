"""Evaluate an SAE: reconstruction and sparsity on stored activations, and CE loss with it spliced in."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .activations import ActivationSource
from .data import iter_contexts, iter_documents, special_ids
from .harvest import batched
from .hooks import splice
from .lm import LoadedModel
from .metrics import ReconstructionStats, ce_loss_recovered
from .saes import SAE
from .sites import Site


@torch.no_grad()
def reconstruction_metrics(sae: SAE, batches: Iterable[torch.Tensor]) -> dict[str, float | int]:
    """mse, fvu, explained variance, l0, dead and dense fractions over every row of `batches`."""
    stats = ReconstructionStats()
    for x_ND in batches:
        x_ND = x_ND.float()
        f_NF = sae.encode(x_ND)
        stats.add(x_ND, sae.decode(f_NF), f_NF)
    return stats.summary()


def evaluate_activations(sae: SAE, source: ActivationSource, max_rows: int | None = None,
                         batch_size: int = 4096) -> dict[str, float | int]:
    """Reconstruction metrics on the first `max_rows` rows of a source (all rows when None)."""
    if source.d_in != sae.cfg.d_in:
        raise ValueError(f"the activations have width {source.d_in}, the SAE expects d_in={sae.cfg.d_in}")
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


@torch.no_grad()
def ce_metrics(model: nn.Module, sae: SAE, site: Site, contexts: Iterable[torch.Tensor],
               special_ids: torch.Tensor) -> dict[str, float]:
    """CE loss clean, with the SAE's reconstruction spliced in, and with the site zero-ablated.

    Positions holding special tokens (BOS above all) keep their activation and are left out of the
    loss: SAEs are trained without them, and their huge norms would dominate the comparison.
    """
    totals = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    count = 0
    for ids_BT in contexts:
        ids_BT = ids_BT.long()
        keep_BT = torch.isin(ids_BT, special_ids)
        counted = ~keep_BT[:, :-1]
        replacements = {
            "clean": None,
            "sae": lambda x, keep_BT=keep_BT: torch.where(keep_BT[..., None], x, _reconstruct(sae, x)),
            "zero": lambda x, keep_BT=keep_BT: torch.where(keep_BT[..., None], x, torch.zeros_like(x)),
        }
        for name, fn in replacements.items():
            if fn is None:
                losses_BT = _next_token_losses(model, ids_BT)
            else:
                with splice(model, site, fn):
                    losses_BT = _next_token_losses(model, ids_BT)
            totals[name] += float(losses_BT[counted].double().sum())
        count += int(counted.sum())
    if count == 0:
        raise ValueError("no non-special token positions to evaluate the CE loss on")
    result = {f"ce_{name}": total / count for name, total in totals.items()}
    result["ce_loss_recovered"] = ce_loss_recovered(result["ce_clean"], result["ce_sae"], result["ce_zero"])
    result["ce_tokens"] = count
    return result


def ce_on_corpus(lm: LoadedModel, sae: SAE, dataset: str, *, n_contexts: int = 64, context_len: int = 128,
                 skip_contexts: int = 0, batch_size: int = 8, text_field: str = "text") -> dict[str, float]:
    """CE metrics over `n_contexts` contexts of a corpus, after skipping the first `skip_contexts`.

    Skipping the contexts a harvest used keeps the CE evaluation on text the SAE was not trained on.
    """
    if n_contexts <= 0:
        raise ValueError(f"the CE evaluation needs at least one context, got {n_contexts}")
    contexts = itertools.islice(iter_contexts(iter_documents(dataset, text_field), lm.tokenizer, context_len),
                                skip_contexts, skip_contexts + n_contexts)
    return ce_metrics(lm.model, sae, sae.site_in(lm.model), batched(contexts, batch_size), special_ids(lm.tokenizer))

