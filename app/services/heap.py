"""Keeping the collector's full passes short in a long-lived web worker (issue 22).

A full (generation 2) collection walks every container object the process holds. A worker holds about a million
once torch, transformers and a model are loaded, and a pass over them took 200-350 ms here: it came every second
or so under load, stopping every request in flight, and set the list pages' p99. Objects that live as long as
the process (the imports, a loaded model) are moved out of the collector's sight once they exist, so the passes
walk only what requests make. A frozen object is never collected; what is frozen is what the process keeps anyway.
"""

from __future__ import annotations

import gc


def freeze_long_lived() -> None:
    """Collect what is garbage now, then exempt everything still alive from later collections."""
    gc.collect()
    gc.freeze()
