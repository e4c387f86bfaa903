"""Renderers of a finished Plan: terminal text, Markdown for pull requests, and JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from reconciler.manifest.spec import Expiry
from reconciler.plan.model import KIND_TABLE, Action, ActionKind, Plan
from reconciler.util.text import plain, plural

if TYPE_CHECKING:
    pass

SYMBOLS: dict[ActionKind, str] = {kind: info.symbol for kind, info in KIND_TABLE.items()}
COLORS: dict[ActionKind, str | None] = {
    "create": "green",
    "delete": "red",
    "replace": "yellow",
    "update": "yellow",
    "retire": "red",
    "adopt": "cyan",
    "forget": None,
}
# The legend's order (and so the order of its lines) is this dict's.
LEGEND: dict[ActionKind, str] = {
    "create": "create",
    "delete": "delete",
    "replace": "replace (a new generation: create the new token, then retire the old one)",
    "update": "update in place (same token, same value)",
    "retire": "retire (delete a previous generation)",
    "adopt": "adopt (record in state; no API call)",
    "forget": "forget (drop from state; the token is already gone)",
}
# Every count, always, in one order: a reader (or a script) finds each in its place.
_SUMMARY_KINDS: tuple[ActionKind, ...] = (
    "create",
    "update",
    "replace",
    "delete",
    "retire",
    "adopt",
    "forget",
)


def _quoted(text: str) -> str:
    return '"' + plain(text).replace('"', '\\"') + '"'


def summary_line(plan: Plan) -> str:
    """'Plan: 2 to create, ... 40 unchanged, 3 unmanaged.' or the no-changes sentence."""
    if not plan.actions:
        text = f"No changes. {plural(plan.unchanged, 'token')} "
        text += "matches the manifests." if plan.unchanged == 1 else "match the manifests."
        if plan.unmanaged:
            text += f" {plan.unmanaged} unmanaged."
        return text
    counts = plan.summary()
    parts = [f"{counts[kind]} to {kind}" for kind in _SUMMARY_KINDS]
    return f"Plan: {', '.join(parts)}. {plan.unchanged} unchanged, {plan.unmanaged} unmanaged."


def _expiry_text(value: object) -> str:
    text = str(value or "never")
    try:
        if Expiry.parse(text).kind == "duration":
            return f"{text} after creation"
    except ValueError:
        pass
    return text


def _changes(action: Action) -> list[tuple[str, str, str]]:
    """(attribute, before, after) for each attribute a replace changes, as display text."""
    before, after = action.before, action.after
    if before is None or after is None:
        return []
    rows: list[tuple[str, str, str]] = []
    if before.description != after.description:
        rows.append(("description", _quoted(before.description), _quoted(after.description)))
    if sorted(before.scopes) != sorted(after.scopes):
        rows.append(
            (
                "scopes",
                ", ".join(plain(s) for s in before.scopes) or "(none)",
                ", ".join(plain(s) for s in after.scopes) or "(none)",
            )
        )
    if action.expiry_changed:
        rows.append(("expires", plain(before.expired_at or "never"), _expiry_text(after.expires)))
    return rows


#: For each token the plan creates, where its new value goes (describe() texts, never a
#: credential): reconciler.delivery.plan_destinations.
Destinations = Mapping[str, Sequence[str]]


def render_text(plan: Plan, *, color: bool, destinations: Destinations | None = None) -> str:
    """The human plan, Terraform-like: a legend, one line per action with its reasons,
    the attributes a replace changes, where a new value goes, conflicts with their fixes,
    and a summary line."""

    def style(text: str, **kwargs: Any) -> str:
        return click.style(text, **kwargs) if color else text

    lines: list[str] = []
    if plan.actions:
        used = [kind for kind in LEGEND if any(a.kind == kind for a in plan.actions)]
        lines.append("Actions are shown with these symbols:")
        for kind in used:
            symbol = style(f"{SYMBOLS[kind]:>3}", fg=COLORS[kind], bold=True)
            lines.append(f"  {symbol} {LEGEND[kind]}")
        lines.append("")
        lines.append("Reconciler will perform the following actions:")
        lines.append("")
        name_width = max(len(_names(a)) for a in plan.actions)
        uid_width = max(len(plain(a.uid or "")) for a in plan.actions)
        for action in plan.actions:
            head = style(
                f"{SYMBOLS[action.kind]:<3} {action.kind:<7}", fg=COLORS[action.kind], bold=True
            )
            name = _names(action).ljust(name_width)
            uid = plain(action.uid or "").ljust(uid_width)
            reasons = "; ".join(plain(r) for r in action.reasons)
            lines.append(f"  {head}  {style(name, bold=True)}  {uid}  {reasons}".rstrip())
            if action.kind in ("replace", "update"):
                changes = _changes(action)
                width = max((len(attr) for attr, _, _ in changes), default=0)
                for attr, old, new in changes:
                    lines.append(
                        f"        {attr + ':':<{width + 1}} "
                        f"{style(old, fg='red')} -> {style(new, fg='green')}"
                    )
            for where in (destinations or {}).get(action.name, ()) if action.creates else ():
                lines.append(f"        deliver to: {plain(where)}")
        lines.append("")
    if plan.conflicts:
        count = len(plan.conflicts)
        lines.append(
            style(
                f"{plural(count, 'conflict')}: the plan cannot be applied until "
                f"{'it is' if count == 1 else 'they are'} resolved.",
                fg="red",
                bold=True,
            )
        )
        lines.append("")
        for conflict in plan.conflicts:
            mark = style("  !", fg="red", bold=True)
            lines.append(f"{mark} {plain(conflict.name)}  {plain(conflict.uid)}")
            lines.append(f"      {plain(conflict.reason)}")
            lines.append(f"      fix: {plain(conflict.fix)}")
        lines.append("")
    lines.append(style(summary_line(plan), bold=True))
    if plan.notes:
        # After the summary: "No changes." stays the first line when nothing is to do.
        lines += ["", "Notes:", *(f"  - {plain(note)}" for note in plan.notes)]
    return "\n".join(lines) + "\n"


def _names(action: Action) -> str:
    """The manifest name, with the live name a new generation gets when it differs
    ('ci-deployer → ci-deployer-2'), or the live name acted on ('ci-deployer (ci-deployer-2)')."""
    name = plain(action.name)
    before = action.before.live_name if action.before is not None else None
    after = action.after.live_name if action.after is not None else None
    if action.creates and after and (after != name or (before and before != name)):
        return f"{plain(before or name)} → {plain(after)}"
    if before and before != name:
        return f"{name} ({plain(before)})"
    return name


# "_" is common in names and scopes: a backslash escape reads better in raw text than an entity.
_MARKDOWN_ENTITIES = {char: f"&#{ord(char)};" for char in "&<>\"'|`\\*[]~@#!$"} | {
    "_": "\\_",
    "\n": " ",
    "\r": " ",
    "\t": " ",
}


def md(text: str) -> str:
    """User text made inert in Markdown and HTML, including inside a table cell: every
    character with a meaning (pipes, backticks, emphasis, links, tags, @mentions, #refs)
    becomes an HTML entity, which GitHub renders as the character itself."""
    return "".join(_MARKDOWN_ENTITIES.get(char, char) for char in plain(text))


def md_code(text: str) -> str:
    """User text as inline code: escaped as by ``md``, and inside <code>, where GitHub
    does not turn @names or #numbers into mentions or references."""
    return f"<code>{md(text)}</code>" if text else ""


def _md_fix(fix: str) -> str:
    # Our fix texts quote commands in backticks; show those as code, everything escaped.
    parts = fix.split("`")
    if len(parts) % 2 == 0:
        return md(fix)
    return "".join(md_code(part) if index % 2 else md(part) for index, part in enumerate(parts))


def _md_reasons(action: Action, destinations: Destinations | None = None) -> str:
    cells = [md(r) for r in action.reasons]
    if action.kind in ("replace", "update"):
        cells += [
            f"{md(attr)}: {md_code(old)} → {md_code(new)}" for attr, old, new in _changes(action)
        ]
    if action.creates:
        cells += [f"deliver to: {md_code(w)}" for w in (destinations or {}).get(action.name, ())]
    return "<br>".join(cells)


def _md_header(header: list[str]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]


def _md_rows(rows: Iterable[list[str]]) -> list[str]:
    return ["| " + " | ".join(row) + " |" for row in rows]


# GitHub refuses comments longer than 65,536 characters; keep room for a caller's header.
MARKDOWN_LIMIT = 60_000


def _fit_rows(rows: list[str], budget: int) -> tuple[list[str], int]:
    """As many leading table rows as fit in ``budget`` characters, and how many were left."""
    used = 0
    for index, row in enumerate(rows):
        used += len(row) + 1
        if used > budget:
            return rows[:index], len(rows) - index
    return rows, 0


def render_markdown(
    plan: Plan, *, limit: int = MARKDOWN_LIMIT, destinations: Destinations | None = None
) -> str:
    """A pull-request comment: summary, conflicts, a table of actions (replacements and
    deletions first), and the unchanged/unmanaged counts collapsed. All user text is
    escaped (see ``md``). Past ``limit`` characters the tables are cut, least risky rows
    first (creates, adoptions, forgets), and a note says how many rows are missing: the
    full plan is in the text and JSON views."""
    text = _markdown(plan, budget=None, destinations=destinations)
    if len(text) <= limit:
        return text
    budget = max(limit - _markdown_overhead(plan), 0)
    return _markdown(plan, budget=budget, destinations=destinations)


def _markdown_overhead(plan: Plan) -> int:
    """Characters of a rendering with empty tables plus the truncation notes."""
    return len(_markdown(plan, budget=0))


def _markdown(plan: Plan, *, budget: int | None, destinations: Destinations | None = None) -> str:
    lines = ["### Reconciler plan", ""]
    summary = summary_line(plan)
    if plan.actions:
        head, _, tail = summary.partition(". ")
        lines.append(f"**{head}.** {tail}")
    else:
        lines.append(f"**No changes.** {summary.removeprefix('No changes. ')}")
    lines.append("")
    if plan.conflicts:
        count = len(plan.conflicts)
        lines.append(
            f"> **{plural(count, 'conflict')}** must be resolved before this plan can be applied."
        )
        lines.append("")
    ordered = sorted(plan.actions, key=lambda a: (KIND_TABLE[a.kind].review, a.sort_key()))
    action_rows = _md_rows(
        [
            f"`{SYMBOLS[a.kind]}`",
            f"**{a.kind}**" if a.destructive else a.kind,
            md_code(_names(a)),
            md_code(a.uid or ""),
            _md_reasons(a, destinations),
        ]
        for a in ordered
    )
    conflict_rows = _md_rows(
        [md_code(c.name), md_code(c.uid), md(c.reason), _md_fix(c.fix)] for c in plan.conflicts
    )
    actions_cut = conflicts_cut = 0
    if budget is not None:
        # Conflicts block the plan, so their rows get the budget first.
        conflict_rows, conflicts_cut = _fit_rows(conflict_rows, budget)
        remaining = budget - sum(len(row) + 1 for row in conflict_rows)
        action_rows, actions_cut = _fit_rows(action_rows, remaining)
    if plan.actions:
        lines += [*_md_header(["", "action", "name", "uid", "reasons"]), *action_rows, ""]
        if actions_cut:
            lines += [_cut_note(actions_cut, ordered[len(ordered) - actions_cut :]), ""]
    if plan.conflicts:
        lines += ["#### Conflicts", ""]
        lines += [*_md_header(["name", "uid", "conflict", "fix"]), *conflict_rows, ""]
        if conflicts_cut:
            lines += [f"*{plural(conflicts_cut, 'more conflict')} not shown.*", ""]
    lines += [
        f"<details><summary>{plan.unchanged} unchanged, {plan.unmanaged} unmanaged</summary>",
        "",
        f"- **{plan.unchanged} unchanged**: owned tokens that already match the manifests.",
        f"- **{plan.unmanaged} unmanaged**: tokens neither declared nor owned by reconciler, "
        "left alone (`--prune` would delete them).",
        f"- The manifests declare {plural(plan.desired_count, 'token')}; reconciler owns "
        f"{plan.owned_count}.",
        "",
        "</details>",
    ]
    if plan.notes:
        lines += ["", "#### Notes", "", *(f"- {md(note)}" for note in plan.notes)]
    return "\n".join(lines) + "\n"


def _cut_note(count: int, cut: list[Action]) -> str:
    kinds = sorted({a.kind for a in cut}, key=lambda k: KIND_TABLE[k].review)
    detail = ", ".join(f"{sum(1 for a in cut if a.kind == k)} {k}" for k in kinds)
    return (
        f"*{plural(count, 'more action')} not shown{f' ({detail})' if detail else ''}: this "
        "comment would be too long. The job log has the full plan (`reconciler show` of the "
        "saved plan).*"
    )


def render_json(plan: Plan) -> str:
    """The plan as JSON: ``Plan.to_dict()``, a stable, versioned structure::

        {
          "format_version": 1,
          "created_at": "2026-01-01T00:00:00Z",     # when the plan was made
          "state": {"lineage": "...", "serial": 7},  # the state it was made from
          "live_digest": "sha256 hex",               # fingerprint of the live tokens
          "summary": {"create": 0, "replace": 0, "update": 0, "delete": 0,
                      "retire": 0, "adopt": 0, "forget": 0,
                      "unchanged": 0, "unmanaged": 0, "conflicts": 0},
          "owned_count": 0, "desired_count": 0, "threshold_base": 0,
          "actions": [{"kind", "name", "uid", "spec", "reasons", "before", "after",
                       "routine", "destructive"}, ...],   # sorted by name, then kind
          "conflicts": [{"name", "uid", "reason", "fix"}, ...],
          "notes": ["...", ...]        # kept previous generations, expiries; not changes
        }

    ``spec`` is TokenSpec.to_dict(); ``before`` (live: live_name, description, scopes,
    expired_at, created_at) is null for create; ``after`` (desired: live_name, description,
    scopes, expires, rotate_before) is null for delete, retire and forget; ``live_name`` in
    ``after`` is the name a create or replace gives the new token. No secret is ever part of a plan.
    """
    return json.dumps(plan.to_dict(), indent=2) + "\n"


RENDERERS: dict[str, Callable[[Plan, bool], str]] = {
    "text": lambda plan, color: render_text(plan, color=color),
    "markdown": lambda plan, _color: render_markdown(plan),
    "json": lambda plan, _color: render_json(plan),
}


def render(
    plan: Plan, fmt: str, *, color: bool = False, destinations: Destinations | None = None
) -> str:
    """``plan`` in one of the RENDERERS formats (colour applies to text only). Text and
    Markdown name each create's ``destinations``; JSON has them as ``spec.deliver_to``
    only where a manifest sets one (the run's list is the apply's, not the plan's)."""
    if fmt == "text":
        return render_text(plan, color=color, destinations=destinations)
    if fmt == "markdown":
        return render_markdown(plan, destinations=destinations)
    return RENDERERS[fmt](plan, color)
