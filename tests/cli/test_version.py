"""One version, stated once in pyproject.toml: what `reconciler --version` prints, the tag
the README and docs tell users to install, and a CHANGELOG section all agree."""

from __future__ import annotations

import re
from pathlib import Path

from support.cli import run_cli

REPO = Path(__file__).resolve().parents[2]
PINNED = re.compile(r"(?:@|rev: )v(\d+\.\d+\.\d+)\b")


def stated_version() -> str:
    # A regex, not tomllib: the project supports Python 3.10, which has none.
    found = re.search(r'^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text(), re.M)
    assert found is not None, "pyproject.toml states no version"
    return found.group(1)


def test_version_option_prints_the_stated_version(tmp_path: Path) -> None:
    result = run_cli("--version", cwd=tmp_path)
    assert result.exit_code == 0, result
    assert result.stdout.strip() == f"reconciler, version {stated_version()}"


def test_docs_pin_the_stated_version() -> None:
    pinned: dict[str, set[str]] = {}
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for found in PINNED.findall(path.read_text(encoding="utf-8")):
            pinned.setdefault(found, set()).add(path.name)
    assert pinned, "the README and docs name no tag to install"
    assert set(pinned) == {stated_version()}, pinned


def test_changelog_has_a_section_for_the_stated_version() -> None:
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{stated_version()}] - " in text
