"""The FastAPI application of the local BentoCloud-compatible token API (see WIRE.md)."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from reconciler.server.faults import FaultInjector, Faults
from reconciler.server.store import Principal, Store, TokenRecord, format_db_time
from reconciler.spec import NAME_PATTERN, NAME_RULE, SCOPES

AUTH_HEADER = "X-YATAI-API-TOKEN"
MAX_BODY_BYTES = 64 * 1024
MAX_DESCRIPTION = 1024
MAX_SEARCH = 256
MAX_OFFSET = 2**62

API_TOKENS = "/api/v1/api_tokens"
AUTH_CURRENT = "/api/v1/auth/current"

# The uvicorn send callable, kept in the scope so that a "lost create" can reach the socket
# from inside Starlette's middleware stack, which wraps send in closures.
_RAW_SEND = "reconciler.raw_send"

# BentoML sends "2026-12-27 21:24:30.123456" (no zone); RFC 3339 and plain dates work too.
EXPIRED_AT_PATTERN = (
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|z|[+-]\d{2}:?\d{2})?$"
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


class CreateApiTokenRequest(BaseModel):
    """The create body; BentoML always sends all four keys, null when not given. The rules
    in the schema extras are enforced by the endpoint, with messages naming the fix."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(json_schema_extra={"pattern": NAME_PATTERN.pattern, "maxLength": 63})
    description: str | None = Field(default=None, json_schema_extra={"maxLength": MAX_DESCRIPTION})
    scopes: list[str] | None = Field(
        default=None, json_schema_extra={"items": {"type": "string", "enum": list(SCOPES)}}
    )
    expired_at: str | None = Field(
        default=None,
        description="UTC when no offset: '2026-12-27 21:24:30.123456' (BentoML) or RFC 3339",
        json_schema_extra={"pattern": EXPIRED_AT_PATTERN},
    )


class ErrorBody(WireModel):
    error: str
    message: str


class ApiProblem(Exception):
    """An error answered as JSON ``{"error", "message"}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, "message": message}, status, headers=headers)


# wire encoding


def token_to_wire(
    record: TokenRecord, now: str | None = None, *, secret: str | None = None
) -> dict[str, Any]:
    """The token object of WIRE.md section 4; ``token`` only when a secret is given.
    ``now`` is the current time as stored text (``format_db_time``), for ``is_expired``."""
    now = now or format_db_time(datetime.now(timezone.utc))
    org = record.organization
    user = record.user
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
        "user": {
            "name": user.name,
            "email": user.email,
            "first_name": user.first_name,
            "last_name": user.last_name,
        },
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
            f"expired_at {text!r} is not a datetime: use '2026-12-27 21:24:30.123456' (UTC) "
            "or RFC 3339 such as '2026-12-27T21:24:30Z'",
        ) from None


def route_key(method: str, path: str) -> str:
    """The route a request counts under in the statistics (uids folded into ``{uid}``)."""
    if path in (API_TOKENS, AUTH_CURRENT):
        return f"{method} {path}"
    prefix = API_TOKENS + "/"
    if path.startswith(prefix) and "/" not in path[len(prefix) :]:
        return f"{method} {API_TOKENS}/{{uid}}"
    return f"{method} other"


# the ASGI layer that sits outside Starlette: statistics, body limit and faults


async def _drop_connection(scope: Scope) -> bool:
    """Abort the TCP connection under this request without any HTTP response.

    Works with uvicorn (h11 and httptools), whose send is a bound method of a cycle object
    holding the transport. Marking the cycle disconnected stops uvicorn from writing or
    logging about the unfinished response. Returns False when the server is not uvicorn.
    """
    cycle = getattr(scope.get(_RAW_SEND), "__self__", None)
    transport = getattr(cycle, "transport", None)
    if cycle is None or transport is None or not hasattr(transport, "abort"):
        return False
    transport.abort()
    cycle.disconnected = True
    return True


class LocalApiApp(FastAPI):
    """FastAPI with an outer layer that counts requests, limits bodies and injects faults
    before Starlette's own middleware sees the request."""

    injector: FaultInjector
    max_body_bytes: int

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope[_RAW_SEND] = send
        path: str = scope["path"]
        is_api = path.startswith("/api/")
        if path.startswith("/_admin"):
            await super().__call__(scope, receive, send)
            return
        key = route_key(scope["method"], path)
        self.injector.count_request(key)
        trace_id = secrets.token_hex(8)
        status_seen: list[int] = []

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(int(message["status"]))
                message = dict(message)
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-trace-id", trace_id.encode()),
                ]
            await send(message)

        try:
            await self._handle(scope, receive, send_traced, key, is_api, trace_id)
        finally:
            if status_seen:
                self.injector.count_status(status_seen[0])

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        key: str,
        is_api: bool,
        trace_id: str,
    ) -> None:
        if is_api:
            latency = self.injector.latency_seconds
            if latency > 0:
                self.injector.count_fault("latency")
                await asyncio.sleep(latency)
            decision, status = self.injector.decide()
            if decision == "rate_limit":
                self.injector.count_fault("rate_limit")
                retry = str(self.injector.retry_after)
                response = error_response(
                    status, "rate limited: retry later (injected fault)", {"Retry-After": retry}
                )
                await response(scope, receive, send)
                return
            if decision == "error":
                self.injector.count_fault("error")
                response = error_response(
                    status, f"service unavailable (injected fault, trace id {trace_id})"
                )
                await response(scope, receive, send)
                return

        body = await _read_body(receive, self.max_body_bytes)
        if body is None:
            response = error_response(413, f"request body larger than {self.max_body_bytes} bytes")
            await response(scope, receive, send)
            return
        replay = _replay(body, receive)

        if key != f"POST {API_TOKENS}":
            await super().__call__(scope, replay, send)
            return

        dropping = False

        async def send_or_drop(message: Message) -> None:
            nonlocal dropping
            if dropping:
                return
            # A 200 means the row is committed; losing the answer is the fault under test.
            if (
                message["type"] == "http.response.start"
                and message["status"] == 200
                and self.injector.decide_lose_create()
            ):
                self.injector.count_fault("lost_create")
                dropping = True
                if not await _drop_connection(scope):
                    # Not under uvicorn (e.g. an in-process ASGI test client): the nearest
                    # thing to a lost answer is a 500 after the commit.
                    await error_response(500, "response lost after commit (injected fault)")(
                        scope, _no_receive, send
                    )
                return
            if message["type"] == "http.response.start" and message["status"] == 200:
                failure = self.injector.decide_error_after_create()
                if failure is not None:
                    # Committed, yet the caller is told it failed: a 5xx after the commit.
                    self.injector.count_fault("error_after_create")
                    dropping = True
                    await error_response(
                        failure,
                        f"service unavailable (injected fault after commit, trace id {trace_id})",
                    )(scope, _no_receive, send)
                    return
            await send(message)

        await super().__call__(scope, replay, send_or_drop)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when it exceeds ``limit`` (chunked bodies too)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# authentication (module level: FastAPI resolves these annotations from module globals)

