"""The one exception tree of reconciler; the CLI turns any of these into one line and exit 1.

    ReconcilerError                 every error a user can act on
    ├── ConfigError                 connection settings, flags, config files
    ├── ManifestError               invalid manifests (carries every problem found)
    ├── StateError                  unreadable, corrupt, foreign or newer state
    │   └── LockError               state is locked by someone else
    ├── PlanError                   conflicts, stale saved plans
    │   └── UnsafePlanError         above the safety threshold (--force overrides)
    ├── ApplyFailed                 some actions failed or were not started
    ├── SecretsError                new values have nowhere safe to go
    │   ├── DestinationSyntaxError  a destination entry cannot be understood
    │   └── DestinationError        a destination refused or cannot be reached
    │       ├── DestinationCheckError   its check before the first create failed
    │       ├── DeliveryFailedError     a write was refused or not confirmed
    │       ├── UndoFailedError         a store could not be put back
    │       └── DeliveryAbortedError    a delivery failed; the others were put back
    └── ApiError                    anything that went wrong talking to the API
        ├── TransportError          the connection failed (reset, protocol error)
        │   ├── ConnectError        nothing reached the server: refused, DNS, TLS
        │   └── RequestTimeout      the server did not answer in time
        ├── AuthenticationError     401/403: the API key is wrong or expired
        ├── NotFoundError           404 where the caller needed the object
        ├── RateLimitedError        429 after every retry
        ├── ServerError             5xx after every retry (with the trace id)
        ├── InvalidResponseError    the server answered something we cannot read
        ├── RequestRejectedError    other 4xx (bad input the server refused)
        │   └── NameTakenError      a create refused: a live token holds the name
        ├── UpdateRouteMissing      the API cannot update a token in place
        ├── AmbiguousCreateError    a create whose outcome is unknown
        └── ProofFailed             a new value was not accepted at /auth/current

Messages never contain a secret: the API key and token values are only ever held by the
objects that need them, never formatted into text. As a second line of defence, every
configured secret (``register_secret``, and credentials in the environment) is blanked out
of every error's text by ``redact``, the one boundary text passes on its way to a user:
``str()`` of any ReconcilerError, and log records (``install_log_redaction``). Text a
server sends back is redacted before it is shortened (``excerpt``), so a cut cannot leave
the start of a key behind.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from reconciler.util.text import plain, plural, shorten

# Credentials other tools read from the environment: blanked out wherever they appear.
SECRET_ENV_VARS = (
    "BENTO_CLOUD_API_KEY",
    "VAULT_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
)
# Shorter values are not credentials, and blanking them would garble ordinary words. The
# environment is held to more: a variable there may hold a placeholder ("testing").
MIN_SECRET_LENGTH = 6
MIN_ENV_SECRET_LENGTH = 12

REDACTED = "***"

_registry_lock = threading.Lock()
_registered: dict[str, str] = {}


def register_secret(value: str | None, label: str) -> None:
    """Blank ``value`` out of every message from now on, shown as ``[label]``.

    A value with surrounding whitespace (a pasted secret) is registered without it too, so
    an echo of either form is caught.
    """
    if not value:
        return
    with _registry_lock:
        for form in (value, value.strip()):
            if len(form) >= MIN_SECRET_LENGTH:
                _registered.setdefault(form, label)


def _secrets() -> list[tuple[str, str]]:
    with _registry_lock:
        found = dict(_registered)
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name, "").strip()
        if len(value) >= MIN_ENV_SECRET_LENGTH:
            found.setdefault(value, name)
    # Longest first: a secret containing another is blanked whole.
    return sorted(found.items(), key=lambda item: len(item[0]), reverse=True)


def redact(text: str, also: Iterable[str | None] = ()) -> str:
    """``text`` with every configured secret replaced by its label (``[API key]``) and
    every value of ``also`` (a token value, a store's credential) by ``***``; longest
    first, so a secret that contains another is blanked whole."""
    secrets = [(value, f"[{label}]") for value, label in _secrets()]
    secrets += [(value, REDACTED) for value in also if value]
    for value, label in sorted(secrets, key=lambda item: len(item[0]), reverse=True):
        if value in text:
            text = text.replace(value, label)
    return text


def excerpt(text: str, limit: int = 200) -> str:
    """Text from outside (a server's message, a header) made fit for a one-line message:
    redacted first, so a cut cannot leave the start of a secret, then shortened."""
    return shorten(plain(redact(text)), limit)


class _RedactingFormatter(logging.Formatter):
    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self._inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return redact(self._inner.format(record))


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Make every handler of ``logger`` (default: the root logger) redact what it writes,
    tracebacks included."""
    for handler in (logger or logging.getLogger()).handlers:
        if not isinstance(handler.formatter, _RedactingFormatter):
            handler.setFormatter(_RedactingFormatter(handler.formatter))


class ReconcilerError(Exception):
    """Base of every error reconciler reports to a user; its text is always redacted."""

    def __str__(self) -> str:
        return redact(super().__str__())


class ConfigError(ReconcilerError):
    """Connection settings or command-line options are missing or contradictory."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest: where it is, what is wrong, and how to fix it."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class ManifestError(ReconcilerError):
    """One or more manifests are invalid; every problem is collected before raising."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        count = len(problems)
        head = f"{plural(count, 'problem')} in manifests"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in problems))


