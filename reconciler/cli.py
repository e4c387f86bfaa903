"""The command line: parses options, calls the library, and is the only place that prints."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from reconciler import __version__
from reconciler.errors import ConfigError, ReconcilerError
from reconciler.runtime import Options, Runtime

if TYPE_CHECKING:
    from reconciler.applier import ApplyEvent, ApplyResult
    from reconciler.plan import Plan
    from reconciler.planfile import SavedPlan

F = TypeVar("F", bound=Callable[..., Any])
EXIT_CHANGES = 2
DEFAULT_MANIFESTS = ("manifests",)
FORMATS = click.Choice(["text", "markdown", "json"])
GC_THRESHOLD = 200_000


def _set(attribute: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is not None and value is not False and value != 0:
            setattr(ctx.ensure_object(Options), attribute, value)

    return callback


def global_options(func: F) -> F:
    """Connection and output options, accepted before or after the subcommand name."""
    decorators = [
        click.option(
            "--endpoint",
            callback=_set("endpoint"),
            expose_value=False,
            metavar="URL|local",
            help="BentoCloud endpoint, or 'local' for the embedded local API. "
            "Default: $BENTO_CLOUD_API_ENDPOINT, then BentoML's current cloud context.",
        ),
        click.option(
            "--api-key",
            callback=_set("api_key"),
            expose_value=False,
            help="API key. Default: $BENTO_CLOUD_API_KEY, then BentoML's current context.",
        ),
        click.option(
            "--state",
            callback=_set("state"),
            expose_value=False,
            metavar="PATH|s3://BUCKET/KEY",
            help="State file or S3 object. Default: $RECONCILER_STATE, then the state: "
            "section of ./reconciler.yaml, then state/tokens.state.json.",
        ),
        click.option(
            "--no-color",
            is_flag=True,
            callback=lambda ctx, _p, v: _no_color(ctx, v),
            expose_value=False,
            help="No colour in output (also: NO_COLOR, or output not a terminal).",
        ),
        click.option(
            "-v",
            "--verbose",
            count=True,
            callback=_set_verbose,
            expose_value=False,
            help="Log progress details; twice for debug and tracebacks.",
        ),
        click.option(
            "--allow-insecure-http",
            is_flag=True,
            callback=_set("allow_insecure_http"),
            expose_value=False,
            help="Allow plain http:// to a non-loopback endpoint (sends the key unencrypted).",
        ),
        click.option(
            "--ca-bundle",
            callback=_set("ca_bundle"),
            expose_value=False,
            type=click.Path(exists=True, dir_okay=False),
            help="CA bundle to verify the endpoint's TLS certificate with.",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    if value:
        opts = ctx.ensure_object(Options)
        opts.verbose = max(opts.verbose, value)
        level = logging.DEBUG if opts.verbose >= 2 else logging.INFO
        logging.getLogger("reconciler").setLevel(level)


def _no_color(ctx: click.Context, value: bool) -> None:
    if value:
        ctx.ensure_object(Options).color = False


def options() -> Options:
    return click.get_current_context().ensure_object(Options)


def use_color() -> bool:
    chosen = options().color
    if chosen is not None:
        return chosen
    return "NO_COLOR" not in os.environ and sys.stdout.isatty()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reconciler")
@global_options
def cli() -> None:
    """Converge BentoCloud API tokens to what YAML manifests declare.

    \b
    Typical use:
      reconciler validate                       # offline checks of manifests/
      reconciler plan                           # what would change, read-only
      reconciler apply --secrets-out new.json   # make it so
    Try it with no account: add --endpoint local (an embedded API under state/).
    """


# ---------------------------------------------------------------- validate / schema


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@global_options
def validate(paths: tuple[str, ...]) -> None:
    """Check manifests offline (no credentials needed)."""
    from reconciler.manifest import load_manifests

    manifests = load_manifests(paths or DEFAULT_MANIFESTS)
    count = len(manifests.tokens)
    files = len(manifests.files)
    click.echo(
        f"{count} token{'s' if count != 1 else ''} in {files} file{'s' if files != 1 else ''}: "
        "valid."
    )


@cli.command()
def schema() -> None:
    """Print the manifest JSON Schema (for editors and pre-commit)."""
    import json

    from reconciler.manifest import manifest_json_schema

    click.echo(json.dumps(manifest_json_schema(), indent=2))


# ---------------------------------------------------------------- plan / show / apply


def _render(plan: Plan, fmt: str) -> str:
    from reconciler import render

    if fmt == "json":
        return render.render_json(plan)
    if fmt == "markdown":
        return render.render_markdown(plan)
    return render.render_text(plan, color=use_color())


@contextmanager
def _maybe_lock(runtime: Runtime, operation: str, lock: bool, timeout: float) -> Iterator[None]:
    if not lock:
        yield
        return
    with runtime.backend.lock(operation, timeout):
        yield


def _duration_seconds(text: str) -> float:
    from reconciler.spec import parse_duration

    text = text.strip()
    if text in ("0", "0s"):
        return 0.0
    if text.endswith("s") and text[:-1].isdigit():
        return float(text[:-1])
    if text.endswith("m") and text[:-1].isdigit():
        return float(text[:-1]) * 60
    try:
        return parse_duration(text).total_seconds()
    except ValueError:
        raise ConfigError(
            f"--lock-timeout {text!r}: use a duration such as 0, 30s, 5m or 1h"
        ) from None


def lock_options(func: F) -> F:
    func = click.option(
        "--lock-timeout",
        default="0s",
        show_default=True,
        help="How long to wait for the state lock (e.g. 30s, 5m).",
    )(func)
    return func


def plan_options(func: F) -> F:
    func = click.option(
        "--prune", is_flag=True, help="Also delete live tokens that are not declared."
    )(func)
    return func


def _make_plan(runtime: Runtime, paths: tuple[str, ...], prune: bool) -> tuple[Plan, str, Any, Any]:
    """Load manifests (before contacting anything), then state and live tokens."""
    from reconciler.manifest import load_manifests
    from reconciler.planner import build_plan
    from reconciler.spec import utcnow

    manifests = load_manifests(paths or DEFAULT_MANIFESTS)
    state = runtime.read_state()
    live = runtime.api.list()
    plan = build_plan(manifests.tokens, live, state, now=utcnow(), prune=prune)
    return plan, manifests.digest, state, live


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Save the plan to FILE.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
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
    lock_timeout: str,
) -> None:
    """Show what apply would change. Read-only."""
    from reconciler.planfile import SavedPlan, affected_tokens, write_plan_file

    with Runtime(options()) as runtime:
        timeout = _duration_seconds(lock_timeout)
        with _maybe_lock(runtime, "plan", lock, timeout):
            result, digest, _state, live = _make_plan(runtime, paths, prune)
        text = _render(result, fmt)
        click.echo(text, nl=not text.endswith("\n"))
        _github_step_summary(result)
        result.check(force=True)  # conflicts fail the plan, and leave no plan file to apply
        if out:
            saved = SavedPlan(
                plan=result,
                endpoint=runtime.endpoint_id,
                manifest_digest=digest,
                prune=prune,
                affected=affected_tokens(result, live),
            )
            write_plan_file(Path(out), saved)
            click.echo(f"Saved the plan to {out}. Apply it with: reconciler apply {out}", err=True)
        _warn_if_unsafe(result)
    if detailed_exitcode and result.has_changes:
        sys.exit(EXIT_CHANGES)


def _warn_if_unsafe(result: Plan) -> None:
    """Say in the plan (run in pull requests) what apply's safety check would refuse, so
    the refusal does not first show up in the deploy job."""
    from reconciler.errors import PlanError

    try:
        result.check()
    except PlanError as exc:
        reason = str(exc).removeprefix("refusing to apply: ")
        click.echo(f"Warning: apply will refuse this plan without --force: {reason}", err=True)


def _github_step_summary(result: Plan) -> None:
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return
    from reconciler import render

    with open(target, "a", encoding="utf-8") as handle:
        handle.write(render.render_markdown(result) + "\n")


@cli.command()
@click.argument("planfile", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
def show(planfile: str, fmt: str) -> None:
    """Render a saved plan."""
    from reconciler.planfile import read_plan_file

    saved = read_plan_file(Path(planfile))
    text = _render(saved.plan, fmt)
    click.echo(text, nl=not text.endswith("\n"))


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--auto-approve",
    is_flag=True,
    help="Apply without asking for confirmation (a saved plan never asks: it is the approval).",
)
@click.option(
    "--secrets-out",
    type=click.Path(dir_okay=False),
    help="File that receives every new token value (mode 0600).",
)
@click.option(
    "--secrets-format",
    type=click.Choice(["json", "dotenv"]),
    default=None,
    help="Format of --secrets-out (default: from its extension, else json).",
)
@click.option(
    "--discard-secrets",
    is_flag=True,
    help="Create tokens even though no one will ever see their values.",
)
@click.option(
    "--parallelism",
    type=click.IntRange(1, 256),
    default=10,
    show_default=True,
    help="How many API calls to run at once.",
)
@click.option("--force", is_flag=True, help="Apply even above the safety threshold.")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=0.3,
    show_default=True,
    help="Largest share of managed tokens a plan may delete or replace without --force.",
)
@plan_options
@lock_options
@global_options
def apply(
    paths: tuple[str, ...],
    auto_approve: bool,
    secrets_out: str | None,
    secrets_format: str | None,
    discard_secrets: bool,
    parallelism: int,
    force: bool,
    threshold: float,
    prune: bool,
    lock_timeout: str,
) -> None:
    """Converge live tokens to the manifests (or carry out a saved plan).

    PATHS are manifest files or directories (default: manifests/), or one saved plan
    file made by `reconciler plan --out`.
    """
    from reconciler.planfile import is_plan_file, read_plan_file

    saved: SavedPlan | None = None
    if len(paths) == 1 and is_plan_file(Path(paths[0])):
        saved = read_plan_file(Path(paths[0]))
        if prune:
            raise ConfigError(
                "--prune does not apply to a saved plan: it was decided when the plan was made "
                "(`reconciler plan --prune --out FILE`)"
            )
    with Runtime(options()) as runtime:
        timeout = _duration_seconds(lock_timeout)
        with runtime.backend.lock("apply", timeout):
            if saved is not None:
                from reconciler.planfile import check_endpoint, check_fresh

                check_endpoint(saved, runtime.endpoint_id)
                state = runtime.read_state()
                live = runtime.api.list()
                check_fresh(saved, endpoint=runtime.endpoint_id, state=state, live=live)
                result = saved.plan
            else:
                result, _digest, state, _live = _make_plan(runtime, paths, prune)
            text = _render(result, "text")
            click.echo(text, nl=not text.endswith("\n"))
            result.check(threshold, force=force)
            if not result.has_changes:
                return
            _require_sink(result, secrets_out, discard_secrets)
            if not auto_approve and saved is None:  # a saved plan was approved when it was saved
                _confirm()
            sink = _open_sink(secrets_out, secrets_format)
            outcome = _run_apply(runtime, result, state, sink, parallelism)
    _report(outcome, secrets_out)


def _open_sink(secrets_out: str | None, secrets_format: str | None) -> Any:
    """Opened after confirmation but before the first create, so an unwritable sink fails
    the run while nothing exists yet."""
    from reconciler.secrets_sink import SecretsSink

    if not secrets_out:
        return None
    fmt = secrets_format or ("dotenv" if secrets_out.endswith(".env") else "json")
    return SecretsSink.open(secrets_out, fmt)  # type: ignore[arg-type]


def _require_sink(result: Plan, secrets_out: str | None, discard: bool) -> None:
    from reconciler.errors import SecretsError

    creates = sum(1 for a in result.actions if a.kind in ("create", "replace"))
    if creates and not secrets_out and not discard:
        raise SecretsError(
            f"the plan creates {creates} token{'s' if creates != 1 else ''} whose value"
            f"{'s are' if creates != 1 else ' is'} shown only once: pass --secrets-out FILE "
            "to receive them, or --discard-secrets if nobody needs them"
        )


def _confirm() -> None:
    if not sys.stdin.isatty():
        raise ConfigError(
            "refusing to apply without confirmation: stdin is not a terminal; review the "
            "plan and pass --auto-approve (or apply a saved plan made by `plan --out`)"
        )
    if not click.confirm("Apply these changes?", default=False):
        raise ConfigError("apply cancelled; nothing was changed")


def _run_apply(
    runtime: Runtime, result: Plan, state: Any, sink: Any, parallelism: int
) -> ApplyResult:
    from reconciler.applier import Applier
    from reconciler.journal import Journal

    printing = threading.Lock()
    color = use_color()

    def progress(event: ApplyEvent) -> None:
        mark = "ok" if event.status == "done" else "FAILED"
        if color:
            mark = click.style(mark, fg="green" if event.status == "done" else "red")
        with printing:
            click.echo(f"  {event.action.kind:<8} {event.action.name}: {mark} {event.detail}")

    journal = Journal(runtime.backend, state)
    applier = Applier(runtime.api, journal, sink, parallelism=parallelism, on_event=progress)
    click.echo("Applying...")
    with _stop_on_signals(applier.request_stop):
        return applier.run(result)


@contextmanager
def _stop_on_signals(stop: Callable[[str], None]) -> Iterator[None]:
    """SIGINT/SIGTERM finish the calls in flight, record them, and start nothing new."""
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


def _report(outcome: ApplyResult, secrets_out: str | None) -> None:
    counts: dict[str, int] = {}
    for event in outcome.done:
        counts[event.action.kind] = counts.get(event.action.kind, 0) + 1
    words = {
        "create": "created",
        "replace": "replaced",
        "delete": "deleted",
        "adopt": "adopted",
        "forget": "forgotten",
    }
    done = ", ".join(f"{n} {words[k]}" for k, n in counts.items()) or "nothing done"
    if outcome.ok:
        click.echo(f"Apply complete: {done}.")
        if secrets_out and (counts.get("create") or counts.get("replace")):
            click.echo(f"New token values are in {secrets_out}.")
        return
    lines = [f"Apply stopped: {done}."]
    if outcome.interrupted:
        lines.append(f"Interrupted by {outcome.interrupted}.")
    for event in outcome.failed:
        lines.append(f"  failed: {event.action.kind} {event.action.name}: {event.detail}")
    if outcome.not_started:
        names = ", ".join(f"{a.kind} {a.name}" for a in outcome.not_started[:10])
        more = len(outcome.not_started) - 10
        lines.append(
            f"  not started ({len(outcome.not_started)}): {names}"
            + (f" and {more} more" if more > 0 else "")
        )
    lines.append("State records everything that was done; run apply again to converge.")
    raise ApplyFailed("\n".join(lines))


class ApplyFailed(ReconcilerError):
    """Some actions failed or were not started; the summary is the message."""


# ---------------------------------------------------------------- state and locks


@cli.command("import")
@click.argument("name")
@click.argument("uid")
@click.argument("paths", nargs=-1, type=click.Path())
@lock_options
@global_options
def import_(name: str, uid: str, paths: tuple[str, ...], lock_timeout: str) -> None:
    """Adopt the existing token UID into state as NAME (as declared in the manifests)."""
    from reconciler.importer import import_token

    with (
        Runtime(options()) as runtime,
        runtime.backend.lock("import", _duration_seconds(lock_timeout)),
    ):
        message = import_token(runtime, name, uid, paths or DEFAULT_MANIFESTS)
    click.echo(message)


@cli.group()
def state() -> None:
    """Inspect and edit state."""


@state.command("list")
@global_options
def state_list() -> None:
    """List the tokens reconciler owns."""
    from reconciler.backends import backend_for
    from reconciler.statecmd import render_state_table

    backend = backend_for(options().state_location)
    click.echo(render_state_table(backend.read()), nl=False)


@state.command("show")
@click.argument("name")
@global_options
def state_show(name: str) -> None:
    """Show one owned token as recorded in state."""
    from reconciler.backends import backend_for
    from reconciler.statecmd import show_owned

    backend = backend_for(options().state_location)
    click.echo(show_owned(backend.read(), name, backend.describe()), nl=False)


@state.command("rm")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@lock_options
@global_options
def state_rm(name: str, yes: bool, lock_timeout: str) -> None:
    """Forget NAME without deleting the live token."""
    from reconciler.backends import backend_for
    from reconciler.statecmd import remove_owned

    backend = backend_for(options().state_location)
    with backend.lock("state rm", _duration_seconds(lock_timeout)):
        current = backend.read()
        if not yes:
            if not sys.stdin.isatty():
                raise ConfigError("refusing to edit state without confirmation: pass --yes")
            if not click.confirm(f"Forget {name} (the live token stays)?", default=False):
                raise ConfigError("cancelled; state was not changed")
        click.echo(remove_owned(backend, current, name))


@state.command("pull")
@global_options
def state_pull() -> None:
    """Print the current state as JSON."""
    from reconciler.backends import backend_for
    from reconciler.statemove import pull

    click.echo(pull(backend_for(options().state_location)), nl=False)


@state.command("push")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@lock_options
@global_options
def state_push(file: str, lock_timeout: str) -> None:
    """Upload a state FILE ('-': stdin) to the configured location.

    Refuses a destination holding another lineage or a higher serial.
    """
    from reconciler.backends import backend_for
    from reconciler.statemove import push, read_state_file

    pushed = read_state_file(file)
    backend = backend_for(options().state_location)
    with backend.lock("state push", _duration_seconds(lock_timeout)):
        message = push(backend, pushed, "stdin" if file == "-" else file)
    click.echo(message)


@state.command("migrate")
@click.option(
    "--to",
    "destination",
    required=True,
    metavar="PATH|s3://BUCKET/KEY",
    help="Where state should live from now on.",
)
@click.option(
    "--keep-source",
    is_flag=True,
    help="Leave the old state in place (default: moved aside to <old>.migrated).",
)
@lock_options
@global_options
def state_migrate(destination: str, keep_source: bool, lock_timeout: str) -> None:
    """Move state to another location, keeping lineage and serial.

    Both locations are locked; a destination holding another lineage (or another
    version of this one) is refused.
    """
    from reconciler.backends import backend_for
    from reconciler.statemove import migrate

    timeout = _duration_seconds(lock_timeout)
    source = backend_for(options().state_location)
    target = backend_for(destination)
    with source.lock("state migrate", timeout), target.lock("state migrate", timeout):
        message = migrate(source, target, keep_source=keep_source)
    click.echo(message)


@cli.command("force-unlock")
@click.argument("lock_id")
@global_options
def force_unlock(lock_id: str) -> None:
    """Release a stale state lock (only if LOCK_ID matches)."""
    from reconciler.backends import backend_for

    backend = backend_for(options().state_location)
    backend.force_unlock(lock_id)
    click.echo(f"Released lock {lock_id} on {backend.describe()}.")


# ---------------------------------------------------------------- local API


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--db",
    "db_path",
    default=str(Path("state") / "local-api.sqlite3"),
    show_default=True,
    type=click.Path(dir_okay=False),
)
@click.option("--api-key", "api_key", help="Admin key to accept (default: generated once).")
@click.option("--page-size", default=1000, show_default=True, type=click.IntRange(1, 100000))
@click.option("--latency-ms", default=0.0, help="Fault injection: added latency per request.")
@click.option("--error-rate", default=0.0, help="Fault injection: share of requests failing 503.")
@click.option("--rate-limit-rate", default=0.0, help="Fault injection: share answered 429.")
@click.option(
    "--lost-create-rate",
    default=0.0,
    help="Fault injection: share of creates whose response is lost after the token was committed.",
)
@click.option("--seed", type=int, default=None, help="Seed for reproducible fault injection.")
@click.option(
    "--allow-duplicate-names",
    is_flag=True,
    help="Let a user hold several live tokens with one name (default: unique, as Yatai).",
)
@click.option(
    "--no-update-route",
    is_flag=True,
    help="Answer PATCH of a token as a server without that route does (plain-text 404).",
)
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


# ---------------------------------------------------------------- entry point


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (a cancelled CI job, `kill`) unwinds like Ctrl-C instead of ending the
    process on the spot, so the state lock is released on the way out. apply's own handler
    takes over while changes are being made (see _stop_on_signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        # None: the previous handler was not installed from Python; leave ours then.
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a ReconcilerError is one line on stderr and exit 1 (traceback with -vv)."""
    # A run builds tens of thousands of small objects that all live until it ends (tokens,
    # specs, state): the cyclic collector would scan them again and again and find nothing,
    # a fifth of plan's CPU at 10,000 tokens. Collect far less often, as mypy does.
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    opts = Options()
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    try:
        with _sigterm_unwinds():
            cli.main(args=argv, prog_name="reconciler", standalone_mode=False, obj=opts)
    except ReconcilerError as exc:
        if opts.verbose >= 2:
            raise
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
