"""NaN and infinities in activation rows: found with one sum per block, reported by file and row.

A float16 overflow in a harvest, a corrupt shard or a diverging model turns activations non-finite, and
every statistic computed from them (an SAE's weights, its metrics, a feature's maximum) turns NaN
without an error. Each stage that reads activations checks its blocks here and either stops, naming the
first bad row, or (where the stage can, with `--skip-nonfinite`) leaves such rows out and counts them.
"""

from __future__ import annotations

import torch

SKIP_HINT = "pass --skip-nonfinite to leave such rows out"


class NonFiniteError(ValueError):
    """Activations (or a loss) holding NaN or infinities; the message names where the first one is."""


def nonfinite_rows(x_ND: torch.Tensor) -> torch.Tensor | None:
    """Indices of the rows of `x_ND` [N, D] holding a NaN or an infinity, or None when every value is finite.

    A row's sum is NaN or infinite whenever one of its values is (IEEE arithmetic propagates both), so
    one memory-bound sum per row finds the suspects; only those are examined value by value (a finite
    row whose sum overflows the dtype, float16 above 65504, is cleared there). Measured on this CPU for a
    65536 x 576 chunk, one thread: 7.5 ms against 322 ms for isfinite(x).all() and 47 ms for a copy.
    """
    suspect = (~torch.isfinite(x_ND.sum(dim=-1))).nonzero().flatten()
    if not len(suspect):
        return None
    bad = suspect[~torch.isfinite(x_ND[suspect]).all(dim=-1)]
    return bad if len(bad) else None


def finite_row_mask(x_ND: torch.Tensor) -> torch.Tensor:
    """True for each row of `x_ND` [N, D] whose values are all finite."""
    keep_N = torch.ones(x_ND.shape[0], dtype=torch.bool, device=x_ND.device)
    bad = nonfinite_rows(x_ND)
    if bad is not None:
        keep_N[bad] = False
    return keep_N


def all_finite(t: torch.Tensor) -> bool:
    """Whether every value of a tensor of any shape is finite (the whole tensor checked as one row)."""
    return nonfinite_rows(t.reshape(1, -1)) is None


def nonfinite_error(where: str, row: int, detail: str = "", hint: str = SKIP_HINT) -> NonFiniteError:
    """The one message for a non-finite row: `{where}: row {row} holds NaN or infinite values{detail}; {hint}`."""
    return NonFiniteError(f"{where}: row {row} holds NaN or infinite values{detail}" + (f"; {hint}" if hint else ""))
