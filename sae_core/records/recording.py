"""The recording pass: what every feature of an SAE responds to, as plain records (no database).

One streaming pass of the model (stopped at the SAE's site) plus the SAE. Memory is bounded by
features x examples, never by the number of tokens: per-feature sums, maxima and histograms, and two
`GroupBank`s of windows (top activations; quantile-interval samples), kept by a `Recorder`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain, islice
from typing import TYPE_CHECKING, Any, Protocol

import torch
from tqdm import tqdm

from ..allocator import freed_memory_returned
from ..data import special_ids
from ..devices import autocast
from ..distributed import Dist
from ..finite import NonFiniteError, nonfinite_rows
from ..harvest import batched
from ..hooks import truncated_forward
from ..saes import SAE
from ..sites import Site
from .config import RecordConfig
from .directions import logit_effects
from .firing import Firing
from .neighbours import nearest_features
from .recorder import Recorder
from .sae_record import SAERecord

if TYPE_CHECKING:  # transformers takes seconds to import; only model-running paths import it
    from transformers import PreTrainedModel


class SparseCoder(Protocol):
    """What recording needs of an SAE."""

    @property
    def W_dec(self) -> torch.Tensor: ...

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor: ...


def encode_firing(sae: SparseCoder, x_ND: torch.Tensor) -> Firing:
    """The SAE's firing entries on `x_ND`, straight from its selection when it keeps each row's top k.

    Coders other than sae_core's SAEs (anything with `encode` and `W_dec`) are read through `encode`.
    """
    x_ND = x_ND.to(sae.W_dec.dtype)
    selection = sae.row_topk_selection(x_ND) if isinstance(sae, SAE) else None
    if selection is None:
        return Firing.from_dense(sae.encode(x_ND))
    return Firing.from_topk(*selection)


ACTIVATION_BUDGET = 1 << 27
"""Feature activations ([tokens, d_sae] floats) a batch may hold when RecordConfig.batch_size is None.

