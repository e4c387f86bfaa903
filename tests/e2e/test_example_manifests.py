"""The repository's own example manifests, as committed: the only tests that read them.

Users edit ``manifests/example.yaml`` (the README's walk-through does), so every other test
uses its own copy in ``tests/fixtures/``. These tests read the example as the last commit
holds it (from git when this is a git checkout), so they keep passing after the
walk-through's edits, and fail only when a commit breaks the example or the README.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import REPO, TESTS
from support.cli import run_cli_subprocess


def _committed(destination: Path, *paths: str) -> Path:
    """``paths`` as a clean checkout has them, under ``destination``: from git's HEAD when
    the repository is a git checkout, else (an unpacked sdist) the files as they are."""
    git = shutil.which("git")
    inside = git is not None and (
        subprocess.run(
            [git, "-C", str(REPO), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        == "true"
    )
    if git is not None and inside:
        listed = subprocess.run(
            [git, "-C", str(REPO), "ls-tree", "-r", "-z", "--name-only", "HEAD", "--", *paths],
            capture_output=True,
            check=True,
        ).stdout
        for name in filter(None, listed.decode("utf-8").split("\0")):
            blob = subprocess.run(
                [git, "-C", str(REPO), "show", f"HEAD:{name}"], capture_output=True, check=True
            ).stdout
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            (destination / name).write_bytes(blob)
    else:
        for path in paths:
            shutil.copytree(REPO / path, destination / path)
    return destination


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    return _committed(tmp_path / "checkout", "manifests", "schema")


def test_repository_example_manifests_validate(checkout: Path) -> None:
    result = run_cli_subprocess("validate", "manifests/", cwd=checkout)
    assert result.exit_code == 0, result
    assert result.stdout.endswith(": valid.\n"), result


def test_readme_walkthrough_starts_from_the_example(checkout: Path) -> None:
    """The README's quickstart creates these three tokens, and its walk-through then drops
    read_organization from grafana-reader and removes quarterly-audit."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    example = yaml.safe_load((checkout / "manifests" / "example.yaml").read_text("utf-8"))
    tokens = {token["name"]: token for token in example["tokens"]}
    assert sorted(tokens) == ["ci-deployer", "grafana-reader", "quarterly-audit"]
    assert "read_organization" in tokens["grafana-reader"]["scopes"]
    assert "plan` lists the three tokens of `manifests/example.yaml`" in readme
    for name in tokens:
        assert name in readme, name


def test_example_points_editors_at_the_schema(checkout: Path) -> None:
    example = checkout / "manifests" / "example.yaml"
    first_line = example.read_text(encoding="utf-8").splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=../schema/manifest.schema.json"
    assert (example.parent / "../schema/manifest.schema.json").is_file()
    # Editors read YAML 1.2, where a date is a string: load the example the same way.
    jsonschema: Any = importlib.import_module("jsonschema")
    schema = json.loads((checkout / "schema" / "manifest.schema.json").read_text("utf-8"))
    jsonschema.validate(
        json.loads(json.dumps(yaml.safe_load(example.read_text()), default=str)), schema
    )


def test_no_other_test_reads_the_repository_manifests() -> None:
    reads_manifests = re.compile(r"""(ROOT|REPO)\s*/\s*["']manifests|["']manifests/example""")
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted(TESTS.rglob("*.py"))
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if reads_manifests.search(line)
    ]
    assert offenders == [], "use tests/fixtures/ instead of manifests/: " + ", ".join(offenders)
