"""BentoCloud's API-token endpoints: ApiTokenAPI over the REST transport (docs/wire-format.md)."""

from __future__ import annotations

import builtins
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from reconciler.api.http import RestClient
from reconciler.api.token import ApiToken
from reconciler.errors import (
    AmbiguousCreateError,
    ConnectError,
    InvalidResponseError,
    NameTakenError,
    NotFoundError,
    RequestRejectedError,
    ServerError,
    TransportError,
    UpdateRouteMissing,
)

__all__ = ["ApiToken", "ApiTokenAPI", "RestClient", "wire_datetime"]

TOKENS_PATH = "/api/v1/api_tokens"
DEFAULT_PAGE_SIZE = 1000
# A listing that keeps moving under us (tokens created or deleted between pages) is read
# again; after this many tries we give up rather than plan on an inconsistent picture.
LIST_ATTEMPTS = 3
# Pages after the first are fetched this many at a time.
LIST_CONCURRENCY = 8

Page = list[ApiToken]


class _Listing(BaseModel):
    """A page of the listing, for the fast path of ApiTokenAPI._page: no more lenient
    than its checks (an object with an 'items' list and a non-negative integer 'total')."""

    model_config = ConfigDict(extra="ignore")

    items: list[ApiToken]
    total: StrictInt = Field(ge=0)


