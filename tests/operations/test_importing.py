"""`reconciler import NAME UID`: adopting a live token into state, through the real CLI
against the local API (checks refused before any write, the backup kept)."""

from __future__ import annotations

import stat

import pytest
from support.checks import failed, ok
from support.ci_docs import DEPLOYER
from support.workspace import Workspace

# Commands run as a user or a CI job types them: the API from BentoML's variables, the
# state at its default place.
pytestmark = pytest.mark.env_connection


def test_import_checks_and_records_the_token(ws: Workspace) -> None:
    legacy = ws.seed("legacy", description="Made by hand", scopes=["api"])
    other = ws.seed("other", scopes=["api"])
    ws.declare(
        DEPLOYER,
        {"name": "legacy", "description": "Made by hand", "scopes": ["api"]},
    )
    ws.setup("apply", "--auto-approve", "--discard-secrets", "manifests")
    # The apply adopted legacy (it matched): forget it again to import it by hand.
    ws.setup("state", "rm", "legacy", "--yes")
    serial = ws.state()["serial"]

    failed(ws.run("import", "undeclared", legacy), "undeclared is not declared in the manifests")
    failed(ws.run("import", "legacy", "tok_00000000000000000000"), "does not exist")
    failed(ws.run("import", "legacy", other), "is named 'other', not 'legacy'")
    failed(
        ws.run("import", "ci-deployer", ws.owned()["ci-deployer"]),
        "ci-deployer is already owned",
        "reconciler state rm ci-deployer",
    )
    assert ws.state()["serial"] == serial, "a refused import wrote state"

    imported = ok(ws.run("import", "legacy", legacy))
    assert f"Imported legacy ({legacy})" in imported.stdout
    assert ws.owned()["legacy"] == legacy
    assert ws.state()["serial"] == serial + 1
    assert ws.backup()["serial"] == serial
    assert "legacy" not in {t["name"] for t in ws.backup()["tokens"]}
    # The uid is now owned under its name: importing it again under another is refused.
    assert ws.call("plan", "--detailed-exitcode").exit_code == 0
    ws.declare(DEPLOYER, {"name": "legacy", "description": "Made by hand", "scopes": ["api"]})
    with (ws.root / "manifests" / "more.yaml").open("w") as handle:
        handle.write("tokens:\n  - {name: legacy-copy, scopes: [api]}\n")
    failed(ws.call("import", "legacy-copy", legacy), f"token {legacy} is already owned as legacy")


def test_import_against_an_empty_state_starts_it(ws: Workspace) -> None:
    uid = ws.seed("ci-deployer", description="Deploys bentos", scopes=["api"])
    ws.declare(DEPLOYER)
    ok(ws.run("import", "ci-deployer", uid, "--lock-timeout", "5s"))
    state = ws.state()
    assert state["serial"] == 1
    assert state["endpoint"] == ws.api.url
    assert [(t["name"], t["uid"]) for t in state["tokens"]] == [("ci-deployer", uid)]
    assert stat.S_IMODE(ws.state_path.stat().st_mode) == 0o600
