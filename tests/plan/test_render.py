"""Tests of reconciler.plan.render: text, Markdown and JSON views of a plan."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support.cli import run_cli_subprocess
from support.local_api import LocalApi

from reconciler.manifest.spec import Expiry, TokenSpec
from reconciler.plan.model import Action, Conflict, LiveView, Plan, SpecView
from reconciler.plan.render import render_json, render_markdown, render_text

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
HOSTILE = "a|b `c` <script>alert(1)</script> @admin #1 **x**\n| injected | row |"
ANSI = re.compile(r"\x1b\[")


def spec(name: str, description: str = "", scopes: tuple[str, ...] = ("api",)) -> TokenSpec:
    return TokenSpec(
        name=name, description=description, scopes=frozenset(scopes), expires=Expiry.parse("90d")
    )


def live_view(description: str, scopes: list[str], expired_at: str | None = None) -> LiveView:
    return LiveView(
        description=description, scopes=tuple(scopes), expired_at=expired_at, created_at=None
    )


def spec_view(s: TokenSpec) -> SpecView:
    return SpecView(
        description=s.description,
        scopes=tuple(sorted(s.scopes)),
        expires=s.expires.text(),
        rotate_before=None,
    )


def full_plan() -> Plan:
    """A plan with every action kind and a conflict."""
    reader = spec("ci-reader", "Reads clusters", ("read_cluster",))
    nightly = spec("nightly", "Nightly")
    return Plan(
        actions=(
            Action(
                "replace",
                "ci-reader",
                "u-reader",
                reader,
                ("scopes changed: +read_cluster -api", "description changed"),
                before=live_view(HOSTILE, ["api"]),
                after=spec_view(reader),
            ),
            Action(
                "replace",
                "nightly",
                "u-nightly",
                nightly,
                ("rotation due: expires in 3d < rotate_before 14d",),
                before=live_view("Nightly", ["api"], "2026-06-04T00:00:00Z"),
                after=spec_view(nightly),
                routine=True,
                expiry_changed=True,
            ),
            Action(
                "create",
                "ci-deployer",
                None,
                spec("ci-deployer"),
                ("declared in manifests, does not exist yet",),
                after=spec_view(spec("ci-deployer")),
            ),
            Action(
                "delete",
                "old-token",
                "u-old",
                None,
                ("removed from manifests",),
                before=live_view("old", ["api"]),
            ),
            Action(
                "adopt", "shared", "u-shared", spec("shared"), ("not owned, matches the manifest",)
            ),
            Action(
                "forget",
                "gone",
                "u-gone",
                None,
                ("deleted outside reconciler and removed from manifests",),
            ),
        ),
        conflicts=(
            Conflict(
                "legacy",
                "u-legacy",
                "not owned by reconciler and differs from the manifest: description changed",
                "adopt it with `reconciler import legacy u-legacy`, rename legacy in the "
                "manifests, or delete the token by hand",
            ),
        ),
        unchanged=40,
        unmanaged=3,
        owned_count=44,
        desired_count=45,
        created_at=NOW,
    )


def empty_plan() -> Plan:
    return Plan(unchanged=40, unmanaged=3, owned_count=40, desired_count=40, created_at=NOW)


# --- text ---------------------------------------------------------------------------


def test_text_without_colour_has_no_ansi_and_every_action() -> None:
    text = render_text(full_plan(), color=False)
    assert not ANSI.search(text)
    lines = text.splitlines()
    for symbol, kind, name in [
        ("-/+", "replace", "ci-reader"),
        ("+", "create", "ci-deployer"),
        ("-", "delete", "old-token"),
        ("=", "adopt", "shared"),
        (".", "forget", "gone"),
    ]:
        (line,) = [ln for ln in lines if f" {name} " in ln and kind in ln]
        assert line.lstrip().startswith(f"{symbol} "), line
    assert (
        "Plan: 1 to create, 0 to update, 2 to replace, 1 to delete, "
        "0 to retire, 1 to adopt, 1 to forget. "
        "40 unchanged, 3 unmanaged." in lines
    )


def test_text_replace_shows_changed_attributes_and_reasons() -> None:
    text = render_text(full_plan(), color=False)
    assert "scopes changed: +read_cluster -api; description changed" in text
    assert "scopes:      api -> read_cluster" in text
    assert "expires: 2026-06-04T00:00:00Z -> 90d after creation" in text
    assert "rotation due: expires in 3d < rotate_before 14d" in text


def test_text_keeps_hostile_description_on_one_line() -> None:
    text = render_text(full_plan(), color=False)
    (line,) = [ln for ln in text.splitlines() if "description:" in ln]
    assert "\\x0a| injected" in line


def test_text_escapes_terminal_control_sequences_in_names() -> None:
    plan = Plan(
        actions=(Action("delete", "evil\x1b[2Jname", "u1", None, ("not declared (--prune)",)),)
    )
    assert not ANSI.search(render_text(plan, color=False))
    assert "evil\\x1b[2Jname" in render_text(plan, color=False)


def test_text_with_colour() -> None:
    text = render_text(full_plan(), color=True)
    assert ANSI.search(text)
    assert "\x1b[32m" in text  # green create
    assert "\x1b[31m" in text  # red delete / conflict
    assert "\x1b[33m" in text  # yellow replace
    assert "\x1b[36m" in text  # cyan adopt
    assert ANSI.sub("", text).count("\n") == render_text(full_plan(), color=False).count("\n")


def test_text_conflicts_block_lists_fix() -> None:
    text = render_text(full_plan(), color=False)
    assert "1 conflict: the plan cannot be applied until it is resolved." in text
    assert "fix: adopt it with `reconciler import legacy u-legacy`" in text


def test_text_no_changes() -> None:
    text = render_text(empty_plan(), color=False)
    assert text == "No changes. 40 tokens match the manifests. 3 unmanaged.\n"
    one = Plan(unchanged=1, owned_count=1, desired_count=1)
    assert render_text(one, color=False) == "No changes. 1 token matches the manifests.\n"


# --- markdown -----------------------------------------------------------------------


def _table_rows(markdown: str) -> list[str]:
    return [ln for ln in markdown.splitlines() if ln.startswith("|")]


def test_markdown_summary_and_destructive_rows_first() -> None:
    text = render_markdown(full_plan())
    assert (
        "**Plan: 1 to create, 0 to update, 2 to replace, 1 to delete, "
        "0 to retire, 1 to adopt, 1 to forget.** "
        "40 unchanged, 3 unmanaged." in text
    )
    rows = _table_rows(text)
    kinds = [row.split("|")[2].strip(" *") for row in rows[2:8]]
    assert kinds == ["replace", "replace", "delete", "create", "adopt", "forget"]
    assert "**replace**" in rows[2] and "**replace**" not in rows[3]  # rotation is routine


def test_markdown_escapes_hostile_text() -> None:
    text = render_markdown(full_plan())
    rows = _table_rows(text)
    # Every row of both tables keeps its column count: the pipe and newline were escaped.
    assert {row.count("|") for row in rows[:8]} == {6}
    assert {row.count("|") for row in rows[8:]} == {5}
    assert "<script>" not in text and "alert(1)</script>" not in text
    assert "`c`" not in text
    assert "@admin" not in text and "#1 " not in text and "**x**" not in text
    assert "&#124;" in text and "&#96;c&#96;" in text and "&#60;script&#62;" in text


def test_markdown_conflicts_and_details() -> None:
    text = render_markdown(full_plan())
    assert "> **1 conflict** must be resolved" in text
    assert "<code>reconciler import legacy u-legacy</code>" in text
    assert "<details><summary>40 unchanged, 3 unmanaged</summary>" in text
    assert text.rstrip().endswith("</details>")


def test_markdown_no_changes() -> None:
    text = render_markdown(empty_plan())
    assert "**No changes.** 40 tokens match the manifests. 3 unmanaged." in text
    assert not _table_rows(text)


# --- json ---------------------------------------------------------------------------


def test_json_is_the_plan_document() -> None:
    plan = full_plan()
    data = json.loads(render_json(plan))
    assert data["format_version"] == 1
    assert data["summary"] == {
        "create": 1,
        "replace": 2,
        "update": 0,
        "delete": 1,
        "retire": 0,
        "adopt": 1,
        "forget": 1,
        "unchanged": 40,
        "unmanaged": 3,
        "conflicts": 1,
    }
    assert [a["kind"] for a in data["actions"]] == [a.kind for a in plan.actions]
    assert data["actions"][0]["reasons"]
    assert Plan.from_dict(data) == plan


@pytest.mark.parametrize("plan", [full_plan(), empty_plan()])
def test_json_is_stable(plan: Plan) -> None:
    assert render_json(plan) == render_json(Plan.from_dict(json.loads(render_json(plan))))


def test_every_renderer_handles_a_plan_with_only_conflicts() -> None:
    plan = Plan(conflicts=full_plan().conflicts, owned_count=1, desired_count=1)
    assert "1 conflict" in render_text(plan, color=False)
    assert "1 conflict" in render_markdown(plan)
    assert json.loads(render_json(plan))["summary"]["conflicts"] == 1


def test_rendering_needs_no_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Renderers are pure: with the clock moved ten years on, the
    same plan renders the same text in every format."""
    from reconciler.plan import model as plan_module
    from reconciler.plan import render as render_module
    from reconciler.util import times as times_module

    plan = full_plan()
    before = [render_text(plan, color=False), render_markdown(plan), render_json(plan)]
    later = NOW + timedelta(days=3650)

    class Later(datetime):
        @classmethod
        def now(cls, tz: object = None) -> Later:  # type: ignore[override]
            return cls.fromtimestamp(later.timestamp(), timezone.utc)

    for module in (plan_module, render_module, times_module):
        if hasattr(module, "datetime"):
            monkeypatch.setattr(module, "datetime", Later)
    assert times_module.utcnow() == later, "the clock did not move"
    after = [render_text(plan, color=False), render_markdown(plan), render_json(plan)]
    assert after == before
    assert plan.created_at == NOW


