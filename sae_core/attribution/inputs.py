"""A request turned into token ids and the metric it measures, checked once at the edge."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data import CorpusError, bos_id
from ..lm import LoadedModel
from .config import AttributionConfig, AttributionError, AttributionRequest


@dataclass(frozen=True)
class Metric:
    """log p(target) at a position, or logit(target) - logit(contrast) there."""

    position: int
    """Position whose next-token prediction is read."""
    target: int
    """Token id of the target."""
    contrast: int | None = None
    """Token id of the contrast; None: the metric is the target's log-probability."""

    @property
    def name(self) -> str:
        """How the metric is described on pages and in exports."""
        return "logit difference" if self.contrast is not None else "log-probability"

    def __call__(self, model: PreTrainedModel, ids_BT: torch.Tensor) -> torch.Tensor:
        """The metric of each row [B]; only the measured position's logits are computed."""
        keep = ids_BT.shape[1] - self.position
        logits_BV = model(input_ids=ids_BT, use_cache=False, logits_to_keep=keep).logits[:, 0].float()
        if self.contrast is not None:
            return logits_BV[:, self.target] - logits_BV[:, self.contrast]
        return torch.log_softmax(logits_BV, dim=-1)[:, self.target]


@dataclass(frozen=True)
class Inputs:
    """The clean prompt's ids, the corrupted prompt's (or None: zero-ablation) and the metric."""

    ids_T: torch.Tensor
    corrupted_T: torch.Tensor | None
    metric: Metric
    tokens: tuple[str, ...]
    """Each prompt token as text, for tables and graph columns."""


CANDIDATES = 8
"""Likeliest tokens read per token offered, so that k remain after those that cannot be typed back."""


def token_text(tokenizer: PreTrainedTokenizerBase, token_id: int) -> str:
    """One token as text."""
    return str(tokenizer.decode([token_id]))


def prompt_ids(tokenizer: PreTrainedTokenizerBase, text: str, field: str, cap: int) -> list[int]:
    """Token ids of raw text after the BOS (as recorded and as the feature pages run it), or an error naming `field`."""
    if not text.strip():
        raise AttributionError(field, f"the {field} is empty")
    try:
        ids = [bos_id(tokenizer), *tokenizer(text, add_special_tokens=False).input_ids]
    except CorpusError as err:
        raise AttributionError(field, str(err)) from None
    if len(ids) > cap:
        raise AttributionError(field, f"the {field} is {len(ids)} tokens; the limit is {cap}")
    return ids


def starts_special(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> bool:
    """Whether the prompt's first token is a special one (a BOS), which a replacement graph holds constant."""
    return bool(ids) and ids[0] in set(tokenizer.all_special_ids)


def one_token(tokenizer: PreTrainedTokenizerBase, text: str, field: str) -> int:
    """The id of a text that is exactly one token (leading spaces count), or an error showing its split."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) != 1:
        pieces = [token_text(tokenizer, i) for i in ids]
        raise AttributionError(field, f"the {field} {text!r} is {len(ids)} tokens ({pieces}); give exactly one token")
    return ids[0]


def prepare(tokenizer: PreTrainedTokenizerBase, request: AttributionRequest, cfg: AttributionConfig) -> Inputs:
    """Tokenise and check a request: one-token target/contrast, a position inside the prompt, equal lengths."""
    ids = prompt_ids(tokenizer, request.prompt, "prompt", cfg.max_tokens)
    position = len(ids) - 1 if request.position is None else request.position
    if not 0 <= position < len(ids):
        raise AttributionError("position", f"position {position} is past the prompt's {len(ids)} tokens (0..{len(ids) - 1})")
    if position == 0 and cfg.freeze_bos:
        raise AttributionError("position", "position 0 is the BOS, held at its clean value (freeze_bos), so nothing "
                                           "there could explain it; measure a later position")
    corrupted = None
    if request.corrupted is not None:
        corrupted = prompt_ids(tokenizer, request.corrupted, "corrupted", cfg.max_tokens)
        if len(corrupted) != len(ids):
            raise AttributionError("corrupted", f"the corrupted prompt is {len(corrupted)} tokens; it must be "
                                                f"{len(ids)}, as long as the prompt")
    target = one_token(tokenizer, request.target, "target")
    contrast = None if request.contrast is None else one_token(tokenizer, request.contrast, "contrast")
    if contrast == target:
        raise AttributionError("contrast", "the contrast token is the target token; the difference would be 0")
    return Inputs(
        ids_T=torch.tensor(ids),
        corrupted_T=None if corrupted is None else torch.tensor(corrupted),
        metric=Metric(position, target, contrast),
        tokens=tuple(token_text(tokenizer, i) for i in ids),
    )


def typed_back(tokenizer: PreTrainedTokenizerBase, token_id: int) -> str | None:
    """The token's text if typing that text gives the token again, else None: a byte piece of a character decodes
    to U+FFFD and some tokens to "", and neither can then be asked for as a target."""
    text = token_text(tokenizer, token_id)
    return text if text and tokenizer(text, add_special_tokens=False).input_ids == [token_id] else None


@torch.no_grad()
def top_tokens(lm: LoadedModel, ids_T: torch.Tensor, k: int = 10) -> list[tuple[str, float]]:
    """The model's k most likely tokens after the ids that can be typed back as a target, with probabilities."""
    logits_V = lm.model(input_ids=ids_T[None], use_cache=False, logits_to_keep=1).logits[0, -1].float()
    probs, top = torch.softmax(logits_V, dim=-1).topk(min(CANDIDATES * k, logits_V.shape[-1]))
    typed = ((typed_back(lm.tokenizer, int(i)), float(p)) for i, p in zip(top, probs, strict=True))
    return list(islice(((text, p) for text, p in typed if text is not None), k))


def next_tokens(lm: LoadedModel, prompt: str, k: int = 10, cap: int = AttributionConfig.max_tokens) -> list[tuple[str, float]]:
    """The most likely next tokens after a prompt (to pick a target from)."""
    return top_tokens(lm, torch.tensor(prompt_ids(lm.tokenizer, prompt, "prompt", cap)), k)
