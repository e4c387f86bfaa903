"""A secrets file inside a Git work tree that Git does not ignore gets a warning naming the
.gitignore line to add; under state/ (ignored) or outside any work tree, none."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.workspace import Workspace, token

from reconciler.destinations.gitcheck import unignored_warning


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / ".gitignore").write_text("secrets*.json\n/state/\n", encoding="utf-8")
    return root


def test_an_unignored_file_names_the_line_to_add(repo: Path) -> None:
    warning = unignored_warning(repo / "out" / "new.json")  # its folder need not exist
    assert warning is not None
    assert f"add the line '/out/new.json' to {repo / '.gitignore'}" in warning


def test_ignored_files_and_files_outside_a_work_tree_pass(repo: Path, tmp_path: Path) -> None:
    assert unignored_warning(repo / "state" / "new.json") is None
    assert unignored_warning(repo / "secrets-prod.json") is None
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert unignored_warning(outside / "new.json") is None


def test_a_tracked_file_is_warned_about_even_when_a_pattern_matches(repo: Path) -> None:
    tracked = repo / "secrets.json"
    tracked.write_text("{}", encoding="utf-8")
    git(repo, "add", "-f", "secrets.json")
    assert unignored_warning(tracked) is not None


def test_apply_warns_before_writing_into_the_repository(ws: Workspace) -> None:
    git(ws.root, "init", "-q")
    (ws.root / ".gitignore").write_text("/state/\n", encoding="utf-8")
    ws.declare(token("alpha"))
    result = ws.apply(to=[ws.root / "new.json"])
    assert result.exit_code == 0, result
    assert "add the line '/new.json'" in result.stderr
    result = ws.apply("--replace", "alpha", to=[ws.root / "state" / "new.json"])
    assert result.exit_code == 0, result
    assert "warning: secrets file" not in result.stderr
