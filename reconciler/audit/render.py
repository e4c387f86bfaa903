"""Renderers of a finished Audit: a text table, Markdown (a table and a Mermaid gantt chart
of the managed tokens' lifetimes, which GitHub and GitLab draw), and JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from reconciler.audit.findings import FINDINGS, Audit, AuditedToken
from reconciler.plan.render import MARKDOWN_LIMIT, md, md_code
from reconciler.util.text import plain, plural
from reconciler.util.times import format_duration

# Past this many managed tokens the chart shows the ones that expire first: a chart of
# hundreds of bars is unreadable, and GitHub refuses diagrams over 50,000 characters.
MAX_CHART_TOKENS = 60
# Bars of tokens that never expire reach this far past today at least.
NEVER_HORIZON = timedelta(days=30)
# Mermaid's dateFormat (dayjs) and the same format for Python; minutes, in UTC.
MERMAID_DATE_FORMAT = "YYYY-MM-DD HH:mm"
CHART_TIME = "%Y-%m-%d %H:%M"
# Section titles and task texts may not hold what Mermaid's gantt lexer splits or comments
# on (`:`, `#`, `;`, `%`), nor line breaks; anything but these is replaced.
_CHART_UNSAFE = re.compile(r"[^A-Za-z0-9 ._()/+-]")


def _day(moment: datetime | None, none: str) -> str:
    return moment.strftime("%Y-%m-%d") if moment is not None else none


def _managed(token: AuditedToken) -> str:
    if not token.managed:
        return "unmanaged"
    if token.generation == "previous":
        return f"managed (previous generation of {token.manifest_name})"
    if token.manifest_name != token.name:
        return f"managed (as {token.manifest_name})"
    return "managed"


def _row(token: AuditedToken) -> tuple[str, ...]:
    return (
        plain(token.name),
        plain(token.uid),
        plain(_managed(token)),
        ",".join(plain(s) for s in token.scopes) or "(none)",
        _day(token.created_at, "?"),
        _day(token.expired_at, "never"),
        _day(token.last_used_at, "never"),
        ", ".join(token.findings) or "-",
    )


_HEADER = ("NAME", "UID", "MANAGED", "SCOPES", "CREATED", "EXPIRES", "LAST USED", "FINDINGS")


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def _counts(audit: Audit) -> str:
    managed = len(audit.managed)
    unmanaged = len(audit.tokens) - managed
    tokens = plural(len(audit.tokens), "live token")
    return f"{tokens} of the API key's user: {managed} managed, {unmanaged} unmanaged."


def _findings_line(audit: Audit) -> str:
    found = [f"{count} {name}" for name, count in audit.summary().items() if count]
    return "Findings: " + (", ".join(found) if found else "none") + "."


def _policy_line(audit: Audit) -> str:
    policy = audit.policy
    return (
        f"expiring: within {plural(policy.expiring.days, 'day')}; unused: not used for more "
        f"than {plural(policy.unused.days, 'day')}. Dates are UTC."
    )


def render_text(audit: Audit) -> str:
    """A table of every live token with its findings, then the counts."""
    lines = [f"Audit of {format_utc(audit.generated_at)}", ""]
    if audit.tokens:
        lines += _columns([_HEADER, *(_row(t) for t in audit.tokens)])
        lines.append("")
    lines += [_counts(audit), _findings_line(audit), _policy_line(audit)]
    return "\n".join(lines) + "\n"


def format_utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


# -- Markdown --------------------------------------------------------------------------


def _md_row(token: AuditedToken) -> str:
    cells = [
        md_code(token.name),
        md_code(token.uid),
        md(_managed(token)),
        md(", ".join(token.scopes)),
        _day(token.created_at, "?"),
        _day(token.expired_at, "never"),
        _day(token.last_used_at, "never"),
        ", ".join(f"**{f}**" if f in ("expired", "expiring") else f for f in token.findings),
    ]
    return "| " + " | ".join(cells) + " |"


def render_markdown(audit: Audit, *, limit: int = MARKDOWN_LIMIT) -> str:
    """For an issue or a comment: the counts, a table of every token (cut, with a note,
    past ``limit`` characters), and the Mermaid chart of the managed tokens' lifetimes.
    All text from the API is escaped (plan.render.md)."""
    chart = render_gantt(audit)
    head = [
        "### Reconciler audit",
        "",
        f"**{_counts(audit)}** {_findings_line(audit)}",
        "",
    ]
    legend = [
        "<details><summary>What the findings mean</summary>",
        "",
        *(f"- `{name}`: {meaning}" for name, meaning in FINDINGS.items()),
        "",
        md(_policy_line(audit)),
        "",
        "</details>",
    ]
    tail = ["", *legend]
    if chart is not None:
        tail += ["", "#### Lifetimes of the managed tokens", "", "```mermaid", chart, "```"]
        hidden = len(audit.managed) - MAX_CHART_TOKENS
        if hidden > 0:
            tail += ["", f"*{plural(hidden, 'more managed token')} expire later, not drawn.*"]
    rows = [_md_row(t) for t in audit.tokens]
    budget = limit - sum(len(line) + 1 for line in (*head, *tail)) - 400
    table: list[str] = []
    if rows:
        table = ["| " + " | ".join(h.lower() for h in _HEADER) + " |", "|" + "---|" * len(_HEADER)]
        used = 0
        for index, row in enumerate(rows):
            used += len(row) + 1
            if used > budget:
                left = len(rows) - index
                table += ["", f"*{plural(left, 'more token')} not shown: `--format json` has all.*"]
                break
            table.append(row)
    return "\n".join([*head, *table, *tail]) + "\n"


def _chart_text(text: str) -> str:
    return _CHART_UNSAFE.sub("_", text).strip() or "_"


def _chart_tokens(audit: Audit) -> list[AuditedToken]:
    """The managed tokens to draw: by expiry (never last), the first MAX_CHART_TOKENS."""
    far = datetime.max.replace(tzinfo=audit.generated_at.tzinfo)
    ordered = sorted(
        audit.managed, key=lambda t: (t.expired_at or far, t.manifest_name or "", t.uid)
    )
    return ordered[:MAX_CHART_TOKENS]


def render_gantt(audit: Audit) -> str | None:
    """A Mermaid ``gantt`` chart: a section per manifest name, a bar per managed token
    from creation to expiry (to the chart's end for one that never expires, `done` once
    expired), and its rotation window (`crit`) when its spec has rotate_before. None when
    nothing is managed."""
    tokens = _chart_tokens(audit)
    if not tokens:
        return None
    now = audit.generated_at
    expiries = [t.expired_at for t in tokens if t.expired_at is not None]
    horizon = max([now + NEVER_HORIZON, *expiries])
    lines = [
        "gantt",
        f"    title Managed tokens at {format_utc(now)}",
        f"    dateFormat {MERMAID_DATE_FORMAT}",
        "    axisFormat %Y-%m-%d",
    ]
    sections: dict[str, list[str]] = {}
    for index, token in enumerate(tokens, start=1):
        name = token.manifest_name or token.name
        sections.setdefault(name, []).extend(_tasks(token, index, now=now, horizon=horizon))
    for name, tasks in sections.items():
        lines.append(f"    section {_chart_text(name)}")
        lines += [f"    {task}" for task in tasks]
    return "\n".join(lines)


def _tasks(token: AuditedToken, index: int, *, now: datetime, horizon: datetime) -> list[str]:
    start = token.created_at or now
    end = token.expired_at or horizon
    end = max(end, start + timedelta(minutes=1))
    if token.expired_at is None:
        text, tags = "never expires", ""
    elif token.expired_at <= now:
        text, tags = f"expired {_day(token.expired_at, '')}", "done, "
    else:
        text, tags = f"expires {_day(token.expired_at, '')}", ""
    if token.generation == "previous":
        text += f" (previous generation {token.name})"
    elif token.manifest_name != token.name:
        text += f" ({token.name})"
    tasks = [f"{_chart_text(text)} :{tags}t{index}, {_at(start)}, {_at(end)}"]
    window = token.rotate_before
    if window and token.expired_at is not None and token.generation == "current":
        window_start = max(token.expired_at - window, start)
        label = _chart_text(f"rotation window {format_duration(window)}")
        tasks.append(f"{label} :crit, r{index}, {_at(window_start)}, {_at(end)}")
    return tasks


def _at(moment: datetime) -> str:
    return moment.strftime(CHART_TIME)


# -- JSON ------------------------------------------------------------------------------


def render_json(audit: Audit) -> str:
    """``Audit.to_dict()``::

    {"format_version": 1, "generated_at": "2026-12-03T10:00:00Z",
     "policy": {"expiring_days": 14, "unused_days": 90},
     "tokens": [{"name", "uid", "managed", "manifest_name", "generation", "scopes",
                 "created_at", "expired_at", "last_used_at", "findings": [...]}],
     "summary": {"expired": 0, "expiring": 1, ...}}
    """
    return json.dumps(audit.to_dict(), indent=2) + "\n"


RENDERERS: dict[str, Callable[[Audit], str]] = {
    "text": render_text,
    "markdown": render_markdown,
    "json": render_json,
}