_api_key_header = APIKeyHeader(name=AUTH_HEADER, auto_error=False)


async def _caller(
    request: Request, key: Annotated[str | None, Depends(_api_key_header)]
) -> Principal:
    store: Store = request.app.state.store
    found = store.authenticate(key) if key else None
    if found is None:
        what = "unknown, expired or deleted" if key else f"missing ({AUTH_HEADER} header)"
        raise ApiProblem(401, f"API key {what}")
    return found


async def _admin_caller(
    request: Request, key: Annotated[str | None, Depends(_api_key_header)]
) -> Principal:
    store: Store = request.app.state.store
    found = store.authenticate(key) if key else None
    if found is None:
        raise ApiProblem(401, "admin key missing or unknown")
    if not found.is_admin:
        raise ApiProblem(403, "this endpoint needs the admin key")
    return found


Caller = Annotated[Principal, Depends(_caller)]
AdminCaller = Annotated[Principal, Depends(_admin_caller)]


# the application


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing, unknown, expired or deleted API key"},
    429: {"model": ErrorBody, "description": "Rate limited; see Retry-After"},
    503: {"model": ErrorBody, "description": "Service unavailable; see x-trace-id"},
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Invalid request",
        404: "No such token (or it belongs to another user)",
        413: "Request body too large",
    }
    extra: dict[int | str, dict[str, Any]] = {
        s: {"model": ErrorBody, "description": descriptions[s]} for s in statuses
    }
    return {**_ERRORS, **extra}


