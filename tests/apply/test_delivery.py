"""apply delivering new values to OpenBao, moto's Secrets Manager and commands, through
the real CLI against the real local API: all of a token's destinations or none, and a
store that refuses stops the run before anything is created."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
from support.leaks import REGISTRY
from support.local_api import LocalApiFactory
from support.moto import CLEARED_ENV, AuthMoto
from support.openbao import start_openbao
from support.stores import Stores, StoreWorkspace
from support.workspace import CREATE_ROUTE, token


def test_apply_delivers_every_value_to_vault_and_aws(store_ws: StoreWorkspace) -> None:
    ws = store_ws
    ws.declare(token("alpha"), token("beta", expires="30d"))
    copy = ws.root / "new-tokens.json"  # a file beside the stores keeps working as before
    result = ws.apply(to=[ws.vault, ws.aws, str(copy)])
    assert result.code == 0, result
    assert f"deliver to: {copy}" in result.out
    assert f"deliver to: {ws.vault}" in result.out  # the plan names each destination
    assert f"deliver to: {ws.aws} (AWS Secrets Manager)" in result.out
    owned = ws.owned()
    assert set(owned) == {"alpha", "beta"}
    for name, uid in owned.items():
        documents = [ws.vault_document(name), ws.aws_document(name)]
        for document in documents:
            assert document is not None
            assert document["uid"] == uid and document["name"] == name
            assert ws.authenticates(document["token"])
        assert documents[0] == documents[1]
        assert REGISTRY.add_sink_file(copy)[name] == documents[0]["token"]
    beta = ws.vault_document("beta")
    assert beta is not None and beta["expires_at"] is not None
    alpha = ws.vault_document("alpha")
    assert alpha is not None and alpha["expires_at"] is None
    assert "rct_" not in result.text  # values only in the stores


@pytest.mark.parametrize(
    "refusal", ["wrong token", "denied policy", "missing mount", "aws denied", "aws unknown key"]
)
def test_a_store_that_refuses_stops_the_run_before_any_create(
    store_ws: StoreWorkspace, auth_moto: AuthMoto, refusal: str
) -> None:
    ws = store_ws
    ws.declare(token("alpha"), token("beta"))
    destinations = [ws.vault, ws.aws]
    env: dict[str, str] = {}
    if refusal == "wrong token":
        env["VAULT_TOKEN"] = "root-" + "0" * 40
    elif refusal == "denied policy":
        client = ws.stores.bao.client()
        policy = f'path "secret/data/{ws.prefix}/*" {{ capabilities = ["read"] }}'
        client.sys.create_or_update_policy(name=f"ro-{ws.prefix}", policy=policy)
        made = client.auth.token.create(policies=[f"ro-{ws.prefix}"], ttl="10m")
        env["VAULT_TOKEN"] = made["auth"]["client_token"]
    elif refusal == "missing mount":
        destinations[0] = f"vault://nosuchmount/{ws.prefix}"
    else:  # moto enforcing IAM: a user without a policy, or keys nobody issued
        env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = auth_moto.server.url
        env.update(auth_moto.nobody)
        if refusal == "aws unknown key":
            env["AWS_SECRET_ACCESS_KEY"] = "unknown" + secrets.token_urlsafe(30)
            REGISTRY.add_secret(env["AWS_SECRET_ACCESS_KEY"], "aws-secret-key")
    ws.api.reset_stats()
    result = ws.apply(to=destinations, env=env)
    assert result.code == 1, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result
    shown = "aws-sm://" if refusal.startswith("aws") else "vault://"
    assert shown in lines[0], result
    assert ws.api.requests(CREATE_ROUTE) == 0  # nothing was created
    assert ws.live() == [] and ws.owned() == {}
    assert ws.vault_document("alpha") is None


def test_a_store_failing_mid_run_leaves_no_owned_token_without_its_value(
    store_ws: StoreWorkspace, tmp_path: Path
) -> None:
    """alpha is delivered everywhere; for beta the second destination (a command) fails,
    so Vault is put back, beta's new token deleted, and beta is not recorded."""
    ws = store_ws
    ws.declare(token("alpha"), token("beta"))
    failing = 'exec:test "$RECONCILER_TOKEN_NAME" != beta || { echo store says no >&2; exit 7; }'
    result = ws.apply("--parallelism", "1", to=[ws.vault, failing])
    assert result.code == 1, result
    assert "exec:" in result.text and "store says no" in result.text, result
    assert "put back: vault://" in result.text, result
    assert set(ws.owned()) == {"alpha"}
    assert [t.name for t in ws.live()] == ["alpha"]  # beta's new token was deleted again
    ws.assert_converged_cleanly()
    alpha = ws.vault_document("alpha")
    assert alpha is not None and ws.authenticates(alpha["token"])
    assert ws.vault_document("beta") is None  # the new secret removed again

    again = ws.apply(to=[ws.vault])
    assert again.code == 0, again
    beta = ws.vault_document("beta")
    assert beta is not None and beta["uid"] == ws.owned()["beta"]
    assert ws.authenticates(beta["token"])
    ws.assert_converged_cleanly()


