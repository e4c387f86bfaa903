"""The one exception tree of reconciler; the CLI turns any of these into one line and exit 1.

    ReconcilerError                 every error a user can act on
    ├── ConfigError                 connection settings, flags, config files
    ├── ManifestError               invalid manifests (carries every problem found)
    ├── StateError                  unreadable, corrupt, foreign or newer state
    │   └── LockError               state is locked by someone else
    ├── PlanError                   conflicts, unsafe plans, stale saved plans
    ├── SecretsError                the secrets sink cannot be used
    └── ApiError                    anything that went wrong talking to the API
        ├── TransportError          connection refused, DNS, TLS, timeout
        ├── AuthenticationError     401/403: the API key is wrong or expired
        ├── NotFoundError           404 where the caller needed the object
        ├── RateLimitedError        429 after every retry
        ├── ServerError             5xx after every retry (with the trace id)
        ├── InvalidResponseError    the server answered something we cannot read
        ├── RequestRejectedError    other 4xx (bad input the server refused)
        │   └── NameTakenError      a create refused: a live token holds the name
        ├── UpdateRouteMissing      the API cannot update a token in place
        └── AmbiguousCreateError    a create whose outcome is unknown

Messages never contain a secret: the API key and token values are only ever held by the
objects that need them, never formatted into text.
"""

from __future__ import annotations

from dataclasses import dataclass


class ReconcilerError(Exception):
    """Base of every error reconciler reports to a user."""


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


def clip(value: object, limit: int = 60) -> str:
    """repr() of a value taken from user input, short enough for a one-line message.

    A 1 MB name or a 5000-digit number is shown by its start and its size, never whole
    (repr() of such an int even raises ValueError).
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<about {int(value.bit_length() * 0.30103) + 1} digits>"
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters"
    return f"{text[: limit - 1]}… ({size})"


class ManifestError(ReconcilerError):
    """One or more manifests are invalid; every problem is collected before raising."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        count = len(problems)
        head = f"{count} problem{'s' if count != 1 else ''} in manifests"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in problems))


class StateError(ReconcilerError):
    """The state file cannot be read, written, or does not belong to this endpoint."""


class LockError(StateError):
    """The state is locked by another run."""


class PlanError(ReconcilerError):
    """The plan cannot be carried out: conflicts, unsafe deletions, or a stale saved plan."""


class SecretsError(ReconcilerError):
    """New token values have nowhere safe to go."""


class ApiError(ReconcilerError):
    """Talking to the BentoCloud API failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransportError(ApiError):
    """The API could not be reached (connection refused, DNS, TLS, timeout)."""


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
