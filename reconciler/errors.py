"""The one exception tree of reconciler; the CLI turns any of these into one line and exit 1.

    ReconcilerError                 every error a user can act on
    ├── ConfigError                 connection settings, flags, config files
    ├── ManifestError               invalid manifests (carries every problem found)
    ├── StateError                  unreadable, corrupt, foreign or newer state
    │   └── LockError               state is locked by someone else
    ├── PlanError                   conflicts, stale saved plans
    │   └── UnsafePlanError         above the safety threshold (--force overrides)
    ├── ApplyFailed                 some actions failed or were not started
    ├── SecretsError                the secrets sink cannot be used
    └── ApiError                    anything that went wrong talking to the API
        ├── TransportError          connection refused, DNS, TLS, timeout
        ├── AuthenticationError     401/403: the API key is wrong or expired
        ├── NotFoundError           404 where the caller needed the object
        ├── RateLimitedError        429 after every retry
        ├── ServerError             5xx after every retry (with the trace id)
        ├── InvalidResponseError    the server answered something we cannot read
        ├── RequestRejectedError    other 4xx (bad input the server refused)
        └── AmbiguousCreateError    a create whose outcome is unknown

Messages never contain a secret: the API key and token values are only ever held by the
objects that need them, never formatted into text.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.text import clip, plural

__all__ = ["clip"]  # re-exported: error messages quote user values with it


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


class AmbiguousCreateError(ApiError):
    """A create was sent but its answer was lost: the token may or may not exist now."""

    def __init__(self, message: str, *, name: str, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.name = name