def test_a_store_that_stops_mid_run(store_ws: StoreWorkspace, tmp_path: Path) -> None:
    """A Vault server of its own dies after alpha's delivery (a command kills it): beta's
    write is refused, so beta's token is deleted again and only alpha is owned."""
    ws = store_ws
    (tmp_path / "dying-bao").mkdir()
    bao = start_openbao(tmp_path / "dying-bao")
    REGISTRY.add_secret(bao.root_token, "vault token (VAULT_TOKEN)")
    try:
        ws.declare(token("alpha"), token("beta"))
        pid = bao.process.pid
        kill = f'exec:[ "$RECONCILER_TOKEN_NAME" != alpha ] || {{ kill -9 {pid}; sleep 1; }}'
        env = {"VAULT_ADDR": bao.url, "VAULT_TOKEN": bao.root_token}
        result = ws.apply("--parallelism", "1", to=[ws.vault, kill], env=env)
    finally:
        bao.stop()
    assert result.code == 1, result
    assert "vault://" in result.err and "Traceback" not in result.err, result
    assert set(ws.owned()) == {"alpha"}
    assert [t.name for t in ws.live()] == ["alpha"]
    ws.assert_converged_cleanly()
    # The next apply, with the store back (the shared server), converges beta.
    again = ws.apply(to=[ws.vault])
    assert again.code == 0, again
    beta = ws.vault_document("beta")
    assert beta is not None and ws.authenticates(beta["token"])


def test_deliver_to_in_a_manifest_replaces_the_runs_list(store_ws: StoreWorkspace) -> None:
    ws = store_ws
    ws.declare(token("alpha", deliver_to=[ws.vault]), token("beta"))
    plan = ws.run("plan")
    assert plan.code == 0, plan
    assert f"deliver to: {ws.vault}" in plan.out, plan
    result = ws.apply(to=[ws.aws])
    assert result.code == 0, result
    assert ws.vault_document("alpha") is not None and ws.aws_document("alpha") is None
    assert ws.aws_document("beta") is not None and ws.vault_document("beta") is None
    state = ws.state_path.read_text(encoding="utf-8")
    assert "deliver_to" not in state  # where values go is the run's, not the state's


def test_deliver_to_alone_needs_no_secrets_out(store_ws: StoreWorkspace) -> None:
    ws = store_ws
    ws.declare(token("alpha", deliver_to=[ws.vault]))
    result = ws.apply(to=())
    assert result.code == 0, result
    assert ws.vault_document("alpha") is not None
    ws.declare(token("alpha", deliver_to=[ws.vault]), token("beta"))
    refused = ws.apply(to=())
    assert refused.code == 1 and "--discard-secrets" in refused.err, refused
    assert "beta" not in ws.owned()


def test_secrets_in_reconciler_yaml(store_ws: StoreWorkspace) -> None:
    ws = store_ws
    ws.declare(token("alpha"))
    (ws.root / "reconciler.yaml").write_text(f"secrets:\n  - {ws.vault}\n", encoding="utf-8")
    plan = ws.run("plan")
    assert f"deliver to: {ws.vault}" in plan.out, plan
    result = ws.apply(to=())
    assert result.code == 0, result
    assert ws.vault_document("alpha") is not None
    (ws.root / "reconciler.yaml").write_text("secrets:\n  - vault://\n", encoding="utf-8")
    bad = ws.apply(to=())
    assert bad.code == 1 and "reconciler.yaml:2" in bad.err, bad
    assert "Traceback" not in bad.err


def test_a_mistyped_destination_is_one_line_and_changes_nothing(store_ws: StoreWorkspace) -> None:
    ws = store_ws
    ws.declare(token("alpha"))
    result = ws.apply(to=["vualt://secret/x"])
    assert result.code == 1 and len(result.err.strip().splitlines()) == 1, result
    assert "unknown destination" in result.err
    assert ws.live() == []


