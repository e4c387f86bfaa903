"""reconciler.util.atomicfile: a saved plan written by a process killed (kill -9) at random
instants is always the old plan or the new one, never torn; leftovers are swept.

Real processes and real files: a child writes two different plans in turn with the real
``write_plan_file`` as fast as it can, the test kills it at a random moment, then reads
the file back.
"""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler.plan.saved import read_plan_file
from reconciler.util import atomicfile

TRIALS = 24

# Two plans, big enough (hundreds of KB) that a write takes a few milliseconds, so random
# kills land inside writes as well as between them.
WRITER = """
import sys
from pathlib import Path
from reconciler.plan.model import Action, Plan
from reconciler.plan.saved import SavedPlan, write_plan_file
from reconciler.manifest.spec import TokenSpec

def saved(tag):
    actions = tuple(
        Action("create", f"{tag}-{i:05d}", None, TokenSpec(f"{tag}-{i:05d}"), ("new",))
        for i in range(1500)
    )
    return SavedPlan(Plan(actions=actions), endpoint="http://127.0.0.1:1", manifest_digest=tag)

path = Path(sys.argv[1])
plans = [saved("aaa"), saved("bbb")]
write_plan_file(path, plans[0])
print("ready", flush=True)
n = 1
while True:
    write_plan_file(path, plans[n % 2])
    n += 1
"""


def _start(path: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    return child


def _wait_for_temp(directory: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with os.scandir(directory) as entries:
            if any(entry.name.endswith(".tmp") for entry in entries):
                return
    raise AssertionError("the writer never made a temp file")


def _kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.stdout is not None
    child.stdout.close()


def test_saved_plan_killed_mid_write_is_old_or_new_never_torn(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    rng = random.Random(20261201)
    seen: dict[str, int] = {}
    leftovers = 0
    for trial in range(TRIALS):
        child = _start(path)
        if trial % 2:
            time.sleep(rng.uniform(0, 0.08))
        else:
            _wait_for_temp(tmp_path)  # aim inside a write: its temp exists right now
        _kill(child)
        saved = read_plan_file(path)  # parses: complete, whichever it is
        assert saved.manifest_digest in ("aaa", "bbb")
        assert len(saved.plan.actions) == 1500
        assert {a.name[:3] for a in saved.plan.actions} == {saved.manifest_digest}
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        seen[saved.manifest_digest] = seen.get(saved.manifest_digest, 0) + 1
        leftovers += sum(1 for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
    assert leftovers > 0, "no kill landed inside a write"
    # Both versions were caught, so the kills landed at different points of the loop.
    assert set(seen) == {"aaa", "bbb"}, seen
    # The next writer sweeps temps left by killed ones (each started by sweeping).
    _kill(_start(path))
    assert len([p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]) <= 1
    print(f"{TRIALS} kills: {seen}, {leftovers} temp files found after kills (swept next run)")


def test_atomic_write_failure_leaves_no_temp_and_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "key"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomicfile.atomic_write(target, 12345)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]


def test_atomic_write_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(atomicfile.NotAFileError, match="FIFO"):
        atomicfile.atomic_write(fifo, "x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    with pytest.raises(atomicfile.NotAFileError, match="FIFO"):
        atomicfile.read_regular(fifo)  # returns at once: never blocks on the pipe
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]


def test_only_atomicfile_renames_over_user_files() -> None:
    package = Path(atomicfile.__file__).parent
    callers = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "os.replace(" in path.read_text(encoding="utf-8") or "os.rename(" in path.read_text()
    ]
    assert callers == ["atomicfile.py"]
