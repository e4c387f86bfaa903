"""Apply's progress: a line per action for a small plan; for a long one, a bar on a terminal
or a line every few seconds in a CI log, so that nobody watches a silent job for minutes."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

import click

from reconciler.apply.applier import ApplyEvent

#: Up to this many actions, each gets its own line (a reviewer reads them); above it, the
#: count is what matters, and failures still get a line each.
EVERY_ACTION_UP_TO = 100
#: How often a log (not a terminal) gets an "applied N of M" line.
LOG_EVERY_SECONDS = 5.0


class Progress:
    """Receives apply's events from its worker threads and prints to ``stream``."""

    def __init__(
        self,
        *,
        color: bool,
        verbose: bool = False,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream or sys.stdout
        self._color = color
        self._verbose = verbose
        self._clock = clock
        self._lock = threading.Lock()
        self._total = 0
        self._done = 0
        self._failed = 0
        self._last_line = 0.0
        self._bar_shown = False

    def start(self, total: int) -> None:
        """The plan has ``total`` actions; called once before the first event."""
        with self._lock:
            self._total = total
            self._last_line = self._clock()

    @property
    def _each_line(self) -> bool:
        return self._verbose or self._total <= EVERY_ACTION_UP_TO

    @property
    def _terminal(self) -> bool:
        return self._stream.isatty()

    def __call__(self, event: ApplyEvent) -> None:
        with self._lock:
            self._done += 1
            failed = event.status != "done"
            self._failed += failed
            if self._each_line or failed:
                self._clear_bar()
                self._echo(self._action_line(event))
            if not self._each_line:
                self._count()

    def finish(self) -> None:
        """The run ended: leave the terminal on a fresh line."""
        with self._lock:
            if self._bar_shown:
                self._echo("\r" + self._counts())
                self._bar_shown = False

    def _action_line(self, event: ApplyEvent) -> str:
        ok = event.status == "done"
        mark = "ok" if ok else "FAILED"
        if self._color:
            mark = click.style(mark, fg="green" if ok else "red")
        return f"  {event.action.kind:<8} {event.action.name}: {mark} {event.detail}"

    def _counts(self) -> str:
        failed = f", {self._failed:,} failed" if self._failed else ""
        return f"applied {self._done:,} of {self._total:,}{failed}"

    def _count(self) -> None:
        if self._terminal:
            width = 30
            filled = width * self._done // max(self._total, 1)
            bar = "#" * filled + "-" * (width - filled)
            self._stream.write(f"\r  [{bar}] {self._counts()}")
            self._stream.flush()
            self._bar_shown = True
            return
        now = self._clock()
        if now - self._last_line >= LOG_EVERY_SECONDS or self._done == self._total:
            self._last_line = now
            self._echo(self._counts())

    def _clear_bar(self) -> None:
        if self._bar_shown:
            self._stream.write("\r\033[K")
            self._bar_shown = False

    def _echo(self, line: str) -> None:
        click.echo(line, file=self._stream, color=self._color)
