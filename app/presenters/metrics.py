"""The SAE page's evaluation metrics in words: each key of metrics.json with a name and what it measures."""

from __future__ import annotations

METRICS: dict[str, tuple[str, str]] = {
    "rows": ("rows evaluated", "activation rows (tokens) the reconstruction metrics were measured over"),
    "eval_rows": ("held-out rows", "activation rows kept out of training for this evaluation"),
    "mse": ("mean squared error", "mean over rows and dimensions of (reconstruction - activation)^2"),
    "fvu": ("variance unexplained", "fraction of the activations' variance the reconstruction misses (0 is perfect)"),
    "explained_variance": ("variance explained", "1 - fraction of variance unexplained"),
    "l0": ("mean L0", "average number of features active per token"),
    "dead_fraction": ("dead fraction", "share of features that never fired on the evaluation rows"),
    "dense_fraction": ("dense fraction", "share of features that fire on a large share of tokens"),
    "ce_clean": ("CE loss, clean", "the model's next-token cross-entropy with its own activations"),
    "ce_sae": ("CE loss, SAE spliced in", "cross-entropy with the site's activations replaced by the SAE's reconstruction"),
    "ce_zero": ("CE loss, site zeroed", "cross-entropy with the site's activations set to zero (the worst case)"),
    "ce_loss_recovered": ("CE loss recovered", "(zeroed - SAE) / (zeroed - clean): 1 means the SAE loses nothing"),
    "ce_tokens": ("CE tokens", "tokens the cross-entropy figures were measured over"),
}
"""key: (name in words, what it measures); a key not listed is shown as it is written."""
