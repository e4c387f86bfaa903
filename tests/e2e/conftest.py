"""Fixtures of the whole-CLI suites: the hosted repository the documented CI runs start from."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.ci_docs import DEPLOYER, GRAFANA, NIGHTLY, Hosted, doc_blocks
from support.ci_emulator import Machine, git
from support.local_api import LocalApi
from support.workspace import Workspace


@pytest.fixture
def hosted(tmp_path: Path, local_api: LocalApi) -> Hosted:
    """A CI machine, a bare 'hosted' repository with manifests on main, and a developer's
    clone of it, where the doc's one-time setup of the state branch has been run."""
    machine = Machine(tmp_path / "ci")
    remote = tmp_path / "remote.git"
    remote.mkdir()
    env = machine.env()
    git("init", "--quiet", "--bare", cwd=remote, env=env)
    dev = tmp_path / "dev"
    dev.mkdir()
    git("clone", "--quiet", str(remote), ".", cwd=dev, env=env)
    tokens = Workspace(dev, local_api, connection="env")
    tokens.declare(DEPLOYER, GRAFANA, NIGHTLY)
    git("add", "manifests", cwd=dev, env=env)
    git("commit", "--quiet", "-m", "Tokens", cwd=dev, env=env)
    git("push", "--quiet", "origin", "main", cwd=dev, env=env)
    setup = [line[2:] for line in doc_blocks()["state-branch"][1].splitlines()]
    result = machine.run_shell("\n".join(setup), cwd=dev, env=env, name="setup")
    assert result.returncode == 0, result.stderr
    assert git("ls-tree", "reconciler-state", cwd=remote) == ""
    return machine, remote, tokens