class StateError(ReconcilerError):
    """The state file cannot be read, written, or does not belong to this endpoint."""


class LockError(StateError):
    """The state is locked by another run."""


class PlanError(ReconcilerError):
    """The plan cannot be carried out: conflicts, unsafe deletions, or a stale saved plan."""


class UnsafePlanError(PlanError):
    """The plan deletes or replaces more than is safe; ``reason`` says what, for a warning
    at plan time as well as the refusal at apply time."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"refusing to apply: {reason}")
        self.reason = reason


class ApplyFailed(ReconcilerError):
    """Some actions failed or were not started; the summary is the message."""


class SecretsError(ReconcilerError):
    """New token values have nowhere safe to go."""


class DestinationError(SecretsError):
    """A destination refused or could not be reached; names it and the store's reason.

    ``destination`` is the describe() text, ``reason`` the store's answer with every
    credential and value already removed.
    """

    def __init__(self, destination: str, reason: str, *, hint: str | None = None) -> None:
        self.destination = destination
        self.reason = reason
        self.hint = hint
        text = f"{destination}: {reason}"
        super().__init__(f"{text}; {hint}" if hint else text)


class DestinationCheckError(DestinationError):
    """The pre-flight check failed: nothing was created or written."""


class DeliveryFailedError(DestinationError):
    """A write was refused or not confirmed by the store."""


class UndoFailedError(DestinationError):
    """A store could not be put back after another destination failed."""


class DestinationSyntaxError(SecretsError):
    """A ``--secrets-out`` / ``secrets:`` / ``deliver_to:`` entry cannot be understood."""


class DeliveryAbortedError(DestinationError):
    """A delivery failed; the destinations that took the value were put back where they
    could be. ``undone`` and ``kept`` list describe() texts; ``undo_failures`` the
    errors of stores that could not be put back."""

    def __init__(
        self,
        failure: DestinationError,
        *,
        undone: list[str],
        kept: list[str],
        undo_failures: list[DestinationError],
    ) -> None:
        self.failure = failure
        self.undone = undone
        self.kept = kept
        self.undo_failures = undo_failures
        notes = []
        if undone:
            notes.append(f"put back: {', '.join(undone)}")
        if kept:
            notes.append(f"already ran and cannot be undone: {', '.join(kept)}")
        notes.extend(f"could not be put back: {e}" for e in undo_failures)
        super().__init__(
            failure.destination,
            failure.reason,
            hint="; ".join(filter(None, [failure.hint, *notes])) or None,
        )


class ApiError(ReconcilerError):
    """Talking to the BentoCloud API failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransportError(ApiError):
    """The connection to the API failed (refused, DNS, TLS, timeout, dropped)."""


class ConnectError(TransportError):
    """No connection was made (refused, DNS, TLS): the request never reached the server."""


class RequestTimeout(TransportError):
    """The server did not answer in time: the request may have been acted on."""


class AuthenticationError(ApiError):
    """The API key was refused."""


class NotFoundError(ApiError):
    """The object does not exist (or belongs to another user)."""


class RateLimitedError(ApiError):
    """The API kept answering 429 after every retry."""


class ServerError(ApiError):
    """The API kept failing with 5xx after every retry."""

    def __init__(self, message: str, *, status: int | None = None, trace_id: str | None = None):
        super().__init__(message, status=status)
        self.trace_id = trace_id


class InvalidResponseError(ApiError):
    """The API answered with a body reconciler cannot understand."""


class RequestRejectedError(ApiError):
    """The API refused the request as invalid (a 4xx other than 401/403/404/429)."""


class NameTakenError(RequestRejectedError):
    """A create was refused because a live token of the caller already has the name
    (Yatai's unique index on organisation, user and name)."""

    def __init__(self, message: str, *, name: str, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.name = name


class UpdateRouteMissing(ApiError):
    """The API has no route to update a token in place (PATCH answered as an unknown
    route): such changes must be made by replacing the token."""


class AmbiguousCreateError(ApiError):
    """A create was sent but its answer was lost: the token may or may not exist now."""

    def __init__(self, message: str, *, name: str, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.name = name


class ProofFailed(ApiError):
    """A new token's value was not accepted at /auth/current: its predecessor is kept."""
