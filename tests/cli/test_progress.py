"""Apply's progress output: every action for a small plan; a count for a long one (a bar on a
terminal, a line every few seconds in a log); failures always named."""

from __future__ import annotations

import io

from support.workspace import Workspace, token

from reconciler.apply.applier import ApplyEvent
from reconciler.cli.progress import EVERY_ACTION_UP_TO, LOG_EVERY_SECONDS, Progress
from reconciler.manifest.spec import TokenSpec
from reconciler.plan.model import Action


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def event(n: int, status: str = "done") -> ApplyEvent:
    spec = TokenSpec(name=f"t{n}", scopes=frozenset({"read_cluster"}))
    action = Action(kind="create", name=f"t{n}", uid=None, spec=spec, reasons=("declared",))
    return ApplyEvent(action, status, f"created tok_{n}")  # type: ignore[arg-type]


def test_a_small_plan_prints_every_action() -> None:
    log = io.StringIO()
    progress = Progress(color=False, stream=log)
    progress.start(3)
    for n in range(3):
        progress(event(n))
    progress.finish()
    assert log.getvalue().splitlines() == [f"  create   t{n}: ok created tok_{n}" for n in range(3)]


def test_a_long_plan_in_a_log_prints_a_count_every_few_seconds() -> None:
    total = EVERY_ACTION_UP_TO * 5
    log, clock = io.StringIO(), Clock()
    progress = Progress(color=False, stream=log, clock=clock)
    progress.start(total)
    for n in range(total):
        clock.now = n * LOG_EVERY_SECONDS / 100  # 100 events per interval
        progress(event(n, "failed" if n == 7 else "done"))
    lines = log.getvalue().splitlines()
    assert "  create   t7: FAILED created tok_7" in lines
    counts = [line for line in lines if line.startswith("applied ")]
    assert counts[-1] == f"applied {total:,} of {total:,}, 1 failed"
    assert 4 <= len(counts) <= 6, counts  # one per interval, and the last
    assert "applied 100 of 500, 1 failed" in counts or "applied 101 of 500, 1 failed" in counts


def test_a_long_plan_on_a_terminal_draws_a_bar_and_ends_the_line() -> None:
    total = EVERY_ACTION_UP_TO + 1
    term = Terminal()
    progress = Progress(color=False, stream=term)
    progress.start(total)
    for n in range(total):
        progress(event(n))
    progress.finish()
    out = term.getvalue()
    assert f"\r  [{'#' * 30}] applied {total:,} of {total:,}" in out
    assert out.endswith(f"\rapplied {total:,} of {total:,}\n")


def test_verbose_prints_every_action_of_a_long_plan() -> None:
    total = EVERY_ACTION_UP_TO + 1
    log = io.StringIO()
    progress = Progress(color=False, verbose=True, stream=log)
    progress.start(total)
    for n in range(total):
        progress(event(n))
    assert len(log.getvalue().splitlines()) == total


def test_a_long_apply_in_a_ci_log_counts_instead_of_listing(ws: Workspace) -> None:
    total = EVERY_ACTION_UP_TO + 20
    ws.declare(*(token(f"t{n}", scopes=["read_cluster"]) for n in range(total)))
    result = ws.apply(parallelism=8)
    assert result.exit_code == 0, result
    lines = result.stdout.splitlines()
    assert f"applied {total:,} of {total:,}" in lines
    assert not any(line.startswith("  create ") for line in lines)  # no line per action
    assert lines[-2:] == [
        f"Apply complete: {total} created.",
        f"New token values are in {ws.secrets_path}.",
    ]
