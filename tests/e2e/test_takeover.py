"""Taking over an existing organisation and auditing it, through the real CLI against the
local API over HTTP: `reconciler export` writes manifests that validate and plan to adopts
only, apply adopts them with no call beyond the listing, and the next plan has no changes;
`reconciler audit` reports each finding, fails on the ones named, and writes nothing."""

from __future__ import annotations

import json
import shlex
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from support import REPO
from support.checks import failed, ok, one_line_error
from support.local_api import LocalApi, age_token, create, set_last_used
from support.mermaid import mermaid_blocks, parse_gantt
from support.workspace import Workspace

from reconciler.state.backends.local import LocalStateBackend

LIST = "GET /api/v1/api_tokens"
DAY = timedelta(days=1)


def now() -> datetime:
    return datetime.now(timezone.utc)


def wire(moment: datetime) -> str:
    """BentoML's create form: a space, six fractional digits, no offset (UTC)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def seed(api: LocalApi, name: str, **fields: Any) -> dict[str, Any]:
    """A token made by hand, over HTTP with the admin key (as `bentoml api-token create`)."""
    with api.client() as client:
        return create(client, name, **{"scopes": ["api"], **fields})


def use(api: LocalApi, value: str) -> None:
    """Authenticate with a token's value, as a consumer does."""
    with api.client(value) as client:
        assert client.get("/api/v1/auth/current").status_code == 200


ROTATED = {"name": "rotated", "scopes": ["read_cluster"], "overlap": "1d"}
DEPLOYER = {"name": "deployer", "scopes": ["api", "write_cluster"]}


def organisation(ws: Workspace) -> dict[str, str]:
    """Tokens of every shape: managed ones (one replaced, its previous generation kept)
    and, made by hand, the ones to export, one already declared, and ones to skip or
    leave out. Returns name -> uid of the hand-made tokens."""
    ws.converge(DEPLOYER, ROTATED)
    ok(ws.apply("--replace", "rotated", fast=True))  # now rotated-2; rotated retired at once
    api = ws.api
    made = {
        "quoted": seed(
            api,
            "quoted",
            description='He said "ship it"\nand left: #1 <b>',
            scopes=["read_organization", "read_cluster"],
            expired_at=wire(now() + 40 * DAY),
        ),
        "forever": seed(api, "forever", description="Ünïcødé — ☃ null"),
        "midnight": seed(
            api, "midnight", scopes=["write_cluster"], expired_at="2031-01-01T00:00:00Z"
        ),
        "plain": seed(api, "plain", description="yes", scopes=["read_organization"]),
        "declared": seed(api, "declared", description="made by hand", scopes=["read_cluster"]),
        "rotated-3": seed(api, "rotated-3"),
        "a" * 62: seed(api, "a" * 62),
        "expired": seed(api, "expired", expired_at=wire(now() + DAY)),
    }
    created = now() - 30 * DAY
    age_token(api, made["expired"]["uid"], created_at=created, expired_at=now() - DAY)
    ws.declare(
        DEPLOYER,
        ROTATED,
        {"name": "declared", "description": "made by hand", "scopes": ["read_cluster"]},
    )
    return {name: token["uid"] for name, token in made.items()}


def test_export_then_plan_adopts_only_and_apply_makes_no_call(ws: Workspace) -> None:
    made = organisation(ws)
    out = ws.manifests / "imported.yaml"

    exported = ok(ws.run("export", "--out", "manifests/imported.yaml"))
    assert exported.stdout == ""
    notes = exported.stderr
    assert f"skipped declared ({made['declared']}): the manifests declare this name" in notes
    assert "skipped rotated-3" in notes and "named like a generation of rotated" in notes
    assert f"skipped {'a' * 62}" in notes and "not a valid manifest name" in notes
    assert "Exported 4 tokens to manifests/imported.yaml." in notes
    assert "2 managed already, 1 expired (--include-expired exports them), 3 skipped" in notes
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# yaml-language-server: $schema=../schema/manifest.schema.json\n")
    assert f"# {made['quoted']}: created " in text and " by admin, never used" in text
    assert "expires: 2031-01-01\n" in text and "expires: never\n" in text

    ok(ws.run("validate"))
    plan = json.loads(ok(ws.run("plan", "--format", "json")).stdout)
    assert plan["conflicts"] == []
    adopted = {a["name"]: a["uid"] for a in plan["actions"] if a["kind"] == "adopt"}
    assert len(adopted) == len(plan["actions"]), plan["actions"]
    expected = ("quoted", "forever", "midnight", "plain", "declared")
    assert adopted == {name: made[name] for name in expected}

    ws.api.reset_stats()
    ok(ws.apply(to=[]))
    assert ws.api.stats()["requests"] == {LIST: 1}, "apply made a call beyond the listing"
    assert {name: ws.owned()[name] for name in expected} == adopted
    again = ok(ws.run("plan", "--detailed-exitcode"))
    assert again.stdout.startswith("No changes.")


