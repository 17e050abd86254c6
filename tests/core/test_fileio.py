import os
import subprocess
import sys

from sae_core.fileio import atomic_write_json
from tests.files import temporaries


def dead_pid() -> int:
    """The id of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_write_removes_temporaries_that_killed_writers_left(tmp_path):
    target = tmp_path / "shard[1].json"  # glob's special characters in the name match nothing by accident
    (tmp_path / f".{target.name}.tmp{dead_pid()}").write_text("half")
    live = tmp_path / f".{target.name}.tmp{os.getppid()}"  # a writer that is still running keeps its file
    live.write_text("in flight")
    (tmp_path / f".other.json.tmp{dead_pid()}").write_text("half")  # another file's: left to that file's writes
    atomic_write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}'
    assert temporaries(tmp_path) == sorted([live.name, next(p.name for p in tmp_path.glob(".other.json.tmp*"))])
