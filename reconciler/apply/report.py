"""What an apply did, as the one report the CLI prints at its end."""

from __future__ import annotations

from typing import Any

from reconciler.apply.applier import ApplyEvent, ApplyResult
from reconciler.plan.model import KIND_TABLE


def apply_report(result: ApplyResult, secrets_out: str | None) -> str:
    """What an apply did: one line when it finished, else what failed and what did not start."""
    counts = dict.fromkeys(KIND_TABLE, 0)
    for event in result.done:
        counts[event.action.kind] += 1
    done = ", ".join(f"{n} {KIND_TABLE[k].past}" for k, n in counts.items() if n)
    done = done or "nothing done"
    if result.ok:
        lines = [f"Apply complete: {done}."]
        if secrets_out and any(e.action.creates for e in result.done):
            lines.append(f"New token values are in {secrets_out}.")
        return "\n".join(lines)
    lines = [f"Apply stopped: {done}."]
    if result.interrupted:
        lines.append(f"Interrupted by {result.interrupted}.")
    for event in result.failed:
        lines.append(f"  failed: {event.action.kind} {event.action.name}: {event.detail}")
    if result.not_started:
        names = ", ".join(f"{a.kind} {a.name}" for a in result.not_started[:10])
        more = len(result.not_started) - 10
        lines.append(
            f"  not started ({len(result.not_started)}): {names}"
            + (f" and {more} more" if more > 0 else "")
        )
    lines.append("State records everything that was done; run apply again to converge.")
    return "\n".join(lines)


#: Version of the JSON documents `apply --format json` prints; fields are only ever added.
APPLY_FORMAT_VERSION = 1


def _event(event: ApplyEvent) -> dict[str, Any]:
    action = event.action
    return {"kind": action.kind, "name": action.name, "uid": action.uid, "detail": event.detail}


def apply_document(result: ApplyResult | None, secrets_out: str | None) -> dict[str, Any]:
    """What an apply did, for `apply --format json`: ``ok``, and the actions done, failed and
    not started (``result`` None: the plan had no changes). Never a value: an event's
    detail is the same line the text output prints."""
    if result is None:
        done: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        not_started: list[dict[str, Any]] = []
        ok, interrupted = True, None
    else:
        done = [_event(e) for e in result.done]
        failed = [_event(e) for e in result.failed]
        not_started = [{"kind": a.kind, "name": a.name, "uid": a.uid} for a in result.not_started]
        ok, interrupted = result.ok, result.interrupted
    counts = dict.fromkeys(KIND_TABLE, 0)
    for item in done:
        counts[item["kind"]] += 1
    return {
        "format_version": APPLY_FORMAT_VERSION,
        "ok": ok,
        "changes": result is not None,
        "summary": counts,
        "done": done,
        "failed": failed,
        "not_started": not_started,
        "interrupted": interrupted,
        "secrets_out": secrets_out,
    }
