"""Train straight from the model: contexts -> forward at the site -> shuffle buffer -> SAE, no activation files.

For budgets that do not fit on disk. The stream is a pure function of (seed, row position), like a
harvest's: contexts are taken in corpus order, a group at a time, as many as fill the shuffle buffer
(`buffer_rows`); a group's non-special rows are computed by truncated forwards and shuffled together by a
permutation keyed by (seed, epoch, group, rank). Resuming at a row position re-reads the corpus but runs
the model only from the group that position falls in: a group's row count comes from its token ids alone.

Under torchrun each rank streams every N-th context and trains on its own rows, so the model's forward
is split too; the global batch is then a different (equally shuffled) draw than one process's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import torch

from .activations import ActivationSource, rebatch
from .data import iter_contexts, iter_documents, special_ids
from .distributed import Dist
from .finite import NonFiniteError, nonfinite_rows
from .harvest import batched, token_rows
from .lm import LoadedModel
from .provenance import Provenance
from .shuffle import permutation
from .sites import Site, hidden_size


@dataclass(frozen=True)
class ModelStream:
    """Activation rows of one model site, computed as training asks for them."""

    lm: LoadedModel
    site: Site
    contexts: Callable[[], Iterable[torch.Tensor]] = field(repr=False)
    """A fresh pass over the corpus's [T] token contexts, BOS first, each time it is called."""
    provenance: Provenance = Provenance()
    """Model, site, corpus and context length, as a harvest records them."""
    forward_batch: int = 8
    """Contexts per forward pass."""

    @property
    def d_in(self) -> int:
        return hidden_size(self.lm.model)

    def head(self, n_rows: int) -> torch.Tensor:
        """The first `n_rows` rows in corpus order, float32 (initialisation; the same on every rank)."""
        parts, have = [], 0
        for ids_BT in batched(self.contexts(), self.forward_batch):
            parts.append(self._rows(ids_BT))
            have += len(parts[-1])
            if have >= n_rows:
                break
        if not parts:
            raise ValueError("the corpus produced no contexts to stream")
        return torch.cat(parts)[:n_rows].float()

    def rank_batches(self, batch_size: int, seed: int, start_row: int, buffer_rows: int,
                     dist: Dist) -> Iterator[torch.Tensor]:
        """This rank's `batch_size / world` rows of each global batch, from global row `start_row` on."""
        per_rank = dist.share(batch_size)
        return rebatch(self._stream(seed, start_row // dist.world, buffer_rows, dist), per_rank.stop - per_rank.start)

    def _group_contexts(self, buffer_rows: int) -> int:
        """Contexts per shuffled group: as many as `buffer_rows` rows hold (at least one)."""
        first = next(iter(self.contexts()), None)
        if first is None:
            raise ValueError("the corpus produced no contexts to stream")
        return max(1, buffer_rows // first.shape[-1])

    def _stream(self, seed: int, skip: int, buffer_rows: int, dist: Dist) -> Iterator[torch.Tensor]:
        """This rank's shuffled rows, group by group, skipping its first `skip` rows; cycles the corpus."""
        specials = special_ids(self.lm.tokenizer)
        group_contexts = self._group_contexts(buffer_rows)
        epoch = 0
        while True:
            mine = islice(self.contexts(), dist.rank, None, dist.world)
            groups = batched(mine, group_contexts)
            seen = False
            for g, ids_CT in enumerate(groups):
                seen = True
                size = int((~torch.isin(ids_CT, specials)).sum())
                if skip >= size:
                    skip -= size
                    continue
                rows = torch.cat([self._rows(ids_BT) for ids_BT in ids_CT.split(self.forward_batch)])
                yield rows[permutation(size, seed, epoch, g, dist.rank).to(rows.device)][skip:]
                skip = 0
            if not seen:
                raise ValueError("the corpus produced no contexts to stream")
            epoch += 1

    @torch.no_grad()  # not inference_mode: the rows become training inputs that autograd saves
    def _rows(self, ids_BT: torch.Tensor) -> torch.Tensor:
        """Activations of the non-special tokens of a batch of contexts, on the model's device; never NaN or inf.

        A row count per group must follow from the token ids alone (see the module docstring), so a
        streamed row cannot be skipped: a non-finite one stops the run, and the last checkpoint stays.
        """
        rows_RD, keep_BT = token_rows(self.lm.model, self.site, ids_BT, special_ids(self.lm.tokenizer))
        bad = nonfinite_rows(rows_RD)
        if bad is not None:
            position = keep_BT.nonzero()[int(bad[0])].tolist()
            raise NonFiniteError(f"{self.lm.name} gives NaN or infinite activations at {self.site.name} (token "
                                 f"{position[1]} of a streamed context); harvest with --skip-nonfinite and train on that")
        return rows_RD


def stream_from_corpus(lm: LoadedModel, site: Site, dataset: str, *, context_len: int, text_field: str = "text",
                       holdout_contexts: int = 0) -> tuple[ModelStream, ActivationSource | None]:
    """A training stream over a corpus and, from its first `holdout_contexts` contexts (never trained on), held-out rows."""
    def contexts(skip: int = holdout_contexts) -> Iterator[torch.Tensor]:
        return islice(iter_contexts(iter_documents(dataset, text_field), lm.tokenizer, context_len), skip, None)

    provenance = Provenance(model=lm.name, site=site, dataset=dataset, context_len=context_len)
    stream = ModelStream(lm, site, contexts, provenance)
    if not holdout_contexts:
        return stream, None
    held = ModelStream(lm, site, lambda: islice(contexts(0), holdout_contexts), provenance)
    return stream, ActivationSource.in_memory(held.head(holdout_contexts * context_len).cpu(), provenance)
