"""The commands that inspect and edit state and its lock: import, state ..., force-unlock."""

from __future__ import annotations

import sys

import click

from reconciler.cli.options import (
    DEFAULT_MANIFESTS,
    global_options,
    lock_options,
    lock_wait_seconds,
    options,
)
from reconciler.errors import ConfigError
from reconciler.session import Runtime


@click.command("import")
@click.argument("name")
@click.argument("uid")
@click.argument("paths", nargs=-1, type=click.Path())
@lock_options
@global_options
def import_(name: str, uid: str, paths: tuple[str, ...], lock_timeout: str) -> None:
    """Adopt the existing token UID into state as NAME (as declared in the manifests)."""
    from reconciler.operations.importing import import_token

    with (
        Runtime(options()) as runtime,
        runtime.backend.lock("import", lock_wait_seconds(lock_timeout)),
    ):
        message = import_token(runtime, name, uid, paths or DEFAULT_MANIFESTS)
    click.echo(message)


@click.group()
def state() -> None:
    """Inspect and edit state."""


@state.command("list")
@global_options
def state_list() -> None:
    """List the tokens reconciler owns."""
    from reconciler.state.backends import backend_for
    from reconciler.state.render import render_state_table

    backend = backend_for(options().state_location)
    click.echo(render_state_table(backend.read()), nl=False)


@state.command("show")
@click.argument("name")
@global_options
def state_show(name: str) -> None:
    """Show one owned token as recorded in state."""
    from reconciler.state.backends import backend_for
    from reconciler.state.render import show_owned

    backend = backend_for(options().state_location)
    click.echo(show_owned(backend.read(), name, backend.describe()), nl=False)


@state.command("rm")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@lock_options
@global_options
def state_rm(name: str, yes: bool, lock_timeout: str) -> None:
    """Forget NAME without deleting the live token."""
    from reconciler.operations.state import remove_owned
    from reconciler.state.backends import backend_for

    backend = backend_for(options().state_location)
    with backend.lock("state rm", lock_wait_seconds(lock_timeout)):
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
    from reconciler.state.backends import backend_for
    from reconciler.state.move import pull

    click.echo(pull(backend_for(options().state_location)), nl=False)


@state.command("push")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@lock_options
@global_options
def state_push(file: str, lock_timeout: str) -> None:
    """Upload a state FILE ('-': stdin) to the configured location.

    Refuses a destination holding another lineage or a higher serial.
    """
    from reconciler.state.backends import backend_for
    from reconciler.state.move import push, read_state_file

    pushed = read_state_file(file)
    backend = backend_for(options().state_location)
    with backend.lock("state push", lock_wait_seconds(lock_timeout)):
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
    from reconciler.state.backends import backend_for
    from reconciler.state.move import migrate

    timeout = lock_wait_seconds(lock_timeout)
    source = backend_for(options().state_location)
    target = backend_for(destination)
    with source.lock("state migrate", timeout), target.lock("state migrate", timeout):
        message = migrate(source, target, keep_source=keep_source)
    click.echo(message)


@click.command("force-unlock")
@click.argument("lock_id")
@global_options
def force_unlock(lock_id: str) -> None:
    """Release a stale state lock (only if LOCK_ID matches)."""
    from reconciler.state.backends import backend_for

    backend = backend_for(options().state_location)
    backend.force_unlock(lock_id)
    click.echo(f"Released lock {lock_id} on {backend.describe()}.")
