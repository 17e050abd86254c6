"""Atomic file writes: readers and crashes never see half a file.

A writer killed outright (SIGKILL, power loss) leaves its temporary file behind, named after the target
and its process id; the next write of the same target removes the temporaries of writers no longer alive,
so runs that are killed and rerun do not pile up dead copies of shards and checkpoints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

_TMP_MARK = ".tmp"


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call `write(tmp_path)`, then rename the temporary file over `path` in one step."""
    path = Path(path)
    remove_dead_temporaries(path)
    tmp = _temporary(path, os.getpid())
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON atomically."""
    text = json.dumps(obj, indent=2)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _temporary(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.name}{_TMP_MARK}{pid}")


def remove_dead_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporaries of `path` left by writers that died before renaming them; returns those removed."""
    path = Path(path)
    prefix = f".{path.name}{_TMP_MARK}"
    if not path.parent.is_dir():
        return []
    with os.scandir(path.parent) as entries:  # not glob: a file name may hold glob's special characters
        stale = [Path(e.path) for e in entries
                 if e.name.startswith(prefix) and e.name[len(prefix):].isdigit() and not _alive(int(e.name[len(prefix):]))]
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (this process counts: its own writes clean up after themselves)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