def test_the_cli_offers_exactly_the_renderers() -> None:
    from reconciler.cli.main import FORMATS
    from reconciler.plan.render import RENDERERS

    assert list(FORMATS.choices) == list(RENDERERS)


# ---------------------------------------------------------------- a pull request comment


def test_markdown_stays_within_a_pull_request_comment() -> None:
    from reconciler.manifest.spec import TokenSpec
    from reconciler.plan.model import Action, Conflict, Plan
    from reconciler.plan.render import MARKDOWN_LIMIT, render_markdown

    creates = [
        Action("create", f"svc-{n:04d}", None, TokenSpec(name=f"svc-{n:04d}"), ("new",))
        for n in range(3000)
    ]
    deletes = [Action("delete", f"old-{n:03d}", f"u{n}", None, ("removed",)) for n in range(50)]
    conflict = Conflict("taken", "u-taken", "not owned", "rename it")
    plan = Plan(actions=(*creates, *deletes), conflicts=(conflict,), desired_count=3001)
    text = render_markdown(plan)
    assert len(text) <= MARKDOWN_LIMIT
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    # The riskiest rows and every conflict are kept; creates are cut first, and counted.
    assert sum("**delete**" in row for row in rows) == 50
    assert "<code>taken</code>" in text
    shown = sum(" create " in row for row in rows)
    assert 0 < shown < 3000
    assert f"*{3000 - shown} more actions not shown ({3000 - shown} create): " in text
    assert text.rstrip().endswith("</details>")
    # A small plan is never cut.
    small = Plan(actions=tuple(creates[:5]), desired_count=5)
    assert "not shown" not in render_markdown(small)


def test_markdown_escapes_underscore_with_a_backslash(local_api: LocalApi, tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    manifest = tmp_path / "manifests" / "t.yaml"
    env = {"BENTO_CLOUD_API_ENDPOINT": local_api.url, "BENTO_CLOUD_API_KEY": local_api.admin_key}
    manifest.write_text(
        "tokens:\n  - name: md\n    description: old_one\n    scopes: [api]\n", encoding="utf-8"
    )
    applied = run_cli_subprocess(
        "apply", "--auto-approve", "--discard-secrets", cwd=tmp_path, env=env
    )
    assert applied.exit_code == 0, applied
    manifest.write_text(
        "tokens:\n  - name: md\n    description: new_one\n    scopes: [api]\n", encoding="utf-8"
    )
    shown = run_cli_subprocess("plan", "--format", "markdown", cwd=tmp_path, env=env)
    assert shown.exit_code == 0, shown
    assert "old\\_one" in shown.stdout and "new\\_one" in shown.stdout, shown
    assert "&#95;" not in shown.stdout
