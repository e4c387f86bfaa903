"""``--secrets-out`` / ``secrets:`` / ``deliver_to:`` entries turned into destinations.

Parsing talks to no store, and imports a store's module only when an entry names that
store (never hvac or boto3: their clients load when a destination is first checked).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from reconciler.errors import DestinationSyntaxError

if TYPE_CHECKING:
    from reconciler.destinations.aws_sm import SecretsManagerDestination
    from reconciler.destinations.base import Destination
    from reconciler.destinations.vault import VaultDestination

# A path segment of Vault or Secrets Manager, where {name} may stand for the token name.
_SEGMENT = re.compile(r"^(?:[A-Za-z0-9_.+=@-]|\{name\})+$")
_MOUNT = re.compile(r"^[A-Za-z0-9_.-]+$")
_SCHEME_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_AWS_OPTIONS = frozenset({"kms_key_id"})


def parse_destination(text: str) -> Destination:
    """One entry; DestinationSyntaxError names the entry and how to write it."""
    if text.startswith("vault://"):
        return _vault(text)
    if text.startswith("aws-sm://"):
        return _aws(text)
    if text.startswith("exec:"):
        command = text[len("exec:") :].strip()
        if not command:
            raise DestinationSyntaxError(
                f"{text!r}: no command after exec:; e.g. exec:'gh secret set'"
            )
        from reconciler.destinations.exec import ExecDestination

        return ExecDestination(command)
    if _SCHEME_LIKE.match(text):
        raise DestinationSyntaxError(
            f"{text!r}: unknown destination; use vault://MOUNT/PATH, aws-sm://PATH, "
            "exec:COMMAND or a file path"
        )
    if not text.strip():
        raise DestinationSyntaxError("empty secrets destination; give a file path or a store URL")
    from reconciler.destinations.file import FileDestination

    return FileDestination(text)


def _segments(text: str, path: str, example: str) -> str:
    parts = path.strip("/").split("/")
    if not path.strip("/") or not all(_SEGMENT.match(p) for p in parts):
        raise DestinationSyntaxError(
            f"{text!r}: the path must be segments of letters, digits and _.+=@- "
            f"(with {{name}} where the token name goes); e.g. {example}"
        )
    if path.count("{name}") > 1:
        raise DestinationSyntaxError(f"{text!r}: {{name}} may appear once; e.g. {example}")
    return "/".join(parts)


def _vault(text: str) -> VaultDestination:
    example = "vault://secret/bentocloud"
    parts = urlsplit(text.replace("{name}", "%7Bname%7D"))
    if parts.query or parts.fragment or "@" in parts.netloc:
        shown = f"vault://{parts.netloc.rpartition('@')[2]}{parts.path}".replace(
            "%7Bname%7D", "{name}"
        )
        raise DestinationSyntaxError(
            f"{shown!r} (shown without its query or credentials): a vault destination takes "
            "no query, fragment or credentials (set "
            f"VAULT_ADDR and VAULT_TOKEN instead); e.g. {example}"
        )
    mount = parts.netloc
    if not _MOUNT.match(mount):
        raise DestinationSyntaxError(f"{text!r}: no KV mount after vault://; e.g. {example}")
    path = parts.path.replace("%7Bname%7D", "{name}")
    if not path.strip("/"):
        raise DestinationSyntaxError(
            f"{text!r}: no path after the mount {mount!r}; e.g. {example} or "
            "vault://secret/teams/{name}/bentocloud"
        )
    from reconciler.destinations.vault import VaultDestination

    return VaultDestination(mount, _segments(text, path, example))


def _aws(text: str) -> SecretsManagerDestination:
    example = "aws-sm://bentocloud or aws-sm://prod/{name}?kms_key_id=alias/tokens"
    body, _, query = text[len("aws-sm://") :].partition("?")
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key not in _AWS_OPTIONS or not value:
            raise DestinationSyntaxError(
                f"{text!r}: unknown or empty option {key!r}; the one option is kms_key_id; "
                f"e.g. {example}"
            )
        options[key] = value
    from reconciler.destinations.aws_sm import SecretsManagerDestination

    return SecretsManagerDestination(
        _segments(text, body, example), kms_key_id=options.get("kms_key_id")
    )
