"""Every option of every command says what it does, and every duration reads the same."""

from __future__ import annotations

import click
import pytest

from reconciler.cli.main import cli


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, f"{prefix}{name} "))
    return found


COMMANDS = _commands(cli)


def test_the_walk_covers_every_command() -> None:
    names = [name for name, _ in COMMANDS]
    assert {"plan", "apply", "serve", "state list", "validate"} <= set(names)


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_option_has_a_description(name: str, command: click.Command) -> None:
    silent = [
        "/".join(param.opts)
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and not param.help
    ]
    assert silent == [], f"reconciler {name}: options without help: {silent}"


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_durations_are_shown_as_duration(name: str, command: click.Command) -> None:
    ctx = click.Context(command, info_name=name)
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        if any(opt.endswith(("timeout", "-wait")) for opt in param.opts):
            record = param.get_help_record(ctx)
            assert record is not None
            assert "DURATION" in record[0], f"reconciler {name} {record[0]}"
