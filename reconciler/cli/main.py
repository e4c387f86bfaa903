"""The command line: parses options, calls the use cases, and is the only place that prints.

Each command imports its use case inside its body (a lazy import): `--help` and `validate`
must not load the HTTP client, the state models or a store (tests/cli/test_imports.py)."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from reconciler import DISTRIBUTION
from reconciler.cli.inventory import audit, export
from reconciler.cli.options import (
    Options,
    apply_options,
    global_options,
    lock_options,
    offline_options,
    options,
    output_options,
    plan_options,
    serve_options,
    session,
    sigterm_unwinds,
    stopped_by_sigterm,
    usage_error,
    use_color,
    with_hints,
)
from reconciler.cli.state import force_unlock, import_, state
from reconciler.errors import ConfigError, ReconcilerError, install_log_redaction
from reconciler.util.text import plural

if TYPE_CHECKING:
    from reconciler.plan.model import Plan

EXIT_CHANGES = 2
# The keys of render.RENDERERS (not imported here: --help should stay fast).
FORMATS = click.Choice(["text", "markdown", "json"])
FORMAT_HELP = "text, markdown (for a pull-request comment) or JSON (format_version 1)."
GC_THRESHOLD = 200_000


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=DISTRIBUTION, prog_name="reconciler")
@global_options
def cli() -> None:
    """Converge BentoCloud API tokens to what YAML manifests declare.

    \b
    Typical use:
      reconciler validate                             # offline checks of manifests/
      reconciler plan                                 # what would change, read-only
      reconciler apply --secrets-out state/new.json   # make it so (state/ is git-ignored)
    Try it with no account: add --endpoint local (an embedded API under state/).
    """


for _command in (import_, state, force_unlock, export, audit):
    cli.add_command(_command)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text, or one JSON document (format_version 1) with every problem and warning.",
)
@offline_options
def validate(paths: tuple[str, ...], fmt: str) -> None:
    """Check manifests offline (no credentials needed)."""
    from reconciler.errors import ManifestError
    from reconciler.operations.validate import problems_document
    from reconciler.operations.validate import validate as check

    try:
        result = check(paths)
    except ManifestError as exc:
        if fmt != "json":
            raise
        _echo_json(problems_document(exc))
        sys.exit(1)
    if fmt == "json":
        _echo_json(result.to_dict())
        return
    for warning in result.warnings:
        click.echo(warning, err=True)
    click.echo(f"{plural(result.tokens, 'token')} in {plural(result.files, 'file')}: valid.")


def _echo_json(document: Mapping[str, object]) -> None:
    import json

    click.echo(json.dumps(document, indent=2))


@cli.command()
@offline_options
def schema() -> None:
    """Print the manifest JSON Schema (for editors and pre-commit)."""
    from reconciler.operations.validate import manifest_schema

    click.echo(manifest_schema(), nl=False)


def _echo_plan(
    plan: Plan,
    fmt: str,
    destinations: Mapping[str, Sequence[str]] | None = None,
    *,
    err: bool = False,
) -> None:
    from reconciler.plan.render import render

    text = render(plan, fmt, color=use_color(), destinations=destinations)
    click.echo(text, nl=not text.endswith("\n"), err=err)


def hint(command: str) -> str:
    """``reconciler COMMAND`` with the connection options this run was given (never the
    API key), so the command works when pasted."""
    return " ".join(["reconciler", *options().hint_args(), command])


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Save the plan to FILE.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help=FORMAT_HELP)
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 0 when there are no changes, 2 when there are, 1 on error.",
)
@click.option(
    "--lock",
    type=click.BOOL,
    default=True,
    show_default=True,
    help="Hold the state lock while planning (--lock=false to skip).",
)
@plan_options
@lock_options
@global_options
def plan(
    paths: tuple[str, ...],
    out: str | None,
    fmt: str,
    detailed_exitcode: bool,
    lock: bool,
    prune: bool,
    updates: str | None,
    replace: tuple[str, ...],
    lock_timeout: float,
) -> None:
    """Show what apply would change. Read-only.

    PATHS are manifest files or directories (default: manifests/).
    """
    import shlex

    from reconciler.operations.plan import (
        PlanRequest,
        make_plan,
        needs_destination,
        planned_destinations,
        save_plan,
        unsafe_reason,
    )

    request = PlanRequest(
        paths=paths,
        prune=prune,
        lock=lock,
        lock_timeout=lock_timeout,
        updates=updates,
        replace=replace,
    )
    with session() as run:
        planned = make_plan(run, request)
        where = planned_destinations(run, planned.plan)
        _echo_plan(planned.plan, fmt, where)
        _github_step_summary(planned.plan, where)
        planned.plan.check(force=True)  # conflicts fail the plan, and leave no file to apply
        if out:
            save_plan(run, planned, Path(out), prune=prune)
            # Creates need somewhere to put the new values, or the pasted command is refused.
            to = " --secrets-out new-tokens.json" if needs_destination(run, planned.plan) else ""
            command = hint(f"apply {shlex.quote(out)}{to}")
            click.echo(f"Saved the plan to {out}. Apply it with: {command}", err=True)
        reason = unsafe_reason(planned.plan)
        if reason is not None:
            click.echo(f"Warning: apply will refuse this plan without --force: {reason}", err=True)
    if detailed_exitcode and planned.plan.has_changes:
        sys.exit(EXIT_CHANGES)


def _github_step_summary(result: Plan, destinations: Mapping[str, Sequence[str]] | None) -> None:
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return
    from reconciler.plan import render

    with open(target, "a", encoding="utf-8") as handle:
        handle.write(render.render_markdown(result, destinations=destinations) + "\n")


@cli.command()
@click.argument("planfile", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help=FORMAT_HELP)
@offline_options
def show(planfile: str, fmt: str) -> None:
    """Render a saved plan."""
    from reconciler.operations.plan import read_plan

    _echo_plan(read_plan(Path(planfile)).plan, fmt)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text, or JSON: one document (format_version 1) on stdout at the end; the plan "
    "and progress go to stderr.",
)
@apply_options
@plan_options
@lock_options
@global_options
def apply(
    paths: tuple[str, ...],
    fmt: str,
    auto_approve: bool,
    secrets_out: tuple[str, ...],
    secrets_format: str | None,
    exec_timeout: float,
    discard_secrets: bool,
    parallelism: int,
    force: bool,
    threshold: float,
    prune: bool,
    updates: str | None,
    replace: tuple[str, ...],
    lock_timeout: float,
) -> None:
    """Converge live tokens to the manifests (or carry out a saved plan).

    PATHS are manifest files or directories (default: manifests/), or one saved plan
    file made by `reconciler plan --out`.
    """
    from reconciler.apply.report import apply_document, apply_report
    from reconciler.cli.progress import Progress
    from reconciler.errors import ApplyFailed
    from reconciler.operations import apply as operations

    as_json = fmt == "json"
    # With JSON, stdout holds the one document; everything for people goes to stderr.
    human = sys.stderr if as_json else sys.stdout
    progress = Progress(color=use_color(), verbose=options().verbose > 0, stream=human)

    def show(plan: Plan, where: Mapping[str, Sequence[str]]) -> None:
        _echo_plan(plan, "text", where, err=as_json)
        progress.start(len(plan.actions))

    request = operations.ApplyRequest(
        paths=paths,
        secrets_out=secrets_out,
        secrets_format=secrets_format,  # type: ignore[arg-type]  # click.Choice: json, dotenv
        discard_secrets=discard_secrets,
        on_exec_output=lambda text: click.echo(text, err=True),
        exec_timeout=exec_timeout,
        parallelism=parallelism,
        force=force,
        threshold=threshold,
        prune=prune,
        lock_timeout=lock_timeout,
        updates=updates,
        replace=replace,
    )
    with session() as run:
        outcome = operations.apply(
            run,
            request,
            show=show,
            confirm=None if auto_approve else lambda _plan: _confirm(),
            on_event=progress,
            stopping=lambda stop: _stop_on_signals(stop, err=as_json),
            warn=lambda line: click.echo(line, err=True),
        )
    progress.finish()
    if as_json:
        document = apply_document(outcome.result, outcome.destinations)
        _echo_json(document)
        if not document["ok"]:
            sys.exit(1)
        return
    if outcome.result is None:
        return
    report = apply_report(outcome.result, outcome.destinations)
    if not outcome.result.ok:
        raise ApplyFailed(report)
    click.echo(report)


def _confirm() -> None:
    if not sys.stdin.isatty():
        raise ConfigError(
            "refusing to apply without confirmation: stdin is not a terminal; review the "
            "plan and pass --auto-approve (or apply a saved plan made by `plan --out`)"
        )
    if not click.confirm("Apply these changes?", default=False):
        raise ConfigError("apply cancelled; nothing was changed")


@contextmanager
def _stop_on_signals(stop: Callable[[str], None], *, err: bool = False) -> Iterator[None]:
    """SIGINT/SIGTERM finish the calls in flight, record them, and start nothing new."""
    click.echo("Applying...", err=err)
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        click.echo(f"\n{name} received: finishing calls in flight, starting no new ones", err=True)
        stop(name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@cli.command()
@serve_options
@output_options
def serve(
    host: str,
    port: int,
    db_path: str,
    api_key: str | None,
    page_size: int,
    latency_ms: float,
    error_rate: float,
    rate_limit_rate: float,
    lost_create_rate: float,
    seed: int | None,
    allow_duplicate_names: bool,
    no_update_route: bool,
) -> None:
    """Run the local BentoCloud-compatible token API (SQLite-backed)."""
    from reconciler.server.embedded import run_server
    from reconciler.server.faults import Faults

    try:
        faults = Faults(
            latency_ms=latency_ms,
            error_rate=error_rate,
            rate_limit_rate=rate_limit_rate,
            lost_create_rate=lost_create_rate,
            seed=seed,
        )
    except ValueError as exc:
        raise ConfigError(f"serve: {exc}") from None
    with stopped_by_sigterm():
        run_server(
            host=host,
            port=port,
            db_path=Path(db_path),
            api_key=api_key,
            faults=faults,
            max_page_size=page_size,
            allow_duplicate_names=allow_duplicate_names,
            update_route=not no_update_route,
        )


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a ReconcilerError is one line on stderr and exit 1 (traceback with -vv).

    Usage errors exit 1 too: 2 means only "changes pending" (plan --detailed-exitcode) or
    "findings named by --fail-on" (audit), so a mistyped flag in CI can never pass for
    either."""
    # A run builds tens of thousands of small objects that all live until it ends (tokens,
    # specs, state): the cyclic collector would scan them again and again and find nothing,
    # a fifth of plan's CPU at 10,000 tokens. Collect far less often, as mypy does.
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    opts = Options()
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    install_log_redaction()  # log lines pass the same redaction as error messages
    try:
        with sigterm_unwinds():
            cli.main(args=argv, prog_name="reconciler", standalone_mode=False, obj=opts)
    except ReconcilerError as exc:
        if opts.verbose >= 2:
            raise
        click.echo(f"Error: {with_hints(str(exc), opts)}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()  # `reconciler` or `reconciler state` alone: help, but no command ran
        sys.exit(1)
    except click.UsageError as exc:
        args = sys.argv[1:] if argv is None else argv
        click.echo(f"Error: {usage_error(cli, exc, args)}", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
