"""What a feature's decoder direction does to the logits: the tokens it promotes and suppresses (siblings: neighbours.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..sites import decoder_layers

if TYPE_CHECKING:  # transformers takes seconds to import; only model-running paths import it
    from transformers import PreTrainedModel

CHUNK = 256
"""Features handled at once, so a [chunk, vocab] block is all that is held."""


@dataclass(frozen=True)
class TopTable:
    """The k best (and for logits, k worst) indices and values per feature."""

    index_FK: torch.Tensor
    value_FK: torch.Tensor


class DirectionError(ValueError):
    """The model lacks the structure needed to read decoder directions out as logits."""


def final_norm_and_unembed(model: PreTrainedModel) -> tuple[nn.Module, nn.Module]:
    """The model's last normalisation (outside the decoder blocks) and its output embedding.

    Found by structure: the last module whose class name ends in "Norm" and that lies outside every
    decoder block (Llama/Qwen/Gemma `model.norm`, GPT-2 `transformer.ln_f`, NeoX `final_layer_norm`).
    """
    unembed = model.get_output_embeddings()
    if unembed is None:
        raise DirectionError(f"{type(model).__name__} has no output embedding")
    inside = {id(m) for m in decoder_layers(model).modules()}
    norms = [m for m in model.modules() if type(m).__name__.endswith("Norm") and id(m) not in inside]
    if not norms:
        raise DirectionError(f"cannot find the final norm of {type(model).__name__}")
    return norms[-1], unembed


@torch.no_grad()
def logit_effects(model: PreTrainedModel, W_dec_FD: torch.Tensor, k: int) -> tuple[TopTable, TopTable]:
    """Tokens each decoder direction most promotes and most suppresses, read through norm and unembedding."""
    norm, unembed = final_norm_and_unembed(model)
    param = unembed.weight
    promoted, suppressed = [], []
    for chunk_CD in W_dec_FD.split(CHUNK):
        logits_CV = unembed(norm(chunk_CD.to(param.device, param.dtype)[:, None, :]))[:, 0, :].float()
        top = logits_CV.topk(k, dim=1)
        bottom = logits_CV.topk(k, dim=1, largest=False)
        promoted.append((top.indices.cpu(), top.values.cpu()))
        suppressed.append((bottom.indices.cpu(), bottom.values.cpu()))
    return _stack(promoted), _stack(suppressed)


def _stack(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> TopTable:
    """Join per-chunk (indices, values) into one table."""
    return TopTable(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
