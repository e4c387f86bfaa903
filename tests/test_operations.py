"""The plan and apply use cases as a library: reconciler.operations and the Applier, with
no command line, against the real local API over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.local_api import LocalApi

from reconciler.api.client import ApiTokenAPI, RestClient
from reconciler.apply.applier import Applier
from reconciler.errors import SecretsError
from reconciler.manifest.spec import Expiry, TokenSpec
from reconciler.plan.planner import build_plan
from reconciler.state.backends import backend_for
from reconciler.state.journal import Journal
from reconciler.state.model import State
from reconciler.util.times import utcnow


def _manifest(root: Path, *names: str) -> Path:
    folder = root / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    entries = "".join(f"  - name: {name}\n    scopes: [api]\n" for name in names)
    (folder / "tokens.yaml").write_text("tokens:\n" + entries, encoding="utf-8")
    return folder


def test_operations_plan_and_apply_without_the_cli(local_api: LocalApi, tmp_path: Path) -> None:
    """A library user plans and applies with reconciler.operations alone: the CLI module is
    never imported, tokens are made, the values land in the sink, the next plan is empty."""
    folder = _manifest(tmp_path, "lib-one", "lib-two")
    secrets = tmp_path / "new.json"
    script = textwrap.dedent(
        f"""
        import json, sys
        from reconciler.operations.apply import ApplyRequest, apply
        from reconciler.operations.plan import PlanRequest, make_plan
        from reconciler.session import Options, Runtime

        opts = Options(endpoint={local_api.url!r}, api_key={local_api.admin_key!r},
                       state={str(tmp_path / "state.json")!r})
        with Runtime(opts) as runtime:
            first = make_plan(runtime, PlanRequest(paths=[{str(folder)!r}]))
            outcome = apply(runtime, ApplyRequest(paths=[{str(folder)!r}],
                                                  secrets_out={str(secrets)!r}))
            again = make_plan(runtime, PlanRequest(paths=[{str(folder)!r}]))
        print(json.dumps({{
            "planned": sorted(a.kind + " " + a.name for a in first.plan.actions),
            "ok": outcome.result is not None and outcome.result.ok,
            "done": len(outcome.result.done) if outcome.result else 0,
            "again": again.plan.has_changes,
            "cli_loaded": "reconciler.cli" in sys.modules,
        }}))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report == {
        "planned": ["create lib-one", "create lib-two"],
        "ok": True,
        "done": 2,
        "again": False,
        "cli_loaded": False,
    }
    assert set(json.loads(secrets.read_text(encoding="utf-8"))) == {"lib-one", "lib-two"}
    assert local_api.store.count_tokens() == 2


def test_applier_refuses_creates_without_a_sink(local_api: LocalApi, tmp_path: Path) -> None:
    """The safety rule lives in the applier: no sink and no discard means no create at all."""
    spec = TokenSpec(name="no-sink", scopes=frozenset({"api"}), expires=Expiry.never())
    state = State.new(local_api.url)
    client = RestClient(endpoint=local_api.url, api_key=local_api.admin_key, timeout=30)
    try:
        api = ApiTokenAPI(client)
        plan = build_plan({"no-sink": spec}, api.list(), state, now=utcnow())
        backend = backend_for(str(tmp_path / "state.json"))
        with pytest.raises(SecretsError, match="--secrets-out FILE"):
            Applier(api, Journal(backend, state), None).run(plan)
        assert [t.name for t in api.list()] == []
        assert not (tmp_path / "state.json").exists()
        # Discarding is an explicit choice, and then the create goes ahead.
        result = Applier(api, Journal(backend, state), None, discard_secrets=True).run(plan)
        assert result.ok and [t.name for t in api.list()] == ["no-sink"]
    finally:
        client.close()
