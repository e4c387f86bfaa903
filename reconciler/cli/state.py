"""The commands that inspect and edit state and its lock: import, state ..., force-unlock.

Like reconciler.cli.main, each imports its use case when it runs, so `--help` stays fast."""

from __future__ import annotations

import sys

import click

from reconciler.cli.options import (
    global_options,
    lock_options,
    session,
)
from reconciler.errors import ConfigError


@click.command("import")
@click.argument("name")
@click.argument("uid")
@click.argument("paths", nargs=-1, type=click.Path())
@lock_options
@global_options
def import_(name: str, uid: str, paths: tuple[str, ...], lock_timeout: float) -> None:
    """Adopt the existing token UID into state as NAME (as declared in the manifests)."""
    from reconciler.operations.importing import import_token

    with session() as run:
        click.echo(import_token(run, name, uid, paths, lock_timeout=lock_timeout))


@click.group()
def state() -> None:
    """Inspect and edit state."""


@state.command("list")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="a table, or JSON (format_version 1): every section of state as recorded.",
)
@global_options
def state_list(fmt: str) -> None:
    """List the tokens reconciler owns."""
    from reconciler.operations.state import read_state
    from reconciler.state.render import render_state_table, state_document

    render = state_document if fmt == "json" else render_state_table
    with session() as run:
        click.echo(render(read_state(run)), nl=False)


@state.command("show")
@click.argument("name")
@global_options
def state_show(name: str) -> None:
    """Show one owned token as recorded in state."""
    from reconciler.operations.state import show_token
    from reconciler.state.render import render_owned

    with session() as run:
        click.echo(render_owned(show_token(run, name)), nl=False)


@state.command("rm")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@lock_options
@global_options
def state_rm(name: str, yes: bool, lock_timeout: float) -> None:
    """Forget NAME without deleting the live token."""
    from reconciler.operations.state import forget_token

    with session() as run:
        click.echo(
            forget_token(run, name, confirm=None if yes else _confirm, lock_timeout=lock_timeout)
        )


def _confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise ConfigError("refusing to edit state without confirmation: pass --yes")
    if not click.confirm(question, default=False):
        raise ConfigError("cancelled; state was not changed")


@state.command("pull")
@global_options
def state_pull() -> None:
    """Print the current state as JSON."""
    from reconciler.operations.state import pull_state

    with session() as run:
        click.echo(pull_state(run), nl=False)


@state.command("push")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@lock_options
@global_options
def state_push(file: str, lock_timeout: float) -> None:
    """Upload a state FILE ('-': stdin) to the configured location.

    Refuses a destination holding another lineage or a higher serial.
    """
    from reconciler.operations.state import push_state

    with session() as run:
        click.echo(push_state(run, file, lock_timeout=lock_timeout))


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
def state_migrate(destination: str, keep_source: bool, lock_timeout: float) -> None:
    """Move state to another location, keeping lineage and serial.

    Both locations are locked; a destination holding another lineage (or another
    version of this one) is refused.
    """
    from reconciler.operations.state import migrate_state

    with session() as run:
        click.echo(
            migrate_state(run, destination, keep_source=keep_source, lock_timeout=lock_timeout)
        )


@click.command("force-unlock")
@click.argument("lock_id")
@global_options
def force_unlock(lock_id: str) -> None:
    """Release a stale state lock (only if LOCK_ID matches)."""
    from reconciler.operations.state import force_unlock as release

    with session() as run:
        click.echo(release(run, lock_id))
