"""`reconciler import NAME UID` (reconciler.operations.importing): adopting a live token
into state, through the real CLI against the local API (refusals before any write, the
backup kept), and import_token called as a library."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support.checks import failed, ok
from support.ci_docs import DEPLOYER
from support.local_api import LocalApi
from support.workspace import Workspace

from reconciler.errors import StateError
from reconciler.manifest.spec import TokenSpec
from reconciler.operations.importing import import_token
from reconciler.session import Session, SessionSettings
from reconciler.state.backends.local import LocalStateBackend
from reconciler.state.model import OwnedToken, PreviousGeneration, State

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


# ---------------------------------------------------------------- import_token as a library


def _session(local_api: LocalApi, state: Path) -> Session:
    settings = SessionSettings(
        endpoint=local_api.url, api_key=local_api.admin_key, state=str(state)
    )
    return Session(settings)


def _manifests(root: Path) -> list[str]:
    folder = root / "manifests"
    folder.mkdir()
    (folder / "tokens.yaml").write_text(
        "tokens:\n  - name: legacy\n    description: Made by hand\n    scopes: [api]\n"
        "    expires: 2031-03-31\n",
        encoding="utf-8",
    )
    return [str(folder)]


def test_import_records_the_live_token_with_the_manifests_spec(
    local_api: LocalApi, tmp_path: Path
) -> None:
    store = local_api.store
    expires = datetime(2031, 3, 31, tzinfo=timezone.utc)
    record, _value = store.create_token(
        store.default_user, "legacy", description="Made by hand", scopes=["api"], expired_at=expires
    )
    state_path = tmp_path / "state.json"
    with _session(local_api, state_path) as session:
        message = import_token(session, "legacy", record.uid, _manifests(tmp_path))
    assert message.startswith(f"Imported legacy ({record.uid}) into ")
    assert message.endswith("Run `reconciler plan` to see whether it matches its manifest.")
    state = LocalStateBackend(state_path).read()
    assert state is not None and state.serial == 1
    owned = state.tokens["legacy"]
    assert (owned.uid, owned.live_name, owned.expired_at) == (record.uid, "legacy", expires)
    assert owned.spec.description == "Made by hand" and owned.spec.expires.text() == (
        "2031-03-31T00:00:00Z"
    )
    assert owned.created_at is not None


def test_a_previous_generation_cannot_be_imported_again(
    local_api: LocalApi, tmp_path: Path
) -> None:
    """Its current generation forgotten (`state rm`), the previous one still waits for its
    overlap to end: importing it would own one token twice."""
    store = local_api.store
    old, _value = store.create_token(store.default_user, "legacy", scopes=["api"])
    retired = OwnedToken(name="legacy", uid=old.uid, spec=TokenSpec(name="legacy"))
    kept_until = datetime.now(timezone.utc) + timedelta(hours=1)
    state_path = tmp_path / "state.json"
    LocalStateBackend(state_path).write(
        State.new(local_api.url).with_previous(PreviousGeneration.of(retired, kept_until))
    )
    before = state_path.read_bytes()
    with _session(local_api, state_path) as session, pytest.raises(StateError) as caught:
        import_token(session, "legacy", old.uid, _manifests(tmp_path))
    assert str(caught.value) == (
        f"token {old.uid} is already owned as a previous generation of legacy"
    )
    assert state_path.read_bytes() == before
