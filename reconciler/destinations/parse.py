"""``--secrets-out`` / ``secrets:`` / ``deliver_to:`` entries turned into destinations.

``parse_destination`` returns a Destination for ``vault://``, ``aws-sm://`` and ``exec:``
entries, and a :class:`FilePath` for anything else: the file sink (reconciler.secrets_sink)
stays the applier's, which wraps it with :class:`reconciler.destinations.file.FileDestination`.
Parsing imports neither hvac nor boto3 and talks to no store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from reconciler.destinations.aws_sm import SecretsManagerDestination
from reconciler.destinations.base import Destination
from reconciler.destinations.exec import ExecDestination
from reconciler.destinations.vault import VaultDestination
from reconciler.errors import DestinationSyntaxError

FileFormat = Literal["json", "dotenv"]
SCHEMES = ("vault://", "aws-sm://", "exec:")
# A path segment of Vault or Secrets Manager, where {name} may stand for the token name.
_SEGMENT = re.compile(r"^(?:[A-Za-z0-9_.+=@-]|\{name\})+$")
_MOUNT = re.compile(r"^[A-Za-z0-9_.-]+$")
_SCHEME_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_AWS_OPTIONS = frozenset({"kms_key_id"})


@dataclass(frozen=True)
class FilePath:
    """A file destination: the applier opens it with the existing SecretsSink."""

    path: str

    @property
    def format(self) -> FileFormat:
        """The default format, as ``--secrets-format`` decides when not given."""
        return "dotenv" if self.path.endswith(".env") else "json"

    def describe(self) -> str:
        return self.path


def parse_destination(text: str) -> Destination | FilePath:
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
        return ExecDestination(command)
    if _SCHEME_LIKE.match(text):
        raise DestinationSyntaxError(
            f"{text!r}: unknown destination; use vault://MOUNT/PATH, aws-sm://PATH, "
            "exec:COMMAND or a file path"
        )
    if not text.strip():
        raise DestinationSyntaxError("empty secrets destination; give a file path or a store URL")
    return FilePath(text)


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
    return SecretsManagerDestination(
        _segments(text, body, example), kms_key_id=options.get("kms_key_id")
    )