def test_out_refuses_an_existing_file_and_force_replaces_it(ws: Workspace) -> None:
    seed(ws.api, "first", scopes=["read_cluster"])
    ws.declare()
    out = ws.manifests / "imported.yaml"
    out.write_text("# mine\n", encoding="utf-8")
    ws.api.reset_stats()
    one_line_error(ws.run("export", "--out", str(out)), "imported.yaml exists already", "--force")
    assert out.read_text(encoding="utf-8") == "# mine\n"
    assert ws.api.stats()["total"] == 0, "refused before anything was listed"

    ok(ws.run("export", "--out", str(out), "--force"))
    assert "- name: first" in out.read_text(encoding="utf-8")
    # Exported again, the tokens of the file it replaces are not "declared already".
    seed(ws.api, "second", scopes=["read_cluster"])
    ok(ws.run("export", "--out", str(out), "--force"))
    text = out.read_text(encoding="utf-8")
    assert "- name: first" in text and "- name: second" in text
    assert oct(out.stat().st_mode & 0o777) == "0o644"


def test_export_prints_to_stdout_and_reads_given_paths(ws: Workspace) -> None:
    seed(ws.api, "loose", scopes=["read_cluster"], description="x")
    printed = ok(ws.run("export", "--out", "-"))
    assert "  - name: loose\n    description: x\n" in printed.stdout
    assert "Exported 1 token to standard output." in printed.stderr
    failed(ws.run("export", "nowhere"), "nowhere: no such file or directory")
    (ws.root / "manifests").rmdir()  # a repository not taken over yet has none
    assert "  - name: loose\n" in ok(ws.run("export")).stdout


# -------------------------------------------------------------------------- audit

AUDIT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["format_version", "generated_at", "policy", "tokens", "summary"],
    "properties": {
        "format_version": {"const": 1},
        "generated_at": {"type": "string", "pattern": r"Z$"},
        "policy": {
            "type": "object",
            "required": ["expiring_days", "unused_days"],
            "properties": {
                "expiring_days": {"type": "integer"},
                "unused_days": {"type": "integer"},
            },
        },
        "tokens": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "name",
                    "uid",
                    "managed",
                    "manifest_name",
                    "generation",
                    "scopes",
                    "created_at",
                    "expired_at",
                    "last_used_at",
                    "findings",
                ],
                "properties": {
                    "name": {"type": "string"},
                    "uid": {"type": "string"},
                    "managed": {"type": "boolean"},
                    "manifest_name": {"type": ["string", "null"]},
                    "generation": {"enum": ["current", "previous", None]},
                    "scopes": {"type": "array", "items": {"type": "string"}},
                    "created_at": {"type": ["string", "null"]},
                    "expired_at": {"type": ["string", "null"]},
                    "last_used_at": {"type": ["string", "null"]},
                    "findings": {
                        "type": "array",
                        "items": {
                            "enum": [
                                "expired",
                                "expiring",
                                "never-expires",
                                "never-used",
                                "unused",
                                "broad-scope",
                                "unmanaged",
                                "undeclared",
                            ]
                        },
                    },
                },
            },
        },
        "summary": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
}


@pytest.fixture
def audited(ws: Workspace) -> Workspace:
    """Managed tokens (one with a rotation window, one dropped from the manifests) and
    hand-made ones: expiring, never expiring and used, broad, long unused, expired."""
    kept = {
        "name": "kept",
        "scopes": ["read_cluster"],
        "expires": "60d",
        "rotate_before": "14d",
    }
    dropped = {"name": "dropped", "scopes": ["api"]}
    ws.converge(kept, dropped)
    ws.declare(kept)  # dropped: still owned, no longer declared
    api = ws.api
    seed(api, "expiring", scopes=["read_cluster"], expired_at=wire(now() + 3 * DAY))
    used = seed(api, "used-forever", scopes=["api"])
    use(api, used["token"])
    stale = seed(api, "stale", scopes=["write_cluster"], expired_at=wire(now() + 300 * DAY))
    age_token(api, stale["uid"], created_at=now() - 200 * DAY, expired_at=now() + 100 * DAY)
    set_last_used(api, stale["uid"], now() - 120 * DAY)
    gone = seed(api, "gone", scopes=["read_cluster"], expired_at=wire(now() + DAY))
    age_token(api, gone["uid"], created_at=now() - 10 * DAY, expired_at=now() - DAY)
    use(api, ws.secrets()["kept"])
    return ws


