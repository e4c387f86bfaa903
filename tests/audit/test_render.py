"""Tests of reconciler.audit.render: the text table, the Markdown (escaped, cut past its
limit) and its Mermaid gantt chart read strictly (support/mermaid.py), and the JSON. Pure."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from support.mermaid import MermaidError, mermaid_blocks, parse_gantt
from support.planning import CREATED, NOW, spec, state_of, token

from reconciler.audit.findings import Audit, AuditPolicy, audit_tokens
from reconciler.audit.render import (
    MAX_CHART_TOKENS,
    render_gantt,
    render_json,
    render_markdown,
    render_text,
)
from reconciler.state.model import PreviousGeneration

DAY = timedelta(days=1)


def mixed_audit() -> Audit:
    """Managed tokens of every shape (expiring with a rotation window, never expiring,
    expired, a NAME-2 generation and its previous one) and hostile unmanaged ones."""
    rotating = spec("gantt", expires="30d", rotate_before=7 * DAY)  # a Mermaid keyword
    state = state_of(
        ("gantt", "u1", rotating),
        ("forever", "u2", spec("forever")),
        ("old", "u3", spec("old")),
        ("title", "u4", spec("title", rotate_before=2 * DAY)),
    )
    state = state.with_previous(PreviousGeneration(name="title", live_name="title", uid="u5"))
    live = [
        token("u1", "gantt", expired_at=NOW + 5 * DAY, last_used_at=NOW),
        token("u2", "forever", scopes=["read_cluster"]),
        token("u3", "old", expired_at=NOW - 3 * DAY),
        token("u4", "title-2", created_at=NOW - 1 * DAY, expired_at=NOW + 40 * DAY),
        token("u5", "title", expired_at=NOW + 1 * DAY),
        token("u6", "evil|`name`", description="<b>@team #1</b>"),
        token("u7", "x" * 70, scopes=["write_cluster"], created_at=NOW),
    ]
    return audit_tokens(live, state, {"gantt": rotating}, now=NOW, policy=AuditPolicy())


def test_text_table_lists_every_token_with_its_findings() -> None:
    text = render_text(mixed_audit())
    lines = text.splitlines()
    assert lines[0] == "Audit of 2026-06-01 12:00 UTC"
    header = lines[2].split()
    assert header[:3] == ["NAME", "UID", "MANAGED"] and header[-1] == "FINDINGS"
    row = next(line for line in lines if line.startswith("gantt "))
    assert "managed" in row and "2026-06-06" in row and "expiring, broad-scope" in row
    assert "managed (as title)" in next(line for line in lines if line.startswith("title-2"))
    assert "previous generation of title" in next(
        line for line in lines if line.startswith("title ")
    )
    assert "7 live tokens of the API key's user: 5 managed, 2 unmanaged." in text
    assert "Findings: 1 expired, 2 expiring," in text


def test_markdown_escapes_api_text_and_draws_the_managed_tokens() -> None:
    text = render_markdown(mixed_audit())
    assert text.startswith("### Reconciler audit\n")
    assert "evil|`name`" not in text and "<b>" not in text
    assert "<code>evil&#124;&#96;name&#96;</code>" in text
    (chart,) = mermaid_blocks(text)
    gantt = parse_gantt(chart)
    assert gantt.date_format == "%Y-%m-%d %H:%M"
    assert gantt.title == "Managed tokens at 2026-06-01 12:00 UTC"
    lifetimes = [t for t in gantt.tasks if t.id.startswith("t")]
    assert len(lifetimes) == 5, "one bar per managed token"
    assert set(gantt.sections) == {"gantt", "forever", "old", "title"}
    windows = {t.id: t for t in gantt.tasks if t.id.startswith("r")}
    (window,) = (t for t in windows.values() if t in gantt.sections["gantt"])
    assert window.tags == ("crit",)
    assert window.end - window.start == 7 * DAY
    (expired,) = gantt.sections["old"]
    assert expired.tags == ("done",) and expired.text.startswith("expired ")
    (forever,) = gantt.sections["forever"]
    assert forever.text == "never expires" and forever.end > NOW.replace(tzinfo=None)
    title = gantt.sections["title"]
    assert [t.text for t in title if t.id.startswith("t")] == [
        "expires 2026-06-02 (previous generation title)",
        "expires 2026-07-11 (title-2)",
    ]
    assert sum(t.id.startswith("r") for t in title) == 1, "a window for the current one only"


def test_gantt_is_left_out_without_managed_tokens() -> None:
    audit = audit_tokens([token("u1", "a")], state_of(), {}, now=NOW)
    assert render_gantt(audit) is None
    assert "```mermaid" not in render_markdown(audit)


def test_gantt_draws_the_first_to_expire_when_there_are_many() -> None:
    count = MAX_CHART_TOKENS + 5
    specs = [spec(f"t{i:03d}") for i in range(count)]
    state = state_of(*((s.name, f"u{i}", s) for i, s in enumerate(specs)))
    live = [token(f"u{i}", s.name, expired_at=NOW + (count - i) * DAY) for i, s in enumerate(specs)]
    audit = audit_tokens(live, state, {}, now=NOW)
    gantt = parse_gantt(render_gantt(audit) or "")
    assert len(gantt.tasks) == MAX_CHART_TOKENS
    assert "t064" in gantt.sections and "t000" not in gantt.sections  # t000 expires last
    assert "5 more managed tokens expire later, not drawn." in render_markdown(audit)


def test_zero_length_and_unknown_creation_still_make_valid_bars() -> None:
    state = state_of(("a", "u1", spec("a")), ("b", "u2", spec("b")))
    live = [
        token("u1", "a", created_at=NOW, expired_at=NOW),
        token("u2", "b").model_copy(update={"created_at": None}),
    ]
    gantt = parse_gantt(render_gantt(audit_tokens(live, state, {}, now=NOW)) or "")
    assert len(gantt.tasks) == 2


def test_markdown_is_cut_to_its_limit_with_a_note() -> None:
    live = [token(f"u{i}", f"token-{i:04d}", created_at=CREATED) for i in range(400)]
    audit = audit_tokens(live, state_of(), {}, now=NOW)
    text = render_markdown(audit, limit=20_000)
    assert len(text) <= 20_000
    assert "more tokens not shown: `--format json` has all." in text


def test_json_round_trips_to_dict() -> None:
    audit = mixed_audit()
    assert json.loads(render_json(audit)) == audit.to_dict()


_HEAD = "gantt\n    dateFormat YYYY-MM-DD HH:mm\n    section a\n    "
_SPAN = "2026-01-01 00:00, 2026-01-02 00:00"


@pytest.mark.parametrize(
    "chart",
    [
        _HEAD + f"gantt-x :t1, {_SPAN}",  # read as the keyword gantt
        _HEAD + "x :t1, 2026-01-02 00:00, 2026-01-01 00:00",  # ends before it starts
        _HEAD + "x :t1, 2026-01-01, 2026-01-02 00:00",  # not the dateFormat
        _HEAD.replace("section a", "section a: b") + f"x :t1, {_SPAN}",
        _HEAD + f"x #1 :t1, {_SPAN}",  # a comment
        _HEAD + f"x :t1, {_SPAN}\n    y :t1, {_SPAN}",  # a repeated id
        "graph TD\n    a --> b",
    ],
)
def test_the_strict_reading_refuses_what_mermaid_would_misread(chart: str) -> None:
    """The check of the charts above is not vacuous."""
    with pytest.raises(MermaidError):
        parse_gantt(chart)
