"""Re-binning a recorded log-grid histogram: totals kept, mass where the grid put it."""

import pytest
import torch

from sae_core.records.histogram import equal_width, mass_between
from sae_core.records.sae_record import HIST_EDGES


def test_mass_is_spread_uniformly_over_each_bin_and_cut_at_the_max():
    edges, counts = [1.0, 2.0, 4.0], [10, 20]
    assert mass_between(edges, counts, 1.0, 1.5, top=4.0) == pytest.approx(5)
    assert mass_between(edges, counts, 2.0, 3.0, top=3.0) == pytest.approx(20)  # nothing lies above the max
    assert mass_between(edges, counts, 0.0, float("inf"), top=3.0) == pytest.approx(30)


def test_equal_width_bins_run_from_the_lowest_edge_to_the_max_and_keep_whole_counts():
    edges, counts = [1.0, 2.0, 4.0], [10, 21]
    centres, heights = equal_width(edges, counts, top=3.0, n_bins=4)
    assert centres == pytest.approx([1.25, 1.75, 2.25, 2.75])
    assert heights == [5, 5, 11, 10] or heights == [5, 5, 10, 11]
    assert sum(heights) == 31
    assert equal_width([], [], top=0.0, n_bins=4) == ([], [])


@pytest.mark.parametrize("seed", range(5))
def test_equal_width_bars_are_the_reference_masses_rounded(seed):
    gen = torch.Generator().manual_seed(seed)
    edges = HIST_EDGES[40:70].tolist()
    counts = torch.randint(0, 50, (len(edges) - 1,), generator=gen).tolist()
    top = edges[-2] + 0.3 * (edges[-1] - edges[-2])
    centres, heights = equal_width(edges, counts, top, n_bins=50)
    width = centres[1] - centres[0]
    for i, (centre, height) in enumerate(zip(centres, heights, strict=True)):
        high = float("inf") if i == 49 else centre + width / 2
        assert abs(height - mass_between(edges, counts, centre - width / 2, high, top)) < 1
    assert sum(heights) == sum(counts)
