"""A secrets file that Git would pick up: new values must never reach a commit by accident."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# `git check-ignore` answers in milliseconds; a hung git (a network filesystem) must not
# hold up an apply for a warning.
_GIT_TIMEOUT_SECONDS = 5.0


def unignored_warning(path: Path) -> str | None:
    """A one-line warning when ``path`` lies in a Git work tree that does not ignore it (or
    tracks it), naming the .gitignore line to add; None when Git ignores it, when it is
    outside any work tree, or when there is no git to ask."""
    git = shutil.which("git")
    if git is None:
        return None
    target = Path(os.path.abspath(path))
    folder = target.parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    top = _git(git, folder, "rev-parse", "--show-toplevel")
    if top is None or top.returncode != 0:
        return None
    root = Path(top.stdout.strip())
    checked = _git(git, folder, "check-ignore", "-q", str(target))
    if checked is None or checked.returncode != 1:
        return None  # 0: ignored; 128: git could not tell
    try:
        relative = target.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    return (
        f"warning: secrets file {path} is inside the Git work tree {root} and Git does not "
        f"ignore it: add the line '/{relative.as_posix()}' to {root / '.gitignore'}, "
        "or write values under state/ (ignored)"
    )


def _git(git: str, folder: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            [git, "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
