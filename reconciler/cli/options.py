"""Option plumbing shared by every command: global options, the state-lock options, and
the one-line texts of usage errors and command hints."""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from reconciler import defaults
from reconciler.session import Session, SessionSettings

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[Any], Any]


@dataclass
class Options(SessionSettings):
    """The global options: the session's settings, and how the CLI prints (settable before
    or after the subcommand name)."""

    verbose: int = 0
    color: bool | None = None

    def hint_args(self) -> list[str]:
        """The connection options this run was given, as arguments for a command a message
        suggests (so it works when pasted). Never the API key: it stays where it was."""
        args: list[str] = []
        for flag, value in (
            ("--endpoint", self.endpoint),
            ("--state", self.state),
            ("--ca-bundle", self.ca_bundle),
        ):
            if value:
                args += [flag, shlex.quote(value)]
        if self.allow_insecure_http:
            args.append("--allow-insecure-http")
        return args


def _set(attribute: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is not None and value is not False and value != 0:
            setattr(ctx.ensure_object(Options), attribute, value)

    return callback


def _connection_decorators(*, hidden: bool) -> list[Decorator]:
    """Where to connect and where state is; hidden from the help of a command that makes
    no connection (still accepted there, and ignored)."""
    return [
        click.option(
            "--endpoint",
            hidden=hidden,
            callback=_set("endpoint"),
            expose_value=False,
            metavar="URL|local",
            help="BentoCloud endpoint, or 'local' for the embedded local API. "
            "Default: $BENTO_CLOUD_API_ENDPOINT, then BentoML's current cloud context.",
        ),
        click.option(
            "--api-key",
            hidden=hidden,
            callback=_set("api_key"),
            expose_value=False,
            help="API key. Default: $BENTO_CLOUD_API_KEY, then BentoML's current context.",
        ),
        click.option(
            "--state",
            hidden=hidden,
            callback=_set("state"),
            expose_value=False,
            metavar="PATH|s3://BUCKET/KEY",
            help="State file or S3 object. Default: $RECONCILER_STATE, then the state: "
            f"section of ./reconciler.yaml, then {defaults.STATE_PATH}.",
        ),
        click.option(
            "--allow-insecure-http",
            hidden=hidden,
            is_flag=True,
            callback=_set("allow_insecure_http"),
            expose_value=False,
            help="Allow plain http:// to a non-loopback endpoint (sends the key unencrypted).",
        ),
        click.option(
            "--ca-bundle",
            hidden=hidden,
            callback=_set("ca_bundle"),
            expose_value=False,
            type=click.Path(exists=True, dir_okay=False),
            help="CA bundle to verify the endpoint's TLS certificate with.",
        ),
    ]


def _output_decorators() -> list[Decorator]:
    return [
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
    ]


def _apply(func: F, decorators: list[Decorator]) -> F:
    decorated: Any = func
    for decorator in reversed(decorators):
        decorated = decorator(decorated)
    return cast(F, decorated)


def global_options(func: F) -> F:
    """Connection, state and output options, accepted before or after the subcommand name."""
    return _apply(func, [*_connection_decorators(hidden=False), *_output_decorators()])


def offline_options(func: F) -> F:
    """The global options of a command that contacts nothing (validate, schema, show):
    accepted after its name like everywhere, the connection ones hidden from its help."""
    return _apply(func, [*_connection_decorators(hidden=True), *_output_decorators()])


def output_options(func: F) -> F:
    """--no-color and -v alone, for `serve`, whose own --api-key is the key it accepts."""
    return _apply(func, _output_decorators())


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


def session() -> Session:
    """The session of this command, on the global options."""
    return Session(options())


def use_color() -> bool:
    chosen = options().color
    if chosen is not None:
        return chosen
    return "NO_COLOR" not in os.environ and sys.stdout.isatty()


if TYPE_CHECKING:
    _DurationBase = click.ParamType[float, Any]
else:  # click before 8.2 has no subscriptable ParamType; we support 8.1
    _DurationBase = click.ParamType


class DurationType(_DurationBase):
    """A duration on the command line, shown as DURATION in --help: plain seconds (90) or
    30s, 5m, 1h30m; the value is in seconds."""

    name = "duration"

    def __init__(self, *, positive: bool = False) -> None:
        self.positive = positive

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "DURATION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, (int, float)):
            return float(value)  # a default, already in seconds
        from reconciler.util.times import parse_seconds  # only once a duration is given

        try:
            seconds = parse_seconds(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if self.positive and seconds <= 0:
            self.fail(f"{value!r} is no time at all: give a positive duration", param, ctx)
        return seconds


DURATION = DurationType()


def lock_options(func: F) -> F:
    func = click.option(
        "--lock-timeout",
        type=DURATION,
        default=defaults.LOCK_TIMEOUT,
        show_default=True,
        help="How long to wait for the state lock (e.g. 30s, 5m).",
    )(func)
    return func


def plan_options(func: F) -> F:
    func = click.option(
        "--prune", is_flag=True, help="Also delete live tokens that are not declared."
    )(func)
    func = click.option(
        "--updates",
        type=click.Choice(["in-place", "replace"]),
        default=None,
        help="How to change description, scopes or a fixed expiry: in place (default; "
        "$RECONCILER_UPDATES, `updates:` in reconciler.yaml) or by replacing the token, for "
        "an API without the update route.",
    )(func)
    func = click.option(
        "--replace",
        "replace",
        multiple=True,
        metavar="NAME",
        help="Make a new generation of this managed token now and retire the previous one "
        "at once, whatever its overlap (a leaked value). Repeatable.",
    )(func)
    return func


def _command_named(cli: click.Group, argv: list[str]) -> list[str]:
    """The command path argv names (['state', 'rm']), for errors click raises without one."""
    names: list[str] = []
    group: click.Command = cli
    for arg in argv:
        if not isinstance(group, click.Group):
            break
        sub = group.commands.get(arg)
        if sub is not None:
            names.append(arg)
            group = sub
    return names


def _single_dash_spelling(command: click.Command | None, argv: list[str]) -> tuple[str, str] | None:
    """A Terraform habit: ``-out x.plan`` for ``--out``. click reads ``-out`` as ``-o`` with
    ``ut`` after it; the argument as typed, and the long option it meant, when there is one."""
    if command is None:
        return None
    known = {opt for param in command.params for opt in getattr(param, "opts", ())}
    for arg in argv:
        name = arg.split("=", 1)[0]
        single = len(name) > 2 and name.startswith("-") and not name.startswith("--")
        if single and "-" + name in known:
            return name, "-" + name
    return None


def usage_error(cli: click.Group, exc: click.UsageError, argv: list[str]) -> str:
    """One line for a command-line mistake, with where to read the right usage."""
    names = exc.ctx.command_path.split()[1:] if exc.ctx is not None else _command_named(cli, argv)
    command = " ".join(names)
    see = " ".join(["reconciler", *names, "--help"])
    if isinstance(exc, click.NoSuchOption):
        single_dash = _single_dash_spelling(exc.ctx.command if exc.ctx else None, argv)
        if single_dash is not None:
            given, meant = single_dash
            return (
                f"no such option {given}"
                + (f" for {command}" if command else "")
                + f": options take two dashes (did you mean {meant}?); see {see}"
            )
        message = f"no such option {exc.option_name}" + (f" for {command}" if command else "")
        if exc.possibilities:
            message += f" (did you mean {', '.join(sorted(exc.possibilities))}?)"
        return f"{message}; see {see}"
    param = getattr(exc, "param", None)
    if isinstance(param, click.Option) and isinstance(param.type, click.types.BoolParamType):
        message = f"invalid value for {param.opts[0]}: use true or false"
    else:
        message = exc.format_message().rstrip(".")
        message = " ".join((message[:1].lower() + message[1:]).split())
    return f"{command + ': ' if command else ''}{message}; see {see}"


_SUGGESTED = re.compile(r"`reconciler ([^`]+)`")


def with_hints(message: str, opts: Options) -> str:
    """``message`` followed, for each command it suggests (in backticks), by that command
    with this run's connection options, so what is pasted reaches the same endpoint and
    state. The message itself is left as its module wrote it."""
    extra = opts.hint_args()
    if not extra:
        return message
    commands = dict.fromkeys(_SUGGESTED.findall(message))
    lines = [message]
    for command in commands:
        lines.append(f"  with this run's options: `{' '.join(['reconciler', *extra, command])}`")
    return "\n".join(lines)


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (a cancelled CI job, `kill`) unwinds like Ctrl-C instead of ending the
    process on the spot, so the state lock is released on the way out. apply's own handler
    takes over while changes are being made (see cli._stop_on_signals)."""
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


class _Terminated(Exception):
    """SIGTERM asked the local API to stop: a normal end, not an interruption."""


@contextmanager
def stopped_by_sigterm() -> Iterator[None]:
    """uvicorn shuts down gracefully on SIGTERM and then raises the signal again; that
    second delivery ends ``serve`` cleanly (exit 0) instead of as 'Aborted.'."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(_signum: int, _frame: FrameType | None) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    except _Terminated:
        click.echo("Stopped the local API (SIGTERM).", err=True)
    finally:
        signal.signal(signal.SIGTERM, previous)


def apply_options(func: F) -> F:
    """The options of `apply` beyond plan's: approval, destinations, pool and safety."""
    func = click.option(
        "--threshold",
        type=click.FloatRange(0, 1),
        default=defaults.THRESHOLD,
        show_default=True,
        help="Largest share of managed tokens a plan may delete or replace without --force.",
    )(func)
    func = click.option("--force", is_flag=True, help="Apply even above the safety threshold.")(
        func
    )
    func = click.option(
        "--parallelism",
        type=click.IntRange(1, 256),
        default=defaults.PARALLELISM,
        show_default=True,
        help="How many API calls to run at once.",
    )(func)
    func = click.option(
        "--discard-secrets",
        is_flag=True,
        help="Create tokens even though no one will ever see their values.",
    )(func)
    func = click.option(
        "--exec-timeout",
        type=DurationType(positive=True),
        default=defaults.EXEC_TIMEOUT_SECONDS,
        show_default=True,
        help="How long an exec: destination may run per value before it is killed.",
    )(func)
    func = click.option(
        "--secrets-format",
        type=click.Choice(["json", "dotenv"]),
        default=None,
        help="Format of --secrets-out files (default: from its extension, else json).",
    )(func)
    func = click.option(
        "--secrets-out",
        "secrets_out",
        multiple=True,
        metavar="DEST",
        help="Where every new token value goes, repeatable: a file (mode 0600), "
        "vault://MOUNT/PATH, aws-sm://PATH or exec:COMMAND (docs/secret-stores.md). "
        "Default: secrets: in reconciler.yaml.",
    )(func)
    func = click.option(
        "--auto-approve",
        is_flag=True,
        help="Apply without asking for confirmation (a saved plan never asks: it is the approval).",
    )(func)
    return func


def serve_options(func: F) -> F:
    """The options of `serve`: where it listens, its database and fault injection."""
    func = click.option(
        "--no-update-route",
        is_flag=True,
        help="Answer PATCH of a token as a server without that route does (plain-text 404).",
    )(func)
    func = click.option(
        "--allow-duplicate-names",
        is_flag=True,
        help="Let a user hold several live tokens with one name (default: unique, as Yatai).",
    )(func)
    func = click.option(
        "--seed", type=int, default=None, help="Seed for reproducible fault injection."
    )(func)
    func = click.option(
        "--lost-create-rate",
        default=0.0,
        help="Fault injection: share of creates whose answer is lost after the commit.",
    )(func)
    func = click.option(
        "--rate-limit-rate", default=0.0, help="Fault injection: share answered 429."
    )(func)
    func = click.option(
        "--error-rate", default=0.0, help="Fault injection: share of requests failing 503."
    )(func)
    func = click.option(
        "--latency-ms", default=0.0, help="Fault injection: milliseconds added to every request."
    )(func)
    func = click.option(
        "--page-size",
        default=1000,
        show_default=True,
        type=click.IntRange(1, 100000),
        help="Largest page the listing returns, whatever count a client asks for.",
    )(func)
    func = click.option(
        "--api-key", "api_key", help="Admin key to accept (default: generated once)."
    )(func)
    func = click.option(
        "--db",
        "db_path",
        default=str(Path(defaults.STATE_PATH).parent / defaults.LOCAL_DB_NAME),
        show_default=True,
        type=click.Path(dir_okay=False),
        help="SQLite database of the tokens (created on first start; its admin key beside it).",
    )(func)
    func = click.option(
        "--port",
        default=3000,
        show_default=True,
        type=click.IntRange(0, 65535),
        help="Port to listen on (0: any free port, printed at start).",
    )(func)
    func = click.option(
        "--host",
        default="127.0.0.1",
        show_default=True,
        help="Address to listen on (loopback unless you mean to share it).",
    )(func)
    return func
