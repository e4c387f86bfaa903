"""The commands that look at every live token of the API key's user: export (manifests
for the tokens nothing manages yet) and audit (findings for each, managed or not).

Like reconciler.cli.main, each imports its use case when it runs, so `--help` stays fast."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from reconciler import defaults
from reconciler.cli.options import global_options, session
from reconciler.util.text import plural

# The keys of audit.findings.FINDINGS (not imported here: --help should stay fast;
# tests/cli/test_inventory.py checks they agree).
FINDING_NAMES = (
    "expired",
    "expiring",
    "never-expires",
    "never-used",
    "unused",
    "broad-scope",
    "unmanaged",
    "undeclared",
)
# The keys of audit.render.RENDERERS.
AUDIT_FORMATS = click.Choice(["text", "markdown", "json"])
EXIT_FINDINGS = 2


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--out",
    type=click.Path(dir_okay=False, allow_dash=True),
    metavar="FILE",
    help="Write the manifest to FILE, a new file (its folder is made); '-' or none: print it.",
)
@click.option("--force", is_flag=True, help="Replace --out FILE when it exists.")
@click.option("--search", metavar="TEXT", help="Only tokens whose name contains TEXT.")
@click.option(
    "--include-expired",
    is_flag=True,
    help="Export expired tokens too (left out and counted by default: they no longer work).",
)
@global_options
def export(
    paths: tuple[str, ...], out: str | None, force: bool, search: str | None, include_expired: bool
) -> None:
    """Write a manifest for every live token that nothing manages yet.

    Lists the tokens of the API key's user (BentoCloud lists only the caller's own) and
    writes, for each one that the manifests under PATHS (default: manifests/, which need
    not exist yet) do not declare and state does not own, its name, description, scopes
    and exact expiry, with its uid, creator, creation and last use in a comment. The next
    `reconciler plan` adopts each one; `reconciler apply` records them in state with no
    API call. Tokens that cannot be declared as they are (a name that is not a valid
    manifest name, the live name of a generation state owns, a name two tokens share) are
    skipped with a line saying why. Reads state without the lock; writes only FILE.
    """
    from reconciler.operations.export import (
        ExportRequest,
        export_tokens,
        refuse_existing,
        schema_ref_for,
        write_export,
    )

    target = None if out in (None, "-") else Path(str(out))
    if target is not None:
        refuse_existing(target, force=force)  # before anything is listed
    request = ExportRequest(
        paths=paths, search=search, include_expired=include_expired, replacing=target
    )
    with session() as run:
        exported = export_tokens(run, request, schema_ref=schema_ref_for(target))
    selection = exported.selection
    for skipped in selection.skipped:
        click.echo(f"Note: {skipped}", err=True)
    left_out = []
    if selection.managed:
        left_out.append(f"{selection.managed} managed already")
    if selection.expired:
        left_out.append(f"{selection.expired} expired (--include-expired exports them)")
    if selection.skipped:
        left_out.append(f"{len(selection.skipped)} skipped (above)")
    rest = f" Left out: {', '.join(left_out)}." if left_out else ""
    if exported.text is None:
        click.echo(f"Nothing to export.{rest}", err=True)
        return
    count = plural(len(exported.entries), "token")
    if target is None:
        click.echo(exported.text, nl=False)
        where = "standard output"
    else:
        write_export(target, exported.text, force=force)
        where = str(target)
    click.echo(
        f"Exported {count} to {where}.{rest} Next: `reconciler plan` shows one adopt per "
        "exported token, and `reconciler apply` records them in state.",
        err=True,
    )


def _fail_on(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    from reconciler.audit.findings import parse_findings

    try:
        return parse_findings(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=AUDIT_FORMATS,
    default="text",
    show_default=True,
    help="text, markdown (with a Mermaid chart of lifetimes) or JSON (format_version 1).",
)
@click.option(
    "--expiring-days",
    type=click.IntRange(min=0),
    default=defaults.EXPIRING_DAYS,
    show_default=True,
    help="A token that expires within this many days is `expiring`.",
)
@click.option(
    "--unused-days",
    type=click.IntRange(min=0),
    default=defaults.UNUSED_DAYS,
    show_default=True,
    help="A token not used for more than this many days (counted from its creation when "
    "never used) is `unused`.",
)
@click.option(
    "--fail-on",
    multiple=True,
    metavar="FINDING,...",
    callback=_fail_on,
    help="Exit 2 when any token has one of these findings (comma-separated, repeatable): "
    + ", ".join(FINDING_NAMES)
    + ".",
)
@global_options
def audit(
    paths: tuple[str, ...],
    fmt: str,
    expiring_days: int,
    unused_days: int,
    fail_on: tuple[str, ...],
) -> None:
    """List every live token of the API key's user with its findings.

    Managed or not: name, uid, whether state owns it, scopes, created, expires, last used,
    and findings: expired, expiring (within --expiring-days), never-expires, never-used,
    unused (not used for more than --unused-days), broad-scope (holds api), unmanaged (not
    in state), undeclared (in state, no longer in the manifests under PATHS, default
    manifests/). BentoCloud lists only the caller's own tokens. Markdown adds a Mermaid
    chart of the managed tokens' lifetimes. Reads state without the lock, writes nothing.

    Exit codes: 0, or 2 when --fail-on names a finding some token has; 1 on errors.
    """
    from reconciler.audit.render import RENDERERS
    from reconciler.operations.audit import AuditRequest
    from reconciler.operations.audit import audit as run_audit

    request = AuditRequest(paths=paths, expiring_days=expiring_days, unused_days=unused_days)
    with session() as run:
        report = run_audit(run, request)
    click.echo(RENDERERS[fmt](report), nl=False)
    hits = report.with_any(fail_on)
    if hits:
        found = [
            f"{finding} ({', '.join(t.name for t in hits if finding in t.findings)})"
            for finding in fail_on
            if any(finding in t.findings for t in hits)
        ]
        click.echo(
            f"audit: {plural(len(hits), 'token')} with a finding named by --fail-on: "
            + "; ".join(found),
            err=True,
        )
        sys.exit(EXIT_FINDINGS)