Every batch merges into the top-k and quantile banks at a cost that grows with the banks, not the batch,
so fewer, larger batches cost less per token: on the demo SAE (8192 features) 16-context batches spent
28.9 s in the merges per 32k tokens, 64-context 14.7 s, 128-context 10.8 s. 2^27 floats (512 MB) gives
128 contexts of 128 tokens at 8192 features and 8 at 131072.
"""


def contexts_per_batch(cfg: RecordConfig, context_len: int, d_sae: int) -> int:
    """The configured batch size, or the most contexts whose activations fit ACTIVATION_BUDGET (1..256)."""
    return cfg.batch_size or max(1, min(256, ACTIVATION_BUDGET // max(1, context_len * d_sae)))


@torch.no_grad()
def record_activations(
    model: torch.nn.Module,
    sae: SparseCoder,
    contexts: Iterable[torch.Tensor],
    *,
    site: Site,
    cfg: RecordConfig,
    skip_ids: Sequence[int],
    progress: bool = False,
    dist: Dist | None = None,
) -> Recorder:
    """The streaming part of the pass: truncated forward, encode, fold in; tokens in `skip_ids` are ignored.

    With `dist` of several ranks, rank r takes contexts r, r+N, ... and the ranks' recorders are merged
    (see `Recorder.merge_ranks`), so every rank returns the whole pass's recorder.
    """
    dist = dist or Dist()
    device = sae.W_dec.device
    recorder = Recorder(sae.W_dec.shape[0], cfg, device, dist.rank)
    skip = torch.tensor(sorted(set(skip_ids)), dtype=torch.long, device=device)
    bar = tqdm(unit="tok", unit_scale=True, desc="record", disable=not progress or not dist.is_main, dynamic_ncols=True)
    mine = iter(islice(contexts, dist.rank, None, dist.world))
    first = next(mine, None)
    stream = [] if first is None else chain([first], mine)
    batch_size = contexts_per_batch(cfg, 1 if first is None else first.numel(), recorder.d_sae)
    for tokens_BT in batched(stream, batch_size):
        bar.update(tokens_BT.numel())
        tokens_BT = tokens_BT.to(device)
        x_BTD = truncated_forward(model, site, tokens_BT)
        valid_BT = ~torch.isin(tokens_BT, skip)
        x_ND = finite_site_rows(x_BTD.reshape(-1, x_BTD.shape[-1]), valid_BT, site,
                                recorder.n_contexts * dist.world + dist.rank, dist.world)
        with autocast(device, enabled=cfg.dtype == "bfloat16"):
            firing = encode_firing(sae, x_ND)
        recorder.add(tokens_BT, firing, valid_BT)
    bar.close()
    recorder.merge_ranks(dist)
    return recorder


def finite_site_rows(x_ND: torch.Tensor, valid_BT: torch.Tensor, site: Site, first_context: int,
                     stride: int = 1) -> torch.Tensor:
    """The site's rows of a batch of contexts, refusing NaN or infinities on a recorded token.

    On ignored tokens (BOS above all, whose huge norms are what overflows) they are zeroed instead: those
    rows feed no statistic, but a NaN would reach the example windows' activations through the encoder.
    Row b*T+t is context `first_context + b * stride`, position t. One reduction per batch when all is well.
    """
    bad = nonfinite_rows(x_ND)
    if bad is None:
        return x_ND
    recorded = bad[valid_BT.reshape(-1)[bad]]
    if len(recorded):
        b, t = divmod(int(recorded[0]), valid_BT.shape[1])
        raise NonFiniteError(f"the model's activations at {site.name} hold NaN or infinite values at context "
                             f"{first_context + b * stride}, position {t}: the features cannot be recorded over them")
    return x_ND.index_fill(0, bad, 0.0)


def record_sae(
    model: PreTrainedModel,
    sae: SparseCoder,
    contexts: Iterable[torch.Tensor],
    *,
    site: Site,
    tokenizer: Any,
    cfg: RecordConfig = RecordConfig(),
    progress: bool = False,
    dist: Dist | None = None,
) -> SAERecord:
    """Record every feature of `sae` over `contexts` ([T] token tensors starting with BOS).

    Under torchrun every rank calls this with the same `contexts` and gets the same record; rank 0 alone
    should store it.
    """
    recorder = record_activations(
        model, sae, contexts, site=site, cfg=cfg, skip_ids=special_ids(tokenizer).tolist(), progress=progress,
        dist=dist,
    )
    if recorder.n_tokens == 0:
        raise ValueError("no tokens to record: the contexts were empty or held only special tokens")
    with freed_memory_returned():
        W_dec_FD = sae.W_dec.detach()
        cfg = cfg.for_width(W_dec_FD.shape[0])
        promoted, suppressed = logit_effects(model, W_dec_FD, cfg.n_logits)
        examples = recorder.examples()
        ids = torch.cat([examples.tokens_EW.flatten().long(), promoted.index_FK.flatten(), suppressed.index_FK.flatten()])
        return SAERecord(
            n_tokens=recorder.n_tokens,
            n_contexts=recorder.n_contexts,
            config=cfg,
            count_F=recorder.count_F.cpu(),
            max_F=recorder.max_F.cpu(),
            mean_F=(recorder.total_F / recorder.count_F.clamp_min(1)).float().cpu(),
            hist_FB=recorder.hist_FB.cpu(),
            examples=examples,
            promoted=promoted,
            suppressed=suppressed,
            neighbours=nearest_features(W_dec_FD, cfg.n_neighbours, cfg.neighbours, cfg.seed),
            token_text=token_pieces(tokenizer, ids),
            coactive=None if recorder.coactive is None else recorder.coactive.top(recorder.count_F, cfg.n_coactive),
        )


def token_pieces(tokenizer: Any, ids: torch.Tensor) -> dict[int, str]:
    """The text each distinct token id stands for on its own; NUL shows as U+2400 (PostgreSQL text refuses NUL)."""
    unique = ids.unique().tolist()
    return {i: piece.replace("\x00", "\u2400") for i, piece in zip(unique, tokenizer.batch_decode([[i] for i in unique]))}
