"""Each recorded SAE's token texts as heatmap cells (escaped for HTML), a table indexed by token id, cached per worker.

A feature page shows ~70 windows of ~33 tokens; reading their pieces from one table loaded once per SAE
recording is cheaper than decoding a JSON list per window on every page.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy.orm import Session

from . import crud
from .templating import token_cell


@dataclass(frozen=True)
class TokenTable:
    """The heatmap cell (templating.token_cell) per token id, and which ids the recording holds a text for."""

    cells: np.ndarray
    known: np.ndarray

    @classmethod
    def of(cls, texts: dict[int, str]) -> TokenTable:
        size = max(texts, default=-1) + 1
        cells, known = np.full(size, "", dtype=object), np.zeros(size, dtype=bool)
        for token_id, text in texts.items():
            cells[token_id], known[token_id] = token_cell(text), True
        return cls(cells, known)

    def lookup(self, ids: np.ndarray) -> np.ndarray | None:
        """The cells of `ids`, or None if the table lacks any of them (the caller reads the windows' own
        pieces then)."""
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self.known) or not self.known[ids].all()):
            return None
        return self.cells[ids]


class TokenTables:
    """The cell tables of the last few SAE recordings seen; a new recording gets a new table."""

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self._tables: OrderedDict[tuple[int, datetime | None], TokenTable] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: Session, sae_id: int, recorded_at: datetime | None) -> TokenTable:
        """The table of the recording of `sae_id` made at `recorded_at`."""
        key = (sae_id, recorded_at)
        with self._lock:
            table = self._tables.get(key)
            if table is not None:
                self._tables.move_to_end(key)
                return table
        table = TokenTable.of(crud.token_texts(session, sae_id=sae_id))
        with self._lock:
            self._tables[key] = table
            while len(self._tables) > self.capacity:
                self._tables.popitem(last=False)
        return table
