"""Checks of a CLI run's outcome that tests in several folders make the same way."""

from __future__ import annotations

from pathlib import Path

from support.cli import CliResult


def ok(result: CliResult, *codes: int) -> CliResult:
    """Assert the run exited with one of ``codes`` (default: 0)."""
    assert result.exit_code in (codes or (0,)), str(result)
    return result


def failed(result: CliResult, *needles: str) -> str:
    """Assert exit 1 with one error line (no traceback) containing every needle."""
    assert result.exit_code == 1, str(result)
    assert "Traceback" not in result.stderr, str(result)
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in:\n{result}"
    return result.stderr


def assert_clean_error(result: CliResult, *fragments: str) -> None:
    """Exit 1, one 'Error:' on stderr with every fragment, and no traceback."""
    assert result.exit_code == 1, result
    assert "Error: " in result.stderr, result
    assert "Traceback" not in result.output, result
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} missing\n{result}"


def one_line_error(result: CliResult, *fragments: str) -> str:
    """Exit 1, nothing on stdout, and stderr exactly one 'Error:' line holding every
    fragment; returns that line."""
    assert result.exit_code == 1, result
    assert result.stdout == "", result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing\n{result}"
    return lines[0]


def listing(root: Path) -> list[str]:
    """Every path under ``root``, relative and sorted: what a run left behind."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))
