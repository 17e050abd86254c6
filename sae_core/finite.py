"""NaN and infinities in activation rows: found with one reduction per block, reported by file and row.

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
    """Indices of the rows of `x_ND` holding a NaN or an infinity, or None when every value is finite.

    The common, all-finite case costs one isfinite reduction and one host sync per block; the per-row
    mask is built only when something is wrong.
    """
    finite_ND = torch.isfinite(x_ND)
    if bool(finite_ND.all()):
        return None
    return (~finite_ND.all(dim=-1)).nonzero().flatten()


def finite_row_mask(x_ND: torch.Tensor) -> torch.Tensor:
    """True for each row of `x_ND` whose values are all finite."""
    return torch.isfinite(x_ND).all(dim=-1)


def nonfinite_error(where: str, row: int, detail: str = "", hint: str = SKIP_HINT) -> NonFiniteError:
    """The one message for a non-finite row: `{where}: row {row} holds NaN or infinite values{detail}; {hint}`."""
    return NonFiniteError(f"{where}: row {row} holds NaN or infinite values{detail}" + (f"; {hint}" if hint else ""))
