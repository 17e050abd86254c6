"""What tests compare directories by: every file's bytes, and the temporaries atomic writes leave when killed."""

from __future__ import annotations

from pathlib import Path


def file_bytes(directory: Path | str) -> dict[str, bytes]:
    """Every file under `directory` by relative path, with its bytes."""
    directory = Path(directory)
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def temporaries(directory: Path | str) -> list[str]:
    """Names of atomic-write temporaries (`.NAME.tmpPID`) under `directory`."""
    return sorted(p.name for p in Path(directory).rglob(".*.tmp*"))
