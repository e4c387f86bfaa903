"""The GitOps workflow end to end, through the real CLI against the real local API: saved
plans and their staleness checks, plan formats and snapshots, state locking between real
processes, the state commands, schema/pre-commit, and the CI workflows of
docs/github-actions.md run step by step."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import FIXTURES, REPO, SNAPSHOTS
from support.checks import failed, ok
from support.ci_docs import (
    ANY_BLOCK,
    AUDIT,
    DEPLOYER,
    DOC,
    EXECUTED_BLOCKS,
    GRAFANA,
    INLINE,
    NIGHTLY,
    Hosted,
    assert_all_ran,
    commands,
    doc_blocks,
    push,
    remote_state,
    secret_works,
)
from support.ci_emulator import GitHubRun, GitLabPipeline, Machine, git, interpolate
from support.cli import run_cli_subprocess, start_cli
from support.local_api import LocalApi, age_token, all_uids
from support.workspace import Workspace

from reconciler.util.times import utcnow

# Commands run as a user or a CI job types them: the API from BentoML's variables, the
# state at its default place.
pytestmark = pytest.mark.env_connection

# The tests' own copy of the example: users edit manifests/ (the README's walk-through does).
EXAMPLE = FIXTURES / "example.yaml"
UPDATE_SNAPSHOTS = os.environ.get("RECONCILER_UPDATE_SNAPSHOTS") == "1"


def secrets_in(path: Path) -> dict[str, str]:
    data: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return data


# ---------------------------------------------------------------- saved plans


def test_detailed_exitcode(ws: Workspace) -> None:
    ws.declare(DEPLOYER)
    assert ws.run("plan", "--detailed-exitcode").exit_code == 2
    assert ws.call("plan").exit_code == 0
    ws.setup("apply", "--auto-approve", "--discard-secrets")
    assert ws.run("plan", "--detailed-exitcode").exit_code == 0
    (ws.root / "manifests" / "broken.yaml").write_text("tokens: [{name: Bad}]\n")
    failed(ws.run("plan", "--detailed-exitcode"), "broken.yaml")


def test_github_step_summary_gets_the_markdown(ws: Workspace) -> None:
    ws.declare(DEPLOYER, GRAFANA)
    summary = ws.root / "summary.md"
    summary.write_text("# Earlier step\n", encoding="utf-8")
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    text = ok(ws.run("plan", env=env)).stdout
    markdown = ok(ws.call("plan", "--format", "markdown")).stdout
    assert not summary.read_text().startswith("### Reconciler")
    assert summary.read_text(encoding="utf-8") == "# Earlier step\n" + markdown + "\n"
    assert text.startswith("Actions are shown")  # stdout keeps the chosen format
    ok(ws.call("plan", "--format", "markdown", env=env))
    assert summary.read_text(encoding="utf-8").count("### Reconciler plan") == 2


# ---------------------------------------------------------------- formats and snapshots

_UID = re.compile(r"tok(_|\\_|&#95;)([0-9a-f]{20})")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SHA = re.compile(r"\b[0-9a-f]{64}\b")


def normalise(text: str, uids: dict[str, str]) -> str:
    """Output made comparable across runs: a uid becomes tok_ and its token's name, padded
    to the same width (columns stay aligned); moments become <time>."""

    def uid(match: re.Match[str]) -> str:
        name = uids.get("tok_" + match.group(2), "?")
        return f"tok{match.group(1)}" + name[:20].ljust(20, ".")

    text = _UID.sub(uid, text)
    text = _TIME.sub("<time>", text)
    text = _UUID.sub("<lineage>", text)
    # How many writes an apply takes depends on how its state updates were batched.
    text = re.sub(r'"serial": \d+', '"serial": "<serial>"', text)
    return _SHA.sub("<sha256>", text)


def check_snapshot(name: str, text: str) -> None:
    """Compare with tests/snapshots/NAME; RECONCILER_UPDATE_SNAPSHOTS=1 rewrites it."""
    path = SNAPSHOTS / name
    if UPDATE_SNAPSHOTS or not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if not UPDATE_SNAPSHOTS:
            pytest.fail(f"{path} did not exist and was written: review it and commit it")
    assert text == path.read_text(encoding="utf-8"), (
        f"{name} differs from its snapshot; if the change is intended, re-run with "
        "RECONCILER_UPDATE_SNAPSHOTS=1 and review the diff"
    )


KEEP = {"name": "keep", "description": "Unchanged", "scopes": ["read_cluster"]}


@pytest.fixture
def every_kind(ws: Workspace) -> Workspace:
    """A workspace whose next plan has every action kind and a conflict:
    create ci-deployer, replace reader (scopes) and nightly (rotation), delete old-bot,
    adopt shared, forget gone-bot, conflict on legacy; keep unchanged; stray unmanaged."""
    reader = {"name": "reader", "description": "Reads", "scopes": ["api"]}
    old_bot = {"name": "old-bot", "description": "Retired", "scopes": ["api"]}
    gone_bot = {"name": "gone-bot", "description": "Deleted by hand", "scopes": ["api"]}
    ws.declare(KEEP, reader, old_bot, gone_bot, NIGHTLY)
    # reader's scope change is a replacement here (in-place updates: tests/apply/test_applier.py).
    (ws.root / "reconciler.yaml").write_text("updates: replace\n", encoding="utf-8")
    ws.setup("apply", "--auto-approve", "--discard-secrets")
    owned = ws.owned()
    expires = utcnow() + timedelta(days=3, hours=1)
    age_token(ws.api, owned["nightly"], created_at=expires - timedelta(days=30), expired_at=expires)
    ws.delete_by_hand(owned["gone-bot"])
    ws.seed("shared", description="Shared by hand", scopes=["api"])
    ws.seed("legacy", description="Made | by *hand*", scopes=["api"])
    ws.seed("stray", scopes=(), description="Not ours")
    ws.declare(
        KEEP,
        {**reader, "scopes": ["read_cluster"]},
        NIGHTLY,
        DEPLOYER,
        {"name": "shared", "description": "Shared by hand", "scopes": ["api"]},
        {"name": "legacy", "description": "Declared", "scopes": ["api"]},
    )
    return ws


def test_plan_formats_with_every_action_kind_match_snapshots(every_kind: Workspace) -> None:
    ws = every_kind
    outputs = {}
    for fmt, suffix in (("text", "txt"), ("markdown", "md"), ("json", "json")):
        result = ws.run("plan", "--format", fmt)
        failed(result, "1 conflict must be resolved before this plan can be applied")
        outputs[fmt] = result.stdout
        check_snapshot(f"plan-every-kind.{suffix}", normalise(result.stdout, all_uids(ws.api)))
    markdown = outputs["markdown"]
    lines = markdown.splitlines()
    assert lines[2].startswith(
        "**Plan: 1 to create, 0 to update, 2 to replace, 1 to delete, 0 to retire"
    )
    kinds = [row.split("|")[2].strip(" *") for row in lines if row.startswith("| `")]
    assert kinds == ["replace", "replace", "delete", "create", "adopt", "forget"]
    assert "rotation due: expires in 3d &#60; rotate\\_before 14d" in markdown
    assert "<details><summary>1 unchanged, 1 unmanaged</summary>" in markdown
    data = json.loads(outputs["json"])
    assert data["format_version"] == 1
    assert data["summary"] == {
        "create": 1,
        "replace": 2,
        "update": 0,
        "delete": 1,
        "retire": 0,
        "adopt": 1,
        "forget": 1,
        "unchanged": 1,
        "unmanaged": 1,
        "conflicts": 1,
    }
    by_name = {a["name"]: a for a in data["actions"]}
    assert by_name["nightly"]["routine"] is True
    assert by_name["reader"]["destructive"] is True
    assert data["conflicts"][0]["name"] == "legacy"


def test_json_plan_documents_its_keys(every_kind: Workspace) -> None:
    """The keys of the JSON view are the ones docs/github-actions.md documents."""
    data = json.loads(every_kind.call("plan", "--format", "json").stdout)
    doc = (REPO / "docs" / "github-actions.md").read_text(encoding="utf-8")
    for key in data:
        assert f"`{key}`" in doc, key
    for key in data["actions"][0]:
        assert f"`{key}`" in doc, key
    for key in data["conflicts"][0]:
        assert f"`{key}`" in doc, key


# ---------------------------------------------------------------- locking between processes


def _wait_for_lock(ws: Workspace, process: subprocess.Popen[str]) -> dict[str, Any]:
    """The lock ``process`` holds, once it is taken and written."""
    lock = ws.state_path.with_name(ws.state_path.name + ".lock")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            data: dict[str, Any] = json.loads(lock.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.02)
            continue
        assert data["pid"] == process.pid
        return data
    raise AssertionError("the slow apply never took the lock")


@pytest.fixture
def slow_apply(ws: Workspace, request: pytest.FixtureRequest) -> Iterator[subprocess.Popen[str]]:
    """An apply that holds the state lock for a while: four creates, one at a time, each
    request to the API delayed by ``latency_ms`` (indirect parameter; by default 3 s, so
    the lock is held for 15 s, far longer than the checks made meanwhile need even on a
    loaded machine; tests that do not wait for it end it early)."""
    latency = getattr(request, "param", 3000)
    ws.declare(*({"name": f"slow-{n}", "scopes": ["api"]} for n in range(4)))
    ws.api.set_faults(latency_ms=latency)
    process = start_cli(
        "apply",
        "--auto-approve",
        "--discard-secrets",
        "--parallelism",
        "1",
        cwd=ws.root,
        env=ws.env,
    )
    yield process
    if process.poll() is None:
        process.kill()
    process.communicate()


def test_second_process_fails_at_once_naming_the_holder(
    ws: Workspace, slow_apply: subprocess.Popen[str]
) -> None:
    holder = _wait_for_lock(ws, slow_apply)
    for command in (("plan",), ("apply", "--auto-approve", "--discard-secrets")):
        result = ws.run(*command, "--lock-timeout", "0")
        failed(
            result,
            f"(pid {slow_apply.pid}) for apply since",
            f"lock id {holder['id']}",
            f"reconciler force-unlock {holder['id']}",
        )
        # It gave up while the lock was still held: it did not wait for it.
        assert slow_apply.poll() is None, "the slow apply finished too early to prove anything"
    # Reading without the lock works meanwhile (at the slow API's pace).
    unlocked = ws.run("plan", "--lock=false", "--detailed-exitcode")
    assert unlocked.exit_code == 2, str(unlocked)
    assert "Plan: 4 to create" in unlocked.stdout
    assert slow_apply.poll() is None, "the slow apply finished too early to prove anything"
    lock = json.loads(ws.state_path.with_name("tokens.state.json.lock").read_text())
    assert lock["id"] == holder["id"]
    slow_apply.terminate()  # stops after the call in flight, recording it
    assert slow_apply.wait(timeout=60) == 1
    assert not ws.state_path.with_name("tokens.state.json.lock").exists()


@pytest.mark.parametrize("slow_apply", [1000], indirect=True)
def test_second_process_waits_for_the_lock_with_a_timeout(
    ws: Workspace, slow_apply: subprocess.Popen[str]
) -> None:
    holder = _wait_for_lock(ws, slow_apply)
    second = start_cli(
        "apply", "--auto-approve", "--discard-secrets", "--lock-timeout", "60s",
        cwd=ws.root, env=ws.env,
    )  # fmt: skip
    try:
        stdout, stderr = second.communicate(timeout=90)
    finally:
        second.kill()
    assert second.returncode == 0, stdout + stderr
    first_out, first_err = slow_apply.communicate(timeout=30)
    assert slow_apply.returncode == 0, first_out + first_err
    # The second run started while the first held the lock, waited, and then found the
    # first's work done.
    assert stdout.startswith("No changes. 4 tokens match the manifests."), stdout + stderr
    assert holder["pid"] != second.pid
    assert ws.live_by_name() == {name: [uid] for name, uid in ws.owned().items()}
    assert not ws.state_path.with_name("tokens.state.json.lock").exists()


def test_lock_of_a_killed_apply_stays_until_force_unlock(
    ws: Workspace, slow_apply: subprocess.Popen[str]
) -> None:
    holder = _wait_for_lock(ws, slow_apply)
    time.sleep(4)  # into the creates
    slow_apply.send_signal(signal.SIGKILL)
    slow_apply.wait()
    ws.api.set_faults(latency_ms=0)
    lock = ws.state_path.with_name("tokens.state.json.lock")
    assert json.loads(lock.read_text())["id"] == holder["id"]

    # Never stolen, however long one waits: the holder is named, and so is its death.
    for timeout in ("0", "1s"):
        failed(
            ws.run("apply", "--auto-approve", "--discard-secrets", "--lock-timeout", timeout),
            f"lock id {holder['id']}",
            f"pid {slow_apply.pid} no longer runs on this host",
        )
    assert json.loads(lock.read_text())["id"] == holder["id"]

    wrong = str(uuid.uuid4())
    failed(ws.call("force-unlock", wrong), f"locked with id {holder['id']}, not {wrong}")
    assert lock.exists()
    released = ok(ws.run("force-unlock", holder["id"]))
    assert f"Released lock {holder['id']}" in released.stdout
    assert not lock.exists()
    failed(ws.call("force-unlock", holder["id"]), "is not locked")

    # The next apply converges from whatever the killed one left.
    ok(ws.run("apply", "--auto-approve", "--discard-secrets"))
    assert ws.live_by_name() == {name: [uid] for name, uid in ws.owned().items()}
    assert sorted(ws.live_by_name()) == [f"slow-{n}" for n in range(4)]
    assert ws.call("plan", "--detailed-exitcode").exit_code == 0


# ---------------------------------------------------------------- schema and pre-commit


def test_schema_command_matches_the_committed_schema_and_accepts_the_example(
    tmp_path: Path,
) -> None:
    # Imported by name: it has no type information (a test dependency, see pyproject.toml).
    jsonschema: Any = importlib.import_module("jsonschema")

    result = ok(run_cli_subprocess("schema", cwd=tmp_path))
    committed = (REPO / "schema" / "manifest.schema.json").read_text(encoding="utf-8")
    assert result.stdout == committed
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    # Editors read YAML 1.2, where a date is a string: load the example the same way.
    example_text = EXAMPLE.read_text(encoding="utf-8")
    example = json.loads(json.dumps(yaml.safe_load(example_text), default=str))
    jsonschema.validate(example, schema)
    bad = {"tokens": [{"name": "Bad_Name", "scopes": ["root"], "colour": 1}]}
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(bad))
    assert errors


def test_pre_commit_hook_validates_the_manifests(tmp_path: Path) -> None:
    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    assert hook["id"] == "reconciler-validate"
    assert hook["entry"] == "reconciler validate"
    assert hook["language"] == "python"
    assert hook["pass_filenames"] is False
    files = re.compile(hook["files"])
    assert all(files.search(name) for name in ("manifests/a.yaml", "b.yml", "x/c.yaml"))
    assert not any(files.search(name) for name in ("plan.json", "README.md", "a.yaml.bak"))
    # The doc's example config uses this hook.
    config = yaml.safe_load(doc_blocks()["pre-commit"][1])
    assert config["repos"][0]["hooks"][0]["id"] == hook["id"]

    # Run the entry as pre-commit would (no file names), in a repository with manifests.
    repo = tmp_path / "repo"
    (repo / "manifests").mkdir(parents=True)
    (repo / "manifests" / "a.yaml").write_text("tokens:\n  - {name: one, scopes: [api]}\n")
    (repo / "manifests" / "b.yaml").write_text("tokens:\n  - {name: two, scopes: [api]}\n")
    entry = hook["entry"].split()
    assert entry[0] == "reconciler"
    assert ok(run_cli_subprocess(*entry[1:], cwd=repo)).stdout == "2 tokens in 2 files: valid.\n"
    # A duplicate across files is caught, which checking only the changed file would miss.
    (repo / "manifests" / "b.yaml").write_text("tokens:\n  - {name: one, scopes: [api]}\n")
    failed(run_cli_subprocess(*entry[1:], cwd=repo), "b.yaml", "one")
    # args name another directory.
    (repo / "tokens").mkdir()
    (repo / "tokens" / "t.yml").write_text("tokens:\n  - {name: three, scopes: [read_cluster]}\n")
    assert (
        ok(run_cli_subprocess(*entry[1:], "tokens", cwd=repo)).stdout
        == "1 token in 1 file: valid.\n"
    )


# ---------------------------------------------------------------- docs/github-actions.md


def test_documented_github_workflow(hosted: Hosted, local_api: LocalApi) -> None:
    machine, remote, tokens = hosted
    dev = tokens.root
    workflow = yaml.safe_load(doc_blocks()["github-workflow"][1])
    secrets = {"BENTO_CLOUD_API_KEY": local_api.admin_key, "SECRETS_ADMIN_TOKEN": "admin-token"}
    variables = {"BENTO_CLOUD_API_ENDPOINT": local_api.url}

    def run(event: str, ref: str, checkout: str, pr: int | None = None) -> GitHubRun:
        return GitHubRun(
            machine,
            remote,
            workflow,
            event=event,
            ref=ref,
            checkout=checkout,
            secrets=secrets,
            variables=variables,
            pull_request=pr,
        )

    # A pull request adds a token: the plan is commented, nothing is applied.
    git("switch", "--quiet", "-c", "feature", cwd=dev, env=machine.env())
    tokens.declare(DEPLOYER, GRAFANA, NIGHTLY, AUDIT)
    push(dev, machine, "feature")
    pr = run("pull_request", "refs/pull/7/merge", "feature", pr=7)
    plan = pr.run("plan")
    assert plan.status == "success", str(plan)
    assert plan.outputs == {"changes": "true"}
    (comment,) = machine.calls("gh")
    assert comment["args"] == [
        "pr",
        "comment",
        "7",
        "--edit-last",
        "--create-if-none",
        "--body-file",
        "plan.md",
    ]
    body = comment["files"]["plan.md"]
    assert body.startswith("### Reconciler plan")
    assert (
        "**Plan: 4 to create, 0 to update, 0 to replace, 0 to delete, "
        "0 to retire, 0 to adopt, 0 to forget.**" in body
    )
    assert plan.summary == body + "\n"  # the step summary got the same Markdown
    assert pr.run("apply").skipped
    assert tokens.live_by_name() == {}

    # Merged: main plans again and applies that saved plan.
    git("switch", "--quiet", "main", cwd=dev, env=machine.env())
    git("merge", "--quiet", "--ff-only", "feature", cwd=dev, env=machine.env())
    git("push", "--quiet", "origin", "main", cwd=dev, env=machine.env())
    merged = run("push", "refs/heads/main", "main")
    assert merged.run("plan").outputs == {"changes": "true"}
    apply = merged.run("apply")
    assert apply.status == "success", str(apply)
    assert "Apply complete: 4 created." in "\n".join(apply.logs)
    owned = remote_state(remote)
    assert sorted(owned) == ["audit", "ci-deployer", "grafana-reader", "nightly"]
    assert tokens.live_by_name() == {name: [uid] for name, uid in owned.items()}
    (store,) = machine.calls("gh")[1:]
    assert store["args"][:3] == ["secret", "set", "--env-file"]
    assert store["args"][4:] == ["--repo", "YOUR-ORG/deployments"]
    assert store["env"]["GH_TOKEN"] == "admin-token"
    delivered = dict(
        line.split("=", 1)
        for line in store["files"][store["args"][3]].splitlines()
        if line and not line.startswith("#")
    )
    assert sorted(delivered) == ["AUDIT", "CI_DEPLOYER", "GRAFANA_READER", "NIGHTLY"]
    assert all(
        secret_works(local_api, delivered[name.upper().replace("-", "_")], uid)
        for name, uid in owned.items()
    )
    assert apply.workspace is not None
    assert not list(apply.workspace.parent.glob("apply-temp/new-tokens.env"))  # deleted
    assert not list(apply.workspace.rglob("new-tokens.env"))

    # Nightly: nothing to do...
    nightly = run("schedule", "refs/heads/main", "main")
    assert nightly.run("plan").outputs == {"changes": "false"}
    assert nightly.run("apply").skipped
    # ...until a token falls due: it is rotated, without a human (environment 'rotation').
    expires = utcnow() + timedelta(days=2, hours=1)
    age_token(
        local_api, owned["nightly"], created_at=expires - timedelta(days=30), expired_at=expires
    )
    nightly = run("schedule", "refs/heads/main", "main")
    plan = nightly.run("plan")
    assert "rotation due: expires in 2d &#60; rotate\\_before 14d" in plan.summary
    assert str(workflow["jobs"]["apply"]["environment"])
    context = {"github": nightly.github}
    assert interpolate(workflow["jobs"]["apply"]["environment"], context) == "rotation"
    assert interpolate(workflow["jobs"]["apply"]["environment"], {"github": merged.github}) == (
        "production"
    )
    apply = nightly.run("apply")
    assert apply.status == "success", str(apply)
    rotated = remote_state(remote)
    assert rotated["nightly"] != owned["nightly"]
    assert {k: v for k, v in rotated.items() if k != "nightly"} == {
        k: v for k, v in owned.items() if k != "nightly"
    }
    store = machine.calls("gh")[-1]
    (values,) = [v for k, v in store["files"].items() if k.endswith("new-tokens.env")]
    assert [line.split("=")[0] for line in values.splitlines()[1:]] == ["NIGHTLY"]
    assert git("rev-list", "--count", "reconciler-state", cwd=remote).strip() == "3"

    # A pull request with a conflict fails, and its comment says how to fix it.
    intruder = tokens.seed("intruder", scopes=(), description="made by hand")
    git("switch", "--quiet", "-c", "conflict", cwd=dev, env=machine.env())
    tokens.declare(DEPLOYER, GRAFANA, NIGHTLY, AUDIT, {"name": "intruder", "scopes": ["api"]})
    push(dev, machine, "conflict")
    pr = run("pull_request", "refs/pull/8/merge", "conflict", pr=8)
    plan = pr.run("plan")
    assert plan.status == "failure"
    comment = machine.calls("gh")[-1]
    assert comment["args"][:3] == ["pr", "comment", "8"]
    assert (
        f"reconciler import intruder {intruder}".replace("_", "\\_")
        in (comment["files"]["plan.md"])
    )
    assert pr.run("apply").skipped

    assert_all_ran(doc_blocks()["github-workflow"][1], machine)


def test_documented_gitlab_pipeline(hosted: Hosted, local_api: LocalApi) -> None:
    machine, remote, tokens = hosted
    dev = tokens.root
    config = yaml.safe_load(doc_blocks()["gitlab-ci"][1])
    host, path = "gitlab.example.com", "group/tokens"
    base = {
        "CI_DEFAULT_BRANCH": "main",
        "CI_SERVER_HOST": host,
        "CI_PROJECT_PATH": path,
        "CI_PROJECT_ID": "42",
        "CI_API_V4_URL": f"https://{host}/api/v4",
        "CI_JOB_TOKEN": "job-token",
        "CI_COMMIT_SHORT_SHA": "0123abcd",
        "RECONCILER_GITLAB_TOKEN": "gl-token",
        "RECONCILER_PUSH_TOKEN": "push-token",
        "BENTO_CLOUD_API_ENDPOINT": local_api.url,
        "BENTO_CLOUD_API_KEY": local_api.admin_key,
        "VAULT_ADDR": "https://vault.example.invalid",
        "VAULT_TOKEN": "vault-token",
        "NEW_TOKENS": str(machine.root / "job-tmp" / "new-tokens.json"),
    }
    (machine.root / "job-tmp").mkdir()
    urls = {
        f"https://gitlab-ci-token:job-token@{host}/{path}.git": f"file://{remote}",
        f"https://reconciler:push-token@{host}/{path}.git": f"file://{remote}",
    }

    git("switch", "--quiet", "-c", "feature", cwd=dev, env=machine.env())
    tokens.declare(DEPLOYER, GRAFANA, AUDIT)
    push(dev, machine, "feature")
    mr = GitLabPipeline(
        machine,
        remote,
        config,
        checkout="feature",
        git_urls=urls,
        variables={
            **base,
            "CI_PIPELINE_SOURCE": "merge_request_event",
            "CI_MERGE_REQUEST_IID": "7",
            "CI_COMMIT_REF_NAME": "feature",
        },
    )
    plan = mr.run("plan")
    assert plan.status == "success", str(plan)
    assert mr.dotenv["plan"] == {"CHANGES": "true"}
    assert not mr.included("apply")
    (note,) = machine.calls("curl")
    assert note["args"][-1] == f"https://{host}/api/v4/projects/42/merge_requests/7/notes"
    assert "PRIVATE-TOKEN: gl-token" in note["args"]
    assert "**Plan: 3 to create" in note["files"]["plan.md"]
    assert tokens.live_by_name() == {}

    git("switch", "--quiet", "main", cwd=dev, env=machine.env())
    git("merge", "--quiet", "--ff-only", "feature", cwd=dev, env=machine.env())
    git("push", "--quiet", "origin", "main", cwd=dev, env=machine.env())
    main = GitLabPipeline(
        machine,
        remote,
        config,
        checkout="main",
        git_urls=urls,
        variables={
            **base,
            "CI_PIPELINE_SOURCE": "push",
            "CI_COMMIT_BRANCH": "main",
            "CI_COMMIT_REF_NAME": "main",
        },
    )
    assert main.run("plan").status == "success"
    apply = main.run("apply")
    assert apply.status == "success", str(apply)
    assert len(machine.calls("curl")) == 1  # no comment outside merge requests
    owned = remote_state(remote)
    assert sorted(owned) == ["audit", "ci-deployer", "grafana-reader"]
    (vault,) = machine.calls("vault")
    assert vault["args"] == [
        "kv",
        "patch",
        "-mount=secret",
        "bentocloud/tokens",
        "@" + base["NEW_TOKENS"],
    ]
    values = json.loads(vault["files"][base["NEW_TOKENS"]])
    assert sorted(values) == sorted(owned)
    assert all(secret_works(local_api, values[name], uid) for name, uid in owned.items())
    assert not Path(base["NEW_TOKENS"]).exists()

    # The next pipeline on main has nothing to apply.
    again = GitLabPipeline(
        machine,
        remote,
        config,
        checkout="main",
        git_urls=urls,
        variables={**base, "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main"},
    )
    assert again.run("plan").status == "success"
    assert again.dotenv["plan"] == {"CHANGES": "false"}
    assert "No changes to apply." in "\n".join(again.run("apply").logs)
    assert remote_state(remote) == owned

    assert_all_ran(doc_blocks()["gitlab-ci"][1], machine)


def test_documented_local_commands(tmp_path: Path) -> None:
    machine = Machine(tmp_path / "ci")
    checkout = tmp_path / "checkout"
    (checkout / "manifests").mkdir(parents=True)
    example = EXAMPLE.read_text(encoding="utf-8")
    (checkout / "manifests" / "example.yaml").write_text(example, encoding="utf-8")
    block = doc_blocks()["local"][1]
    outputs = []
    for line in block.splitlines():
        assert line.startswith("$ "), line
        result = machine.run_shell(line[2:], cwd=checkout, env=machine.env(), name="local")
        assert result.returncode == 0, f"{line}\n{result.stdout}{result.stderr}"
        outputs.append(result.stdout)
    assert "### Reconciler plan" in outputs[2]
    assert "Apply complete: 3 created." in outputs[3]
    assert sorted(secrets_in(checkout / "new-tokens.json")) == [
        "ci-deployer",
        "grafana-reader",
        "quarterly-audit",
    ]
    assert outputs[4].splitlines()[-1].startswith("3 tokens (serial")
    assert_all_ran(block, machine)


def test_every_documented_command_is_run(tmp_path: Path, local_api: LocalApi) -> None:
    """Code blocks with reconciler commands are run by the tests above; a command quoted in
    the prose either appears in one of those blocks or is run here, verbatim."""
    import shlex

    text = DOC.read_text(encoding="utf-8")
    blocks = doc_blocks()
    for body in ANY_BLOCK.findall(text):
        if commands(body):
            name = next((n for n, (_, b) in blocks.items() if b == body + "\n"), None)
            assert name in EXECUTED_BLOCKS, f"a block with reconciler commands is not run:\n{body}"
    executed = [
        shlex.split(command) for name in EXECUTED_BLOCKS for command in commands(blocks[name][1])
    ]
    prose = ANY_BLOCK.sub("", text)
    inline = INLINE.findall(prose)
    assert "reconciler plan --format json" in inline  # the extraction works
    ws = Workspace(tmp_path / "repo", local_api)
    ws.declare(DEPLOYER)
    ok(ws.call("plan", "--out", "plan.json"))
    ran = 0
    for command in inline:
        words = shlex.split(command)
        if any(args[: len(words)] == words for args in executed):
            continue
        result = ws.run(*words[1:])
        assert result.exit_code == 0, f"documented command failed: {command}\n{result}"
        ran += 1
    assert ran >= 3