def test_audit_reports_every_finding(audited: Workspace) -> None:
    ws = audited
    state_before = ws.state_path.read_bytes()
    with LocalStateBackend(ws.state_path).lock("someone else", 0):
        result = ok(ws.run("audit", "--format", "json"))
    assert ws.state_path.read_bytes() == state_before, "audit wrote state"
    data = json.loads(result.stdout)
    jsonschema.validate(data, AUDIT_SCHEMA)
    found = {t["name"]: t["findings"] for t in data["tokens"]}
    assert found == {
        "kept": [],
        "dropped": ["never-expires", "never-used", "broad-scope", "undeclared"],
        "expiring": ["expiring", "never-used", "unmanaged"],
        "used-forever": ["never-expires", "broad-scope", "unmanaged"],
        "stale": ["unused", "unmanaged"],
        "gone": ["expired", "never-used", "unmanaged"],
    }
    managed = {t["name"] for t in data["tokens"] if t["managed"]}
    assert managed == {"kept", "dropped"}
    by_name = {t["name"]: t for t in data["tokens"]}
    assert by_name["used-forever"]["last_used_at"] is not None
    assert by_name["expiring"]["last_used_at"] is None
    assert data["summary"]["unmanaged"] == 4 and data["summary"]["undeclared"] == 1

    text = ok(ws.run("audit")).stdout
    assert "6 live tokens of the API key's user: 2 managed, 4 unmanaged." in text
    assert "expiring, never-used, unmanaged" in text


def test_audit_fail_on_exit_codes(audited: Workspace) -> None:
    ws = audited
    hit = ws.run("audit", "--fail-on", "expiring,unused")
    assert hit.exit_code == 2, hit
    assert "2 tokens with a finding named by --fail-on: expiring (expiring); unused (stale)" in (
        hit.stderr
    )
    assert "NAME" in hit.stdout, "the report is printed before failing"
    assert ws.run("audit", "--fail-on", "undeclared", "--format", "json").exit_code == 2
    assert ok(ws.run("audit", "--fail-on", "expiring", "--expiring-days", "1")).exit_code == 0
    failed(ws.run("audit", "--fail-on", "expiring,stale"), "unknown finding 'stale'", "unused")


def test_audit_markdown_chart_parses(audited: Workspace) -> None:
    markdown = ok(audited.run("audit", "--format", "markdown")).stdout
    (chart,) = mermaid_blocks(markdown)
    gantt = parse_gantt(chart)
    assert set(gantt.sections) == {"kept", "dropped"}
    assert [t.text.split()[0] for t in gantt.sections["kept"]] == ["expires", "rotation"]
    lifetime, window = gantt.sections["kept"]
    assert window.tags == ("crit",) and window.end == lifetime.end
    assert window.end - window.start == 14 * DAY
    assert [t.text for t in gantt.sections["dropped"]] == ["never expires"]


def test_last_used_at_is_in_every_answer(local_api: LocalApi) -> None:
    """The local API keeps last_used_at as BentoCloud does, in the listing, get, update and
    delete answers, and reconciler's client reads it."""
    token = seed(local_api, "consumer", scopes=["read_cluster"])
    use(local_api, token["token"])
    uid = token["uid"]
    with local_api.client() as client:
        listed = client.get("/api/v1/api_tokens").json()["items"]
        answers = [
            next(t for t in listed if t["uid"] == uid),
            client.get(f"/api/v1/api_tokens/{uid}").json(),
            client.patch(f"/api/v1/api_tokens/{uid}", json={"description": "x"}).json(),
        ]
        stamp = answers[0]["last_used_at"]
        answers.append(client.delete(f"/api/v1/api_tokens/{uid}").json())
    assert stamp is not None
    assert [a["last_used_at"] for a in answers] == [stamp] * 4
    from reconciler.api.client import ApiTokenAPI, RestClient

    other = seed(local_api, "other", scopes=["read_cluster"])
    use(local_api, other["token"])
    with RestClient(endpoint=local_api.url, api_key=local_api.admin_key) as rest:
        (read,) = [t for t in ApiTokenAPI(rest).list() if t.uid == other["uid"]]
    assert read.last_used_at is not None


def readme_takeover_commands() -> list[list[str]]:
    """The commands of the README's section on taking over an existing organisation."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Taking over an existing organisation\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```console\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line.removeprefix("$ ")) for line in block.splitlines()]


def test_the_readme_takes_over_an_organisation_in_three_commands(
    tmp_path: Path, local_api: LocalApi
) -> None:
    """From a repository with nothing in it, the README's three commands (apply approved
    with --auto-approve, as stdin is no terminal here) leave every token managed."""
    for name in ("ci-deployer", "grafana-reader", "scripted"):
        seed(local_api, name, description=f"{name} made by hand", scopes=["read_cluster"])
    ws = Workspace(tmp_path / "repo", local_api, connection="env")
    (ws.root / "manifests").rmdir()
    commands = readme_takeover_commands()
    assert [c[:2] for c in commands] == [
        ["reconciler", "export"],
        ["reconciler", "plan"],
        ["reconciler", "apply"],
    ]
    export, plan, apply = (c[1:] for c in commands)
    ok(ws.run(*export))
    planned = ok(ws.run(*plan))
    assert (
        "Plan: 0 to create, 0 to update, 0 to replace, 0 to delete, "
        "0 to retire, 3 to adopt, 0 to forget." in planned.stdout
    )
    ok(ws.run(*apply, "--auto-approve"))
    assert sorted(ws.owned()) == ["ci-deployer", "grafana-reader", "scripted"]
    assert ok(ws.run("plan", "--detailed-exitcode")).stdout.startswith("No changes.")