def wire_datetime(moment: datetime) -> str:
    """BentoML's create format: naive UTC, space separator, six fractional digits."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


class ApiTokenAPI:
    """list / create / get / delete of the calling user's API tokens."""

    def __init__(self, client: RestClient, *, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self.client = client
        self.page_size = page_size

    def list(self, search: str | None = None) -> builtins.list[ApiToken]:
        """Every token visible to the key, following every page.

        The server may return fewer items than asked for; paging follows ``total``. A
        listing whose total moved while paging is taken again, so the planner never
        works from a picture that misses a token.
        """
        for _ in range(LIST_ATTEMPTS):
            tokens, consistent = self._list_once(search)
            if consistent:
                return tokens
        raise InvalidResponseError(
            f"list tokens: the listing on {self.client.endpoint} kept changing while being "
            f"read ({LIST_ATTEMPTS} tries); retry when no other job is changing tokens"
        )

    def _list_once(self, search: str | None) -> tuple[builtins.list[ApiToken], bool]:
        """One reading of every page, and whether it is consistent."""
        items, total = self._page(0, search)
        pages = [items]
        served = len(items)
        if served and served < total and not self._read_ahead(served, total, search, pages):
            return [], False
        by_uid: dict[str, ApiToken] = {}
        for page in pages:
            for token in page:
                by_uid[token.uid] = token
        return list(by_uid.values()), len(by_uid) == total

    def _read_ahead(
        self, served: int, total: int, search: str | None, pages: builtins.list[Page]
    ) -> bool:
        """Read the pages after the first into ``pages``; False when the listing moved.

        The first answer told the total and how many tokens the server serves per page, so
        the following pages are asked for ahead, up to LIST_CONCURRENCY at once, instead
        of one round trip after another. Answers are taken in order: an empty page or a
        moved total stops the reading as it would when paging one by one, and a page
        shorter than the first (a server that pages unevenly) has its gap read page by page.
        """
        with ThreadPoolExecutor(LIST_CONCURRENCY, thread_name_prefix="reconciler-list") as pool:
            ahead: deque[tuple[int, Future[tuple[Page, int]]]] = deque()
            following = served
            try:
                while True:
                    while len(ahead) < LIST_CONCURRENCY and following < total:
                        ahead.append((following, pool.submit(self._page, following, search)))
                        following += served
                    if not ahead:
                        return True
                    start, answer = ahead.popleft()
                    items, page_total = answer.result()
                    if page_total != total or not items:
                        return False
                    pages.append(items)
                    end, stop = start + len(items), min(start + served, total)
                    if end < stop and not self._read_from(end, stop, total, search, pages):
                        return False
            finally:
                for _, pending in ahead:
                    pending.cancel()

    def _read_from(
        self, start: int, stop: int, total: int, search: str | None, pages: builtins.list[Page]
    ) -> bool:
        """Pages from ``start`` until ``stop``, one after another, into ``pages``."""
        while start < stop:
            items, page_total = self._page(start, search)
            if page_total != total:
                return False
            if not items:
                break
            pages.append(items)
            start += len(items)
        return True

    def _page(self, start: int, search: str | None) -> tuple[Page, int]:
        what = "list tokens"
        params: dict[str, Any] = {"start": start, "count": self.page_size}
        if search:
            params["search"] = search
        response = self.client.request(
            "GET", TOKENS_PATH, params=params, idempotent=True, what=what
        )
        try:
            # The common case in one step: pydantic parses the JSON straight into tokens
            # (half the CPU of json.loads and then validating each token).
            listing = _Listing.model_validate_json(response.content)
            return listing.items, listing.total
        except Exception:
            pass  # the checks below accept no less, and say what is wrong (or raise as before)
        body = self.client.json(response, what)
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise InvalidResponseError(
                f"{what}: {self.client.endpoint} answered without an 'items' list"
            )
        total = body.get("total")
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise InvalidResponseError(
                f"{what}: {self.client.endpoint} answered without a valid 'total'"
            )
        return [ApiToken.from_schema(item) for item in body["items"]], total

    def create(
        self,
        name: str,
        description: str | None = None,
        scopes: builtins.list[str] | None = None,
        expired_at: datetime | None = None,
    ) -> ApiToken:
        """Create a token; the returned ApiToken carries the secret in ``token``.

        A create is not idempotent, so an answer that may have been lost after the server
        acted (timeout, dropped connection, 5xx) raises AmbiguousCreateError instead of
        being retried.
        """
        what = f"create token {name!r}"
        body = {
            "name": name,
            "description": description,
            "scopes": scopes,
            "expired_at": wire_datetime(expired_at) if expired_at is not None else None,
        }
        try:
            response = self.client.request(
                "POST", TOKENS_PATH, json_body=body, idempotent=False, what=what
            )
        except ConnectError:
            raise  # nothing reached the server: certainly not created
        except TransportError as exc:
            raise AmbiguousCreateError(
                f"{exc}; the token may have been created", name=name
            ) from None
        except ServerError as exc:
            raise AmbiguousCreateError(
                f"{exc}; the token may have been created", name=name, status=exc.status
            ) from None
        except RequestRejectedError as exc:
            taken = _name_taken(exc, name, self.client.endpoint)
            if taken is None:
                raise
            raise taken from None
        token = ApiToken.from_schema(self.client.json(response, what))
        if not token.token:
            raise InvalidResponseError(
                f"{what}: {self.client.endpoint} created the token but returned no value"
            )
        return token

    def get(self, token_uid: str) -> ApiToken | None:
        """The token, or None when it does not exist (404, or 400 'record not found')."""
        what = f"get token {token_uid!r}"
        try:
            response = self.client.request(
                "GET", f"{TOKENS_PATH}/{_segment(token_uid)}", idempotent=True, what=what
            )
        except NotFoundError:
            return None
        return ApiToken.from_schema(self.client.json(response, what))

    def update(
        self,
        token_uid: str,
        description: str | None = None,
        scopes: builtins.list[str] | None = None,
        expired_at: datetime | None = None,
    ) -> ApiToken | None:
        """Change a token in place (docs/wire-format.md section 8); None leaves a field as it
        is, the value never changes. Returns the updated token, or None when it does not exist
        (as ``get``). UpdateRouteMissing when the API has no update route.

        PATCH is idempotent (the same body twice gives the same token), so it is retried
        like GET and DELETE.
        """
        what = f"update token {token_uid!r}"
        body: dict[str, Any] = {}
        if description is not None:
            body["description"] = description
        if scopes is not None:
            body["scopes"] = scopes
        if expired_at is not None:
            body["expired_at"] = rfc3339(expired_at)
        path = f"{TOKENS_PATH}/{_segment(token_uid)}"
        try:
            response = self.client.request(
                "PATCH", path, json_body=body, idempotent=True, what=what
            )
        except NotFoundError as exc:
            self._check_update_route(token_uid, exc)
            return None
        except RequestRejectedError as exc:
            if exc.status != 405:
                raise
            raise self._no_update_route(what) from None
        return ApiToken.from_schema(self.client.json(response, what))

    def _check_update_route(self, token_uid: str, exc: NotFoundError) -> None:
        """After a PATCH answered not found: returns when the token is gone, raises
        UpdateRouteMissing when it is there.

        The transport's errors do not keep the body that would tell a router's 404 from
        Yatai's "record not found", so a GET of the token decides: it exists, hence the
        404 was the route's. A 400 "record not found" is Yatai's own answer.
        """
        if exc.status != 404 or self.get(token_uid) is None:
            return
        raise self._no_update_route(f"update token {token_uid!r}") from None

    def _no_update_route(self, what: str) -> UpdateRouteMissing:
        return UpdateRouteMissing(
            f"{what}: {self.client.endpoint} has no route to update a token in place "
            "(PATCH /api/v1/api_tokens/{uid}); change it by replacing the token",
            status=404,
        )

    def delete(self, token_uid: str, *, missing_ok: bool = False) -> None:
        """Delete a token; NotFoundError when it does not exist, unless ``missing_ok``
        (the reconciler's case: a retried delete whose first answer was lost finds the
        token already gone, which is the outcome it wanted)."""
        what = f"delete token {token_uid!r}"
        try:
            self.client.request(
                "DELETE", f"{TOKENS_PATH}/{_segment(token_uid)}", idempotent=True, what=what
            )
        except NotFoundError:
            if not missing_ok:
                raise


def rfc3339(moment: datetime) -> str:
    """The update route's datetime form (a Go ``time.Time``): RFC 3339 in UTC."""
    moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")[:-6] + "Z"


def _name_taken(exc: RequestRejectedError, name: str, endpoint: str) -> NameTakenError | None:
    """The create's refusal as NameTakenError when it says a unique name is taken (Yatai:
    400, "duplicate key value violates unique constraint ...")."""
    text = str(exc).lower()
    if exc.status not in (400, 409) or not ("duplicate key" in text or "unique constraint" in text):
        return None
    return NameTakenError(
        f"create token {name!r}: {endpoint} already has a live token named {name!r} "
        "(names are unique among a user's live tokens)",
        name=name,
        status=exc.status,
    )


def _segment(uid: str) -> str:
    # Unlike BentoML's f-string, quote the uid so 'a/b' or 'a?b' cannot reach another route.
    return quote(uid, safe="")