def test_exec_success_gets_the_value_and_the_token_fields(store_ws: StoreWorkspace) -> None:
    ws = store_ws
    ws.declare(token("alpha", expires="7d"))
    out = ws.root / "delivered"
    command = (
        f"exec:cat > {out}.value; env | grep ^RECONCILER_TOKEN_ | sort > {out}.env; "
        'echo "got $(cat {out}.value)"'.replace("{out}", str(out))
    )
    result = ws.apply(to=[command])
    assert result.code == 0, result
    value = out.with_suffix(".value").read_text()
    assert ws.authenticates(value) and not value.endswith("\n")
    env = dict(line.split("=", 1) for line in out.with_suffix(".env").read_text().splitlines())
    assert env["RECONCILER_TOKEN_NAME"] == "alpha"
    assert env["RECONCILER_TOKEN_UID"] == ws.owned()["alpha"]
    assert env["RECONCILER_TOKEN_EXPIRES_AT"]
    assert "got ***" in result.text and value not in result.text  # output shown, masked


def test_exec_failure_deletes_the_new_token(store_ws: StoreWorkspace) -> None:
    ws = store_ws
    ws.declare(token("alpha"))
    result = ws.apply(to=["exec:echo cannot reach the vault >&2; exit 3"])
    assert result.code == 1, result
    assert "exec:echo cannot reach the vault" in result.err and "3" in result.err, result
    assert ws.owned() == {} and ws.live() == [] and ws.pending() == []


def test_exec_that_hangs_is_killed_after_the_timeout(store_ws: StoreWorkspace) -> None:
    ws = store_ws
    ws.declare(token("alpha"))
    started = time.monotonic()
    result = ws.apply("--exec-timeout", "1", to=["exec:sleep 60"], timeout=60)
    assert time.monotonic() - started < 30
    assert result.code == 1 and "did not finish within 1 s" in result.err, result
    assert ws.owned() == {} and ws.live() == []


def test_a_rotation_keeps_the_previous_value_as_the_previous_version(
    stores: Stores,
    local_api_factory: LocalApiFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replace (scopes changed) delivers the new token's value as a new version.
    Uses a local API that allows duplicate names: replacement still creates under the old
    name until the generations work (branch gen) lands."""
    for name in (*CLEARED_ENV, "VAULT_NAMESPACE", "VAULT_CACERT", "VAULT_CAPATH"):
        monkeypatch.delenv(name, raising=False)
    ws = StoreWorkspace(tmp_path / "ws", local_api_factory(allow_duplicate_names=True), stores)
    ws.declare(token("alpha"))
    assert ws.apply(to=[ws.vault, ws.aws]).code == 0
    first = ws.vault_document("alpha")
    ws.declare({"name": "alpha", "scopes": ["api", "read_organization"]})
    # A scope change is an update in place; --updates replace makes it a new generation.
    result = ws.apply("--force", "--updates", "replace", to=[ws.vault, ws.aws])
    assert result.code == 0, result
    current = ws.vault_document("alpha")
    assert first is not None and current is not None
    assert current["uid"] == ws.owned()["alpha"] != first["uid"]
    assert ws.authenticates(current["token"])
    previous = ws.vault_document("alpha", version=1)
    assert previous is not None and previous["token"] == first["token"]
    client = ws.stores.moto.client()
    old = client.get_secret_value(SecretId=f"{ws.prefix}/alpha", VersionStage="AWSPREVIOUS")
    assert first["token"] in old["SecretString"]


def test_a_saved_plan_keeps_each_tokens_deliver_to(store_ws: StoreWorkspace) -> None:
    """deliver_to travels in the saved plan (spec.deliver_to), so applying the file later
    delivers where the reviewed plan said, with no manifest at hand."""
    ws = store_ws
    ws.declare(token("alpha", deliver_to=[ws.vault]))
    saved = ws.run("plan", "--out", "plan.json")
    assert saved.code == 0 and "--secrets-out" not in saved.err, saved
    assert '"deliver_to": [\n' in (ws.root / "plan.json").read_text(encoding="utf-8")
    (ws.root / "manifests" / "tokens.yaml").unlink()
    applied = ws.run("apply", "plan.json")
    assert applied.code == 0, applied
    alpha = ws.vault_document("alpha")
    assert alpha is not None and alpha["uid"] == ws.owned()["alpha"]
