"""What an apply did, as the one report the CLI prints at its end."""

from __future__ import annotations

from reconciler.apply.applier import ApplyResult
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
