"""Concurrent applies against one state and one endpoint: the state lock lets exactly one
proceed; the others fail naming the holder (or wait with --lock-timeout). Never a
duplicate token."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.cli import CliProcess, CliResult
from support.convergence import check_converged, check_no_changes, user_workspace
from support.workspace import token

from reconciler.server.faults import Faults

if TYPE_CHECKING:
    from support.local_api import LocalApiFactory

_CREATED = re.compile(r"Apply complete: (\d+) created")


def _created(result: CliResult) -> int:
    match = _CREATED.search(result.out)
    return int(match.group(1)) if match else 0


def _is_lock_refusal(result: CliResult) -> bool:
    return (
        result.code == 1
        and "Traceback" not in result.err
        and "is locked by" in result.err
        and "for apply since" in result.err
        and "force-unlock" in result.err
    )


@pytest.mark.parametrize("count", [2, 8])
def test_simultaneous_applies_never_duplicate(
    count: int,
    local_api_factory: LocalApiFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``count`` applies started at once: each either did the work, found nothing left to
    do, or failed naming the lock; the tokens were created exactly once in all."""
    api = local_api_factory(faults=Faults(latency_ms=20))
    ws = user_workspace(tmp_path, api)
    ws.declare(*(token(f"race-{n}") for n in range(40)))
    processes = [CliProcess(*ws.apply_args(parallelism=2), cwd=ws.root) for _ in range(count)]
    results = [p.finish(120) for p in processes]
    ws.record()

    winners = [r for r in results if r.code == 0]
    refused = [r for r in results if _is_lock_refusal(r)]
    assert len(winners) + len(refused) == count, "\n\n".join(map(str, results))
    assert winners, "\n\n".join(map(str, results))
    assert sum(_created(r) for r in results) == 40, "\n\n".join(map(str, results))
    assert sum(_created(r) > 0 for r in results) == 1
    assert api.store.count_tokens(include_deleted=True) == 40
    assert not ws.lock.exists()
    check_no_changes(ws)
    check_converged(ws)
    with capsys.disabled():
        print(
            f"\n{count} simultaneous applies: 1 created 40 tokens, "
            f"{len(winners) - 1} found nothing left to do, {len(refused)} refused by the lock"
        )


def test_applies_during_an_apply_fail_naming_the_holder_or_wait(
    local_api_factory: LocalApiFactory, tmp_path: Path
) -> None:
    """While one apply runs, seven more start together: five without --lock-timeout fail at
    once naming the holder's pid and lock id; two with --lock-timeout wait and then find
    nothing left to do; a `plan --lock=false` reads without the lock."""
    # Each request of the holder takes 2 s until the others are done, so it surely holds the
    # lock meanwhile however slow the machine; then the API speeds up and it finishes.
    api = local_api_factory(faults=Faults(latency_ms=20))
    ws = user_workspace(tmp_path, api)
    ws.declare(*(token(f"held-{n}") for n in range(50)))
    holder = CliProcess(*ws.apply_args(parallelism=1), cwd=ws.root)
    assert holder.wait_for_output(lambda line: line.startswith("Applying"), 30), holder.finish()
    api.set_faults(latency_ms=2000)

    started = time.monotonic()
    impatient = [CliProcess(*ws.apply_args(), cwd=ws.root) for _ in range(5)]
    patient = [CliProcess(*ws.apply_args("--lock-timeout", "2m"), cwd=ws.root) for _ in range(2)]
    reader = CliProcess(*ws.plan_args("--lock=false"), cwd=ws.root)
    refusals = [p.finish(60) for p in impatient]
    reading = reader.finish(60)
    refusal_time = time.monotonic() - started
    assert holder.proc.poll() is None, "the holder finished before the others were refused"
    api.set_faults(latency_ms=0)

    held = holder.finish(120)
    waited = [p.finish(120) for p in patient]
    ws.record()

    assert held.code == 0 and _created(held) == 50, held
    for result in refusals:
        assert _is_lock_refusal(result), result
        assert f"(pid {holder.pid})" in result.err, result
    assert refusal_time < 30
    assert reading.code == 0, reading
    for result in waited:
        assert result.code == 0, result
        assert _created(result) == 0, result
    assert api.store.count_tokens(include_deleted=True) == 50
    check_no_changes(ws)
    check_converged(ws)