def create_app(
    store: Store,
    faults: Faults | FaultInjector | None = None,
    *,
    max_page_size: int = 1000,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> LocalApiApp:
    """The local API over ``store``. ``faults`` may be shared (a FaultInjector) so that the
    caller can change faults and read statistics without HTTP."""
    if max_page_size < 1:
        raise ValueError("max_page_size must be at least 1")
    injector = faults if isinstance(faults, FaultInjector) else FaultInjector(faults)
    app = LocalApiApp(
        title="reconciler local BentoCloud API",
        version="1",
        description="The API-token endpoints of BentoCloud, served from SQLite.",
        docs_url=None,
        redoc_url=None,
    )
    app.injector = injector
    app.max_body_bytes = max_body_bytes
    app.state.store = store
    app.state.injector = injector

    @app.exception_handler(ApiProblem)
    async def _problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            problems.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
        return error_response(400, "invalid request: " + "; ".join(problems))

    @app.get(
        API_TOKENS,
        response_model=ApiTokenList,
        responses=_errors(400),
        summary="List the caller's API tokens, newest first",
    )
    async def list_api_tokens(
        who: Caller,
        start: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        count: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 20,
        search: Annotated[str | None, Query(max_length=MAX_SEARCH)] = None,
    ) -> JSONResponse:
        applied = min(count, max_page_size)
        records, total = store.list_tokens(who.user, start=start, count=applied, search=search)
        now = format_db_time(datetime.now(timezone.utc))
        return JSONResponse(
            {
                "start": start,
                "count": applied,
                "total": total,
                "items": [token_to_wire(r, now) for r in records],
            }
        )

    @app.post(
        API_TOKENS,
        response_model=CreatedApiToken,
        responses=_errors(400, 413),
        summary="Create an API token; the answer holds its value, shown only this once",
    )
    async def create_api_token(body: CreateApiTokenRequest, who: Caller) -> JSONResponse:
        name = body.name
        if not NAME_PATTERN.match(name):
            raise ApiProblem(400, f"invalid token name {name!r}: must be {NAME_RULE}")
        description = body.description or ""
        if len(description) > MAX_DESCRIPTION:
            raise ApiProblem(400, f"description is longer than {MAX_DESCRIPTION} characters")
        scopes: list[str] = []
        for scope in body.scopes or []:
            if scope not in SCOPES:
                raise ApiProblem(400, f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
            if scope not in scopes:
                scopes.append(scope)
        expired_at = parse_expired_at(body.expired_at) if body.expired_at else None
        record, secret = store.create_token(
            who.user, name, description=description, scopes=scopes, expired_at=expired_at
        )
        return JSONResponse(token_to_wire(record, secret=secret))

    @app.get(
        API_TOKENS + "/{uid}",
        response_model=ApiToken,
        responses=_errors(404),
        summary="Get one of the caller's API tokens (never its value)",
    )
    async def get_api_token(uid: str, who: Caller) -> JSONResponse:
        record = store.get_token(who.user, uid)
        if record is None:
            raise ApiProblem(404, f"api token {uid!r}: record not found")
        return JSONResponse(token_to_wire(record))

    @app.delete(
        API_TOKENS + "/{uid}",
        response_model=ApiToken,
        responses=_errors(404),
        summary="Delete an API token; its value stops working at once",
    )
    async def delete_api_token(uid: str, who: Caller) -> JSONResponse:
        record = store.delete_token(who.user, uid)
        if record is None:
            raise ApiProblem(404, f"api token {uid!r}: record not found")
        return JSONResponse(token_to_wire(record))

    @app.get(
        AUTH_CURRENT,
        response_model=User,
        responses=_errors(),
        summary="The user the API key belongs to",
    )
    async def current_user(who: Caller) -> JSONResponse:
        user = who.user
        return JSONResponse(
            {
                "name": user.name,
                "email": user.email,
                "first_name": user.first_name,
                "last_name": user.last_name,
            }
        )

    # admin routes: hidden from the schema, admin key only, never faulted or counted

    @app.get("/_admin/faults", include_in_schema=False)
    async def get_faults(_: AdminCaller) -> JSONResponse:
        return JSONResponse(injector.faults.to_dict())

    @app.post("/_admin/faults", include_in_schema=False)
    async def set_faults(request: Request, _: AdminCaller) -> JSONResponse:
        try:
            data = await request.json()
        except ValueError:
            raise ApiProblem(400, "body must be a JSON object of fault settings") from None
        if not isinstance(data, dict):
            raise ApiProblem(400, "body must be a JSON object of fault settings")
        base = Faults() if data.pop("reset", False) else injector.faults
        try:
            new = Faults.from_dict(data, base=base)
        except (TypeError, ValueError) as exc:
            raise ApiProblem(400, str(exc)) from None
        injector.configure(new)
        return JSONResponse(injector.faults.to_dict())

    @app.get("/_admin/stats", include_in_schema=False)
    async def get_stats(_: AdminCaller) -> JSONResponse:
        return JSONResponse(injector.stats())

    @app.post("/_admin/stats/reset", include_in_schema=False)
    async def reset_stats(_: AdminCaller) -> JSONResponse:
        injector.reset_stats()
        return JSONResponse(injector.stats())

    _install_openapi(app)
    return app


def _install_openapi(app: FastAPI) -> None:
    """Make the schema say what the server does: validation errors are 400, not 422."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        error_ref = {"$ref": "#/components/schemas/ErrorBody"}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None:
                    responses.setdefault(
                        "400",
                        {
                            "description": "Invalid request",
                            "content": {"application/json": {"schema": error_ref}},
                        },
                    )
        components = schema.get("components", {}).get("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
