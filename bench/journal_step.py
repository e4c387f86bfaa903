"""The cost of one durable state step (``Journal.update``) against the size of the state.

    python bench/journal_step.py [--tokens 1000,10000] [--steps 200]

For each size: a local state owning that many tokens, then ``--steps`` updates that each
add one owned token, as apply records a create; prints the mean wall time and CPU time
per step, and the bytes written per step. Runs against whichever reconciler is imported,
so the same script measures before and after a change (``PYTHONPATH=old-checkout``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from reconciler.manifest.spec import TokenSpec
from reconciler.state.backends.local import LocalStateBackend
from reconciler.state.journal import Journal
from reconciler.state.model import OwnedToken, State

WHEN = datetime(2026, 1, 1, tzinfo=timezone.utc)


def owned(name: str) -> OwnedToken:
    spec = TokenSpec(name, "bench token", frozenset({"api"}))
    return OwnedToken(name=name, uid=f"uid-{name}", spec=spec, created_at=WHEN)


def bytes_on_disk(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def measure(tokens: int, steps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "s.json"
        state = State(
            endpoint="http://api", tokens={f"t-{n}": owned(f"t-{n}") for n in range(tokens)}
        )
        LocalStateBackend(path).write(state)
        backend = LocalStateBackend(path)
        read = backend.read()
        assert read is not None
        journal = Journal(backend, read)
        with backend.lock("apply", 0):
            wall, cpu = time.perf_counter(), time.process_time()
            io_before = _written_bytes()
            for n in range(steps):
                journal.update(lambda s, n=n: s.with_token(owned(f"new-{n}")))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            written = _written_bytes() - io_before
        final = LocalStateBackend(path).read()
        assert final is not None and len(final.tokens) == tokens + steps
    return {
        "tokens": tokens,
        "ms_per_step": wall * 1000 / steps,
        "cpu_ms_per_step": cpu * 1000 / steps,
        "kb_written_per_step": written / 1024 / steps,
    }


def _written_bytes() -> int:
    try:
        for line in Path(f"/proc/{os.getpid()}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="1000,10000")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    for tokens in (int(t) for t in args.tokens.split(",")):
        print(json.dumps(measure(tokens, args.steps)))


if __name__ == "__main__":
    main()
