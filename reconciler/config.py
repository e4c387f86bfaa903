"""reconciler.yaml at the repository root: where state lives, so CI jobs need no long flags.

    state:                      # or: {backend: local, path: state/tokens.state.json}
      backend: s3
      bucket: my-bucket
      key: reconciler/tokens.state.json
      region: eu-west-1         # optional, like the rest below
      endpoint_url: https://s3.example.com
      kms_key_id: alias/reconciler   # SSE-KMS instead of the default SSE-S3 (AES256)
      sse: AES256               # AES256 | aws:kms | none
    secrets:                    # where new token values go (see docs/secret-stores.md)
      - vault://secret/bentocloud
      - aws-sm://bentocloud

Precedence of the state location: --state, then $RECONCILER_STATE, then this file, then the
default path. ``--secrets-out`` given on the command line replaces the ``secrets:`` list.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from reconciler.errors import ConfigError, Problem
from reconciler.manifest.yamllines import YList, YMap, load_yaml
from reconciler.state.backends.s3 import OPTION_KEYS, S3Location

T = TypeVar("T")

CONFIG_FILE_NAME = "reconciler.yaml"
ENV_STATE = "RECONCILER_STATE"

ENV_UPDATES = "RECONCILER_UPDATES"
TOP_LEVEL_KEYS = ("state", "secrets", "updates")
UPDATE_MODES = ("in-place", "replace")
_S3_KEYS = ("backend", "bucket", "key", *OPTION_KEYS)
_LOCAL_KEYS = ("backend", "path")


@dataclass(frozen=True)
class StateSetting:
    """A state location (a ``--state`` value) and where it was set, for ``-v`` and errors."""

    location: str
    source: str


def resolve_state_location(
    flag: str | None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> StateSetting | None:
    """The configured state location, or None for the default."""
    if flag:
        return StateSetting(flag, "--state")
    env = os.environ if env is None else env
    from_env = env.get(ENV_STATE, "").strip()
    if from_env:
        return StateSetting(from_env, f"${ENV_STATE}")
    path = (cwd / CONFIG_FILE_NAME) if cwd is not None else Path(CONFIG_FILE_NAME)
    return load_state_setting(path)


def resolve_updates(
    flag: str | None, *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> str:
    """How changes the update route can make are made: --updates, then
    $RECONCILER_UPDATES, then ``updates:`` in reconciler.yaml, then in-place."""
    if flag:
        return flag
    env = os.environ if env is None else env
    from_env = env.get(ENV_UPDATES, "").strip()
    if from_env:
        if from_env not in UPDATE_MODES:
            raise ConfigError(
                f"${ENV_UPDATES}={from_env!r} is not an update mode: use in-place or replace"
            )
        return from_env
    path = (cwd / CONFIG_FILE_NAME) if cwd is not None else Path(CONFIG_FILE_NAME)
    return _updates_setting(path) or "in-place"


def _updates_setting(path: Path) -> str | None:
    return _load(path, _updates_section)


def _updates_section(root: Any, path: Path, problems: list[Problem]) -> str | None:
    if not isinstance(root, YMap) or root.get("updates") is None:
        return None  # a file that is not a mapping is reported by the state setting
    value = root.get("updates")
    if value not in UPDATE_MODES:
        problems.append(
            Problem(
                str(path),
                root.key_lines.get("updates"),
                f"updates must be in-place or replace, not {value!r} (replace: for an API "
                "without the route that updates a token in place)",
            )
        )
        return None
    return str(value)


def load_state_setting(path: Path) -> StateSetting | None:
    """The ``state:`` section of ``path``; None when the file or the section is absent.
    Every problem in the file is reported at once, each with its line."""
    return _load(path, _state_section)


@dataclass(frozen=True)
class SecretsSetting:
    """The ``secrets:`` list: destination texts, and the file:line it came from."""

    destinations: tuple[str, ...]
    source: str


def load_secrets_setting(cwd: Path | None = None) -> SecretsSetting | None:
    """The ``secrets:`` list of reconciler.yaml in ``cwd``; None when absent. Each entry
    is checked by the destination parser (offline), so a typo is reported with its line."""
    path = (cwd / CONFIG_FILE_NAME) if cwd is not None else Path(CONFIG_FILE_NAME)
    return _load(path, _secrets_section)


def _load(path: Path, section: Callable[[Any, Path, list[Problem]], T]) -> T | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    display = str(path)
    root, problems = load_yaml(text, display)
    setting: T | None = None
    if not problems and root is not None:
        setting = section(root, path, problems)
    if problems:
        count = len(problems)
        head = f"{count} problem{'s' if count != 1 else ''} in {display}"
        raise ConfigError(head + ":\n" + "\n".join(f"  {p}" for p in problems))
    return setting


def _secrets_section(root: Any, path: Path, problems: list[Problem]) -> SecretsSetting | None:
    from reconciler.destinations import parse_destination
    from reconciler.errors import DestinationSyntaxError

    display = str(path)
    if not isinstance(root, YMap) or "secrets" not in root:
        return None  # the state section reports a file that is not a mapping
    line = root.key_lines.get("secrets")
    items = root.get("secrets")
    example = "secrets: [vault://secret/bentocloud]"
    if not isinstance(items, YList) or not items:
        problems.append(
            Problem(display, line, f"secrets must be a list of destinations, such as {example}")
        )
        return None
    for index, item in enumerate(items):
        at = items.item_lines[index] if index < len(items.item_lines) else line
        if not isinstance(item, str) or not item.strip():
            problems.append(Problem(display, at, f"secrets[{index}] must be a non-empty string"))
            continue
        try:
            parse_destination(item)
        except DestinationSyntaxError as exc:
            problems.append(Problem(display, at, f"secrets[{index}]: {exc}"))
    if problems:
        return None
    return SecretsSetting(tuple(str(item) for item in items), f"{display}:{line}")


def _local_setting(values: dict[str, str], path: Path, source: str) -> StateSetting | None:
    """A local state path, relative to the folder of reconciler.yaml."""
    if "path" not in values:
        return None  # the default path (or a problem already reported)
    local = Path(values["path"]).expanduser()
    if not local.is_absolute() and path.parent != Path():
        local = path.parent / local
    return StateSetting(str(local), source)


def _state_section(root: Any, path: Path, problems: list[Problem]) -> StateSetting | None:
    display = str(path)
    if not isinstance(root, YMap):
        problems.append(Problem(display, None, "expected a mapping with a `state:` section"))
        return None
    for key in root:
        if key not in TOP_LEVEL_KEYS:
            problems.append(
                Problem(
                    display,
                    root.key_lines.get(key),
                    f"unknown key {key!r} (known: state) or secrets (where new token values "
                    "go) or updates (in-place or replace)",
                )
            )
    section = root.get("state")
    line = root.key_lines.get("state")
    if section is None:
        return None
    if not isinstance(section, YMap):
        problems.append(
            Problem(display, line, "state must be a mapping with backend: s3 or backend: local")
        )
        return None

    def at(key: str) -> int | None:
        return section.key_lines.get(key, line)

    values: dict[str, str] = {}
    for key, value in section.items():
        if not isinstance(value, str) or not value.strip():
            problems.append(Problem(display, at(key), f"state.{key} must be a non-empty string"))
        else:
            values[key] = value.strip()
    backend = section.get("backend")
    if backend not in ("s3", "local"):
        problems.append(Problem(display, at("backend"), "state.backend must be s3 or local"))
        return None
    known = _S3_KEYS if backend == "s3" else _LOCAL_KEYS
    problems.extend(
        Problem(
            display,
            at(key),
            f"unknown key state.{key} for backend {backend} (known: {', '.join(known)})",
        )
        for key in section
        if key not in known
    )
    source = f"{display}:{line}"
    if backend == "local":
        return _local_setting(values, path, source)
    for required in ("bucket", "key"):
        if required not in section:
            problems.append(Problem(display, line, f"state.{required} is required for s3"))
    if problems:
        return None
    options = {key: values[key] for key in OPTION_KEYS if key in values}
    try:
        location = S3Location.from_options(values["bucket"], values["key"], options)
    except ConfigError as exc:
        problems.append(Problem(display, line, str(exc)))
        return None
    return StateSetting(location.to_location(), source)
