"""reconciler.yaml, the platform team's configuration, read once per run into one Config.

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
    updates: in-place           # or replace, for an API without the update route

Precedence of the state location: --state, then $RECONCILER_STATE, then this file, then the
default path; of the update mode: --updates, $RECONCILER_UPDATES, this file, in-place.
``--secrets-out`` given on the command line replaces the ``secrets:`` list.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.defaults import UPDATES
from reconciler.destinations.parse import parse_destination
from reconciler.errors import ConfigError, DestinationSyntaxError, Problem
from reconciler.manifest.yamllines import YList, YMap, load_yaml
from reconciler.util.text import clip, plural

CONFIG_FILE_NAME = "reconciler.yaml"
ENV_STATE = "RECONCILER_STATE"
ENV_UPDATES = "RECONCILER_UPDATES"
TOP_LEVEL_KEYS = ("state", "secrets", "updates")
UPDATE_MODES = ("in-place", "replace")
# The S3 backend's option names (reconciler.state.backends.s3.OPTION_KEYS), repeated so
# that reading this file does not import the S3 backend (tests/test_config.py holds
# the two equal).
S3_OPTION_KEYS = ("region", "endpoint_url", "kms_key_id", "sse")
_S3_KEYS = ("backend", "bucket", "key", *S3_OPTION_KEYS)
_LOCAL_KEYS = ("backend", "path")


@dataclass(frozen=True)
class StateSetting:
    """A state location (a ``--state`` value) and where it was set, for ``-v`` and errors."""

    location: str
    source: str


@dataclass(frozen=True)
class SecretsSetting:
    """The ``secrets:`` list: destination texts, and the file:line it came from."""

    destinations: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class Config:
    """What reconciler.yaml says; every section None when the file or the section is absent."""

    state: StateSetting | None = None
    secrets: SecretsSetting | None = None
    updates: str | None = None


def load_config(path: Path | None = None) -> Config:
    """``path`` (default ./reconciler.yaml) parsed and checked once; an absent file is an
    empty Config. Every problem in the file is reported at once, each with its line."""
    path = Path(CONFIG_FILE_NAME) if path is None else path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    display = str(path)
    root, problems = load_yaml(text, display)
    config = Config()
    if not problems and root is not None:
        config = Config(
            state=_state_section(root, path, problems),
            secrets=_secrets_section(root, path, problems),
            updates=_updates_section(root, path, problems),
        )
    if problems:
        head = f"{plural(len(problems), 'problem')} in {display}"
        raise ConfigError(head + ":\n" + "\n".join(f"  {p}" for p in problems))
    return config


def resolve_state_location(
    flag: str | None, config: Config, *, env: Mapping[str, str] | None = None
) -> StateSetting | None:
    """The configured state location, or None for the default."""
    if flag:
        return StateSetting(flag, "--state")
    env = os.environ if env is None else env
    from_env = env.get(ENV_STATE, "").strip()
    if from_env:
        return StateSetting(from_env, f"${ENV_STATE}")
    return config.state


def resolve_updates(
    flag: str | None, config: Config, *, env: Mapping[str, str] | None = None
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
    return config.updates or UPDATES


def _updates_section(root: Any, path: Path, problems: list[Problem]) -> str | None:
    if not isinstance(root, YMap) or root.get("updates") is None:
        return None  # a file that is not a mapping is reported by the state section
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


def _secrets_section(root: Any, path: Path, problems: list[Problem]) -> SecretsSetting | None:
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
    found = len(problems)
    for index, item in enumerate(items):
        at = items.item_lines[index] if index < len(items.item_lines) else line
        if not isinstance(item, str) or not item.strip():
            problems.append(Problem(display, at, f"secrets[{index}] must be a non-empty string"))
            continue
        try:
            parse_destination(item)
        except DestinationSyntaxError as exc:
            problems.append(Problem(display, at, f"secrets[{index}]: {exc}"))
    if len(problems) > found:
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


def _unknown_key(key: str) -> str:
    close = difflib.get_close_matches(key, TOP_LEVEL_KEYS, n=1, cutoff=0.6)
    fix = f"did you mean {close[0]!r}? " if close else ""
    return (
        f"unknown key {clip(key)}: {fix}the keys are state (where state lives), secrets "
        "(where new token values go) and updates (in-place or replace)"
    )


def _state_section(root: Any, path: Path, problems: list[Problem]) -> StateSetting | None:
    display = str(path)
    if not isinstance(root, YMap):
        problems.append(Problem(display, None, "expected a mapping with a `state:` section"))
        return None
    for key in root:
        if key not in TOP_LEVEL_KEYS:
            problems.append(Problem(display, root.key_lines.get(key), _unknown_key(str(key))))
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
    from reconciler.state.backends.s3 import S3Location  # only when S3 state is configured

    options = {key: values[key] for key in S3_OPTION_KEYS if key in values}
    try:
        location = S3Location.from_options(values["bucket"], values["key"], options)
    except ConfigError as exc:
        problems.append(Problem(display, line, str(exc)))
        return None
    return StateSetting(location.to_location(), source)
