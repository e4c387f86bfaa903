"""docs/github-actions.md as tests run it: its marked code blocks, the reconciler commands
in them, the tokens its examples declare, and checks of what a CI run did.

The hosted repository those runs start from is the ``hosted`` fixture (tests/e2e/conftest.py).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from support import REPO
from support.ci_emulator import Machine, git
from support.local_api import LocalApi
from support.workspace import Workspace

DOC = REPO / "docs" / "github-actions.md"
_BLOCK = re.compile(r"<!-- test: ([\w-]+) -->\n```(\w+)\n(.*?)\n```\n", re.S)
ANY_BLOCK = re.compile(r"```\w*\n(.*?)\n```", re.S)
# A reconciler command inside code: at the start of a line or after a shell separator,
# "run:" or "$ ", up to a redirection, a pipe or the end of the line.
_COMMAND = re.compile(r"(?:^|(?<=[\s:;&|(]))(reconciler[ \t]+[^\n;&|>#]*)", re.M)
INLINE = re.compile(r"(?<!`)`(reconciler [^`]+)`(?!`)")
EXECUTED_BLOCKS = ("github-workflow", "gitlab-ci", "local", "github-stores", "gitlab-stores")

DEPLOYER = {"name": "ci-deployer", "description": "Deploys bentos", "scopes": ["api"]}
GRAFANA = {"name": "grafana-reader", "description": "Dashboards", "scopes": ["read_cluster"]}
AUDIT = {"name": "audit", "description": "Auditor", "scopes": ["read_organization"]}
NIGHTLY = {
    "name": "nightly",
    "description": "Nightly jobs",
    "scopes": ["api"],
    "expires": "30d",
    "rotate_before": "14d",
}

# A CI machine, the bare "hosted" repository, and a developer's checkout of it.
Hosted = tuple[Machine, Path, Workspace]


def doc_blocks() -> dict[str, tuple[str, str]]:
    """The doc's code blocks marked ``<!-- test: NAME -->``: name -> (language, text)."""
    text = DOC.read_text(encoding="utf-8")
    return {m.group(1): (m.group(2), m.group(3) + "\n") for m in _BLOCK.finditer(text)}


def commands(text: str) -> list[str]:
    """The reconciler commands in a block of shell or workflow text."""
    return [m.group(1).strip() for m in _COMMAND.finditer(text)]


def _argument_matches(documented: str, actual: str) -> bool:
    """A documented argument matches an actual one; shell variables match anything."""
    pattern = re.escape(documented)
    pattern = re.sub(r"\\\$(\\\{)?[A-Za-z_]\w*(\\\})?", ".+", pattern)
    return re.fullmatch(pattern, actual) is not None


def assert_all_ran(block: str, machine: Machine) -> None:
    """Every reconciler command of ``block`` was run, with these arguments."""
    runs = [call["args"] for call in machine.calls("reconciler")]
    for command in commands(block):
        expected = shlex.split(command)[1:]
        assert any(
            len(args) == len(expected) and all(map(_argument_matches, expected, args))
            for args in runs
        ), f"documented but never run: {command}\nran: {runs}"


def secret_works(api: LocalApi, value: str, uid: str) -> bool:
    """Whether ``value`` authenticates as the token ``uid``."""
    principal = api.store.authenticate(value)
    return principal is not None and principal.token_uid == uid


def remote_state(remote: Path) -> dict[str, str]:
    """name -> uid of the state on the hosted repository's state branch."""
    text = git("show", "reconciler-state:tokens.state.json", cwd=remote)
    return {t["name"]: t["uid"] for t in json.loads(text)["tokens"]}


def push(dev: Path, machine: Machine, branch: str) -> None:
    """Commit the developer's manifests and push them to ``branch``."""
    env = machine.env()
    git("add", "manifests", cwd=dev, env=env)
    git("commit", "--quiet", "-m", f"Change on {branch}", cwd=dev, env=env)
    git("push", "--quiet", "origin", branch, cwd=dev, env=env)
