"""What the local API says on the wire: the models of its schema, the token object, Yatai's
error body, and the checks every value from a request goes through (docs/wire-format.md)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from reconciler.manifest.spec import MAX_DESCRIPTION, NAME_PATTERN, NAME_RULE, SCOPES
from reconciler.server.store import (
    UNIQUE_NAME_INDEX,
    Principal,
    TokenRecord,
    UserRecord,
    format_db_time,
)
from reconciler.util.text import clip

# BentoML sends "2026-12-27 21:24:30.123456" (no zone); RFC 3339 and plain dates work too.
EXPIRED_AT_PATTERN = (
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|z|[+-]\d{2}:?\d{2})?$"
)
# A request value quoted in an error is cut to this many characters: a 100,000-character
# uid must not come back as a 200 KB answer.
ECHO_LIMIT = 80
# Yatai's error for a second live token with a name (its gorm error, wrapped by the
# controller), so that clients can be tested against the exact text.
DUPLICATE_NAME_ERROR = (
    "create apiToken: ERROR: duplicate key value violates unique constraint "
    f'"{UNIQUE_NAME_INDEX}" (SQLSTATE 23505)'
)


# wire models: they document the API (OpenAPI) and tests validate responses against them


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Label(WireModel):
    key: str
    value: str


class User(WireModel):
    name: str
    email: str
    first_name: str
    last_name: str


class Organization(WireModel):
    uid: str
    created_at: datetime
    updated_at: datetime | None
    deleted_at: datetime | None
    name: str
    resource_type: Literal["organization"]
    labels: list[Label]
    description: str


class ApiToken(WireModel):
    uid: str
    created_at: datetime
    updated_at: datetime | None
    deleted_at: datetime | None
    name: str
    resource_type: Literal["api_token"]
    labels: list[Label]
    description: str
    scopes: list[str]
    user: User
    organization: Organization
    expired_at: datetime | None
    last_used_at: datetime | None
    is_expired: bool
    is_api_token: bool
    is_organization_token: bool
    is_global_access: bool


class CreatedApiToken(ApiToken):
    token: str = Field(description="The secret value; returned only by create, never again.")


class ApiTokenList(WireModel):
    start: int
    count: int
    total: int
    items: list[ApiToken]


_SCOPE_ITEMS: dict[str, Any] = {"items": {"type": "string", "enum": list(SCOPES)}}
_EXPIRED_AT_TEXT = "UTC when no offset: '2026-12-27 21:24:30.123456' (BentoML) or RFC 3339"


class CreateApiTokenRequest(BaseModel):
    """The create body; BentoML always sends all four keys, null when not given. The rules
    in the schema extras are enforced by the endpoint, with messages naming the fix."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(json_schema_extra={"pattern": NAME_PATTERN.pattern, "maxLength": 63})
    description: str | None = Field(default=None, json_schema_extra={"maxLength": MAX_DESCRIPTION})
    scopes: list[str] | None = Field(default=None, json_schema_extra=_SCOPE_ITEMS)
    expired_at: str | None = Field(
        default=None,
        description=_EXPIRED_AT_TEXT,
        json_schema_extra={"pattern": EXPIRED_AT_PATTERN},
    )


class UpdateApiTokenRequest(BaseModel):
    """Yatai's ``UpdateApiTokenSchema``: null or absent leaves a field as it is, so an
    expiry can be moved but never cleared; ``last_used_at`` is accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    description: str | None = Field(default=None, json_schema_extra={"maxLength": MAX_DESCRIPTION})
    scopes: list[str] | None = Field(default=None, json_schema_extra=_SCOPE_ITEMS)
    expired_at: str | None = Field(
        default=None,
        description=_EXPIRED_AT_TEXT + "; null or absent = unchanged",
        json_schema_extra={"pattern": EXPIRED_AT_PATTERN},
    )
    last_used_at: str | None = Field(default=None, description="Accepted and ignored.")


class ErrorBody(WireModel):
    """Yatai's error hook answers every error with this one key."""

    error: str


class ApiProblem(Exception):
    """An error answered as Yatai's JSON ``{"error": ...}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers=headers)


def not_found(uid: str) -> ApiProblem:
    # gorm's text: clients (BentoML's get) look for "record not found".
    return ApiProblem(404, f"get apiToken {clip(uid, ECHO_LIMIT)}: record not found")


# checks of request values; each raises ApiProblem(400) naming the fix


def check_name(name: str) -> str:
    # fullmatch: with match(), "$" would accept a name followed by a newline.
    if not NAME_PATTERN.fullmatch(name):
        raise ApiProblem(400, f"invalid token name {clip(name, ECHO_LIMIT)}: must be {NAME_RULE}")
    return name


def check_text(field: str, text: str) -> str:
    """Text that SQLite and JSON can carry: a lone surrogate (JSON's "\\ud800") cannot be
    encoded as UTF-8 and would otherwise fail deep inside with a 500."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiProblem(
            400, f"{field} is not valid Unicode text (it holds a lone surrogate)"
        ) from None
    return text


def check_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION:
        raise ApiProblem(400, f"description is longer than {MAX_DESCRIPTION} characters")
    return check_text("description", description)


def check_scopes(requested: list[str], who: Principal) -> list[str]:
    """Known scopes, duplicates dropped, each one the caller holds: no token can mint or
    widen a token beyond its own rights."""
    scopes: list[str] = []
    for scope in requested:
        if scope not in SCOPES:
            raise ApiProblem(
                400, f"unknown scope {clip(scope, ECHO_LIMIT)}: use one of {', '.join(SCOPES)}"
            )
        if not who.holds(scope):
            raise ApiProblem(403, f"the api_token cannot grant the scope {scope} it lacks")
        if scope not in scopes:
            scopes.append(scope)
    return scopes


def parse_expired_at(text: str) -> datetime:
    """Read an expiry as BentoML or an RFC 3339 client sends it; naive means UTC."""
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            return moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise ApiProblem(
            400,
            f"expired_at {clip(text, ECHO_LIMIT)} is not a datetime: use "
            "'2026-12-27 21:24:30.123456' (UTC) or RFC 3339 such as '2026-12-27T21:24:30Z'",
        ) from None


# wire encoding


def user_to_wire(user: UserRecord) -> dict[str, Any]:
    return {
        "name": user.name,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
    }


def token_to_wire(
    record: TokenRecord, now: str | None = None, *, secret: str | None = None
) -> dict[str, Any]:
    """The token object of docs/wire-format.md section 4; ``token`` only when a secret is given.
    ``now`` is the current time as stored text (``format_db_time``), for ``is_expired``."""
    now = now or format_db_time(datetime.now(timezone.utc))
    org = record.organization
    data: dict[str, Any] = {
        "uid": record.uid,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "deleted_at": record.deleted_at,
        "name": record.name,
        "resource_type": "api_token",
        "labels": [],
        "description": record.description,
        "scopes": list(record.scopes),
        "user": user_to_wire(record.user),
        "organization": {
            "uid": org.uid,
            "created_at": org.created_at,
            "updated_at": org.updated_at,
            "deleted_at": None,
            "name": org.name,
            "resource_type": "organization",
            "labels": [],
            "description": org.description,
        },
        "expired_at": record.expired_at,
        "last_used_at": record.last_used_at,
        "is_expired": record.expired_at is not None and record.expired_at <= now,
        "is_api_token": True,
        "is_organization_token": False,
        "is_global_access": False,
    }
    if secret is not None:
        data["token"] = secret
    return data
