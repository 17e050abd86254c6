"""Token-by-token sampling with a KV cache: streamable, cancellable, several rows under one seed.

Every row of a batch reads the same prompt and draws its tokens with the same uniform random number at
each step (common random numbers), so two rows differ only where their next-token distributions differ:
a baseline and a steered run share one seed in the strongest sense.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # transformers takes seconds to import; only model-running paths import it
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Turn = Callable[[], AbstractContextManager[object]]
"""Entered around each forward of a generation and left before the token is handed on: a server that shares
the model passes one that takes the model for that forward alone, so others can use it between tokens."""

Stop = Callable[[], Sequence[bool]]
"""Asked after each forward: which rows end with the token drawn now (finished "trigger"), e.g. because a
steering hook saw a trigger feature fire in that forward."""


class GenerationError(ValueError):
    """Generation settings or a prompt outside what is allowed; the message says the limit."""


@dataclass(frozen=True)
class Sampling:
    """How tokens are drawn; chosen per request."""

    max_new_tokens: int = 64
    """Tokens to generate per row at most (a row also stops at an end-of-sequence token)."""
    temperature: float = 1.0
    """Softmax temperature; 0 picks the most likely token (greedy)."""
    top_p: float = 1.0
    """Nucleus sampling: draw only from the smallest set of tokens holding this much probability."""
    seed: int = 0
    """Seed of the one random stream all rows share."""


@dataclass(frozen=True)
class Limits:
    """Bounds a server sets once, so one request cannot hold the model for long."""

    max_prompt_tokens: int = 512
    """Longest prompt accepted, counted after the chat template."""
    max_new_tokens: int = 256
    """Hard cap on Sampling.max_new_tokens."""
    max_rows: int = 9
    """Most rows generated together (a baseline plus the steered runs of a sweep)."""


@dataclass(frozen=True)
class TokenEvent:
    """One generated token of one row, with the text it completes."""

    row: int
    """Which row of the batch (by convention row 0 is the baseline)."""
    step: int
    """Index of the token among the row's generated tokens, from 0."""
    token_id: int
    """The token drawn."""
    text: str
    """New text this token adds; empty while a multi-byte character is incomplete or for special tokens."""
    finished: str | None
    """None while the row goes on; "eos", "length" or "trigger" (see Stop) on the row's last token."""
    logp: torch.Tensor | None = field(default=None, compare=False, repr=False)
    """The row's next-token log-probabilities [vocab] this token was drawn from (before temperature and
    top-p), when the stream was asked to keep them."""


@dataclass(frozen=True)
class Generation:
    """A row's whole output, gathered from its events."""

    token_ids: list[int]
    text: str
    finished: str | None
    """"eos", "length", "trigger", or None when the stream was cancelled first."""
    logp: torch.Tensor | None = field(default=None, compare=False, repr=False)
    """[len(token_ids), vocab] float32: the distribution each token was drawn from, when the stream kept
    them; what a measure of the run's own distributions reads instead of running the model again."""


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, text: str, chat: bool = True, limits: Limits = Limits()
) -> list[int]:
    """Token ids of a prompt: as a user turn of the chat template when `chat` and the tokenizer has one.

    Raw text gets the BOS token in front when the tokenizer defines one and does not add it itself
    (SmolLM2's does not), matching how activations are harvested.
    """
    if not text.strip():
        raise GenerationError("the prompt is empty")
    if chat and tokenizer.chat_template:
        text = str(tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        ))
        ids = tokenizer(text, add_special_tokens=False).input_ids
    else:
        ids = tokenizer(text).input_ids
        bos = tokenizer.bos_token_id
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
    if len(ids) > limits.max_prompt_tokens:
        raise GenerationError(f"the prompt is {len(ids)} tokens; the limit is {limits.max_prompt_tokens}")
    return ids


def context_length(model: PreTrainedModel) -> int | None:
    """Most positions the model can attend over, when its config says."""
    config = model.config.get_text_config()
    for name in ("max_position_embeddings", "n_positions"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    return None


def check_request(model: PreTrainedModel, prompt_len: int, n_rows: int, sampling: Sampling, limits: Limits) -> None:
    """Reject a generation request outside the limits or the model's context, with a one-line reason."""
    if prompt_len == 0:
        raise GenerationError("the prompt is empty")
    if prompt_len > limits.max_prompt_tokens:
        raise GenerationError(f"the prompt is {prompt_len} tokens; the limit is {limits.max_prompt_tokens}")
    if not 1 <= n_rows <= limits.max_rows:
        raise GenerationError(f"{n_rows} runs requested; between 1 and {limits.max_rows} are allowed")
    if not 1 <= sampling.max_new_tokens <= limits.max_new_tokens:
        raise GenerationError(
            f"max_new_tokens is {sampling.max_new_tokens}; it must be between 1 and {limits.max_new_tokens}"
        )
    if not sampling.temperature >= 0:
        raise GenerationError(f"temperature is {sampling.temperature}; it must be 0 (greedy) or more")
    if not 0 < sampling.top_p <= 1:
        raise GenerationError(f"top_p is {sampling.top_p}; it must be in (0, 1]")
    context = context_length(model)
    if context is not None and prompt_len + sampling.max_new_tokens > context:
        raise GenerationError(
            f"the prompt ({prompt_len} tokens) plus max_new_tokens ({sampling.max_new_tokens}) exceeds the "
            f"model's context of {context} tokens"
        )


def eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Every token id that ends a row: the generation config's (one or a list) and the tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return {i for i in ids if i is not None}


def draw(logits_BV: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> torch.Tensor:
    """Next token per row [B]; all rows use one uniform number, so equal distributions draw equal tokens."""
    if sampling.temperature == 0:
        return logits_BV.argmax(-1)
    probs_BV = torch.softmax(logits_BV.float() / sampling.temperature, dim=-1)
    sorted_BV, order_BV = probs_BV.sort(dim=-1, descending=True)
    # Keep a token while the mass before it is under top_p: the most likely token always stays.
    sorted_BV = sorted_BV * ((sorted_BV.cumsum(-1) - sorted_BV) < sampling.top_p)
    cdf_BV = sorted_BV.cumsum(-1)
    u = torch.rand(1, generator=generator, device=generator.device)
    pick_B1 = torch.searchsorted(cdf_BV, u * cdf_BV[:, -1:], right=True).clamp_max(cdf_BV.shape[-1] - 1)
    return order_BV.gather(-1, pick_B1).squeeze(-1)


class _Detokenizer:
    """Turns a growing list of token ids into new text pieces, holding back incomplete characters."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = 0

    def push(self, token_id: int, last: bool) -> str:
        """Add a token; return the text that became final (all of it on the row's last token)."""
        self.ids.append(token_id)
        text = str(self.tokenizer.decode(self.ids, skip_special_tokens=True))
        if text.endswith("\ufffd") and not last:
            return ""
        piece, self.sent = text[self.sent:], len(text)
        return piece


def stream(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[int],
    n_rows: int,
    sampling: Sampling,
    cancel: threading.Event | None = None,
    turn: Turn = nullcontext,
    stop: Stop | None = None,
    keep_logp: bool = False,
) -> Iterator[TokenEvent]:
    """Generate `n_rows` continuations of one prompt together, yielding each token as it is drawn.

    Stops when every row has ended, or at the next step after `cancel` is set; closing the iterator
    (a consumer that stops reading) stops it too. Each forward runs inside `turn()` (see Turn); hooks on
    the model during a forward (steering's, spliced by its turn) apply to it. `keep_logp` hands each
    token's distribution on with it (TokenEvent.logp): a vocabulary of floats per token, so callers
    ask for it only when they will read it and it fits in memory.
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(sampling.seed)
    stops = eos_ids(model, tokenizer)
    texts = [_Detokenizer(tokenizer) for _ in range(n_rows)]
    finished = [False] * n_rows
    input_ids = torch.tensor([prompt_ids] * n_rows, device=device)
    cache = None
    for step in range(sampling.max_new_tokens):
        if cancel is not None and cancel.is_set():
            return
        with turn(), torch.inference_mode():
            out = model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        tokens_B = draw(out.logits[:, -1, :], sampling, generator)
        logp_BV = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1) if keep_logp else None
        stopped = stop() if stop is not None else [False] * n_rows
        for row, token in enumerate(tokens_B.tolist()):
            if finished[row]:
                continue
            ended = ("eos" if token in stops else "trigger" if stopped[row]
                     else "length" if step == sampling.max_new_tokens - 1 else None)
            finished[row] = ended is not None
            yield TokenEvent(row, step, token, texts[row].push(token, finished[row]), ended,
                             None if logp_BV is None else logp_BV[row])
        if all(finished):
            return
        input_ids = tokens_B[:, None]


def collect(events: Iterator[TokenEvent], n_rows: int) -> list[Generation]:
    """Gather a stream into one Generation per row."""
    ids: list[list[int]] = [[] for _ in range(n_rows)]
    pieces: list[list[str]] = [[] for _ in range(n_rows)]
    logps: list[list[torch.Tensor]] = [[] for _ in range(n_rows)]
    ends: list[str | None] = [None] * n_rows
    kept = True
    for event in events:
        ids[event.row].append(event.token_id)
        pieces[event.row].append(event.text)
        ends[event.row] = event.finished
        kept = kept and event.logp is not None
        if event.logp is not None:
            logps[event.row].append(event.logp)
    return [Generation(ids[r], "".join(pieces[r]), ends[r], torch.stack(logps[r]) if kept and logps[r] else None)
            for r in range(n_rows)]
