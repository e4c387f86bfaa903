"""SQLite persistence of the local API: organisation, users, API keys and hashed tokens."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
TOKEN_PREFIX = "rct_"
ADMIN_KEY_PREFIX = "rca_"
UID_PREFIX = "tok_"

# Yatai's name for its unique index, quoted in the error a duplicate create answers with.
UNIQUE_NAME_INDEX = "uk_apiToken_organizationId_userId_name"

# last_used_at is bookkeeping, not security: writing it on every request would turn every
# read into a write transaction, so it is refreshed at most once per key per interval.
LAST_USED_INTERVAL = timedelta(minutes=1)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS organizations (
        id INTEGER PRIMARY KEY,
        uid TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS users (
        id INTEGER PRIMARY KEY,
        org_id INTEGER NOT NULL REFERENCES organizations(id),
        name TEXT NOT NULL UNIQUE,
        email TEXT NOT NULL DEFAULT '',
        first_name TEXT NOT NULL DEFAULT '',
        last_name TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS api_keys (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        hashed_key TEXT NOT NULL UNIQUE,
        is_admin INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        last_used_at TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS tokens (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uid TEXT NOT NULL UNIQUE,
        user_id INTEGER NOT NULL REFERENCES users(id),
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        scopes TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        expired_at TEXT,
        last_used_at TEXT,
        deleted_at TEXT,
        hashed_token TEXT NOT NULL UNIQUE
    )""",
    # Listing walks this index newest first and counts from it without touching the table.
    """CREATE INDEX IF NOT EXISTS tokens_live_by_user
        ON tokens (user_id, id) WHERE deleted_at IS NULL""",
)

_TOKEN_COLUMNS = """
    t.id, t.uid, t.name, t.description, t.scopes, t.created_at, t.updated_at, t.expired_at,
    t.last_used_at, t.deleted_at,
    u.id, u.name, u.email, u.first_name, u.last_name,
    o.uid, o.name, o.description, o.created_at, o.updated_at
"""

_TOKEN_FROM = """
    FROM tokens AS t
    JOIN users AS u ON u.id = t.user_id
    JOIN organizations AS o ON o.id = u.org_id
"""

_SELECT_LIVE_TOKEN = (
    "SELECT" + _TOKEN_COLUMNS + _TOKEN_FROM + "WHERE t.uid = ? AND t.user_id = ? "
    "AND t.deleted_at IS NULL"
)

_LIST_TOKENS = (
    "SELECT" + _TOKEN_COLUMNS + _TOKEN_FROM + "WHERE t.user_id = :user AND t.deleted_at IS NULL "
    "AND (:search = '' OR instr(t.name, :search) > 0) "
    "ORDER BY t.id DESC LIMIT :limit OFFSET :offset"
)

_COUNT_TOKENS = (
    "SELECT COUNT(*) FROM tokens AS t WHERE t.user_id = :user AND t.deleted_at IS NULL "
    "AND (:search = '' OR instr(t.name, :search) > 0)"
)


_CREATE_UNIQUE_NAME_INDEX = """CREATE UNIQUE INDEX IF NOT EXISTS tokens_unique_live_name
    ON tokens (user_id, name) WHERE deleted_at IS NULL"""

_UNIQUE_NAME_INDEX_EXISTS = (
    "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'tokens_unique_live_name'"
)

_LIVE_DUPLICATE_EXISTS = (
    "SELECT 1 FROM tokens WHERE deleted_at IS NULL GROUP BY user_id, name "
    "HAVING COUNT(*) > 1 LIMIT 1"
)

_NAME_HELD = "SELECT 1 FROM tokens WHERE user_id = ? AND name = ? AND deleted_at IS NULL LIMIT 1"

_INSERT_TOKEN = (
    "INSERT INTO tokens (uid, user_id, name, description, scopes, created_at, "
    "updated_at, expired_at, hashed_token) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

# NULL keeps a column as it is: PATCH's "null or absent = unchanged", in one fixed statement.
_UPDATE_TOKEN = (
    "UPDATE tokens SET description = COALESCE(?, description), "
    "scopes = COALESCE(?, scopes), expired_at = COALESCE(?, expired_at), updated_at = ? "
    "WHERE uid = ? AND user_id = ? AND deleted_at IS NULL"
)


def hash_secret(value: str) -> str:
    """The stored form of a key or token value: sha256, hex."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def new_token_value() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_admin_key() -> str:
    return ADMIN_KEY_PREFIX + secrets.token_urlsafe(32)


def format_db_time(moment: datetime) -> str:
    """Fixed-width UTC text ('2026-01-02T03:04:05.000006Z'), so that SQL string comparison
    orders moments correctly; it is also the wire form, RFC 3339."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


def parse_db_time(text: str | None) -> datetime | None:
    # fromisoformat is C-fast; strptime would dominate listing a page of 1000 tokens.
    if text is None:
        return None
    return datetime.fromisoformat(text.rstrip("Z")).replace(tzinfo=timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class UserRecord:
    id: int
    name: str
    email: str
    first_name: str
    last_name: str


@dataclass(slots=True)
class OrganizationRecord:
    uid: str
    name: str
    description: str
    created_at: str
    updated_at: str | None


@dataclass(slots=True)
class TokenRecord:
    """One token row with its owner; never holds the secret.

    Moments are kept as the stored RFC 3339 UTC text (``parse_db_time`` turns one into a
    datetime): that is already the wire form, and listing 1000 tokens should not parse and
    re-format 5000 timestamps. The text is fixed-width, so comparing strings compares time.
    """

    id: int
    uid: str
    name: str
    description: str
    scopes: list[str]
    created_at: str
    updated_at: str
    expired_at: str | None
    last_used_at: str | None
    deleted_at: str | None
    user: UserRecord
    organization: OrganizationRecord

    def is_expired(self, now: datetime | None = None) -> bool:
        if self.expired_at is None:
            return False
        return self.expired_at <= format_db_time(now or _now())


@dataclass(frozen=True)
class Principal:
    """Who a request authenticated as: a user, through an API key or one of their tokens.

    ``scopes`` are the token's own; None for an API key, which may do everything.
    """

    user: UserRecord
    is_admin: bool
    token_uid: str | None = None
    scopes: frozenset[str] | None = None

    def holds(self, scope: str) -> bool:
        """Whether the caller may act with ``scope``: Yatai's ``api`` grants every scope."""
        return self.scopes is None or "api" in self.scopes or scope in self.scopes


class NameTakenError(Exception):
    """A live token of the same user already has this name (unique names are enforced)."""


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _token_from_row(
    row: Sequence[Any], owners: dict[int, tuple[UserRecord, OrganizationRecord]] | None = None
) -> TokenRecord:
    # A page holds one user's tokens: build the user and organisation once per page.
    user_id = int(row[10])
    owner = owners.get(user_id) if owners is not None else None
    if owner is None:
        owner = (
            UserRecord(user_id, str(row[11]), str(row[12]), str(row[13]), str(row[14])),
            OrganizationRecord(
                str(row[15]), str(row[16]), str(row[17]), str(row[18]), _text(row[19])
            ),
        )
        if owners is not None:
            owners[user_id] = owner
    return TokenRecord(
        int(row[0]),
        str(row[1]),
        str(row[2]),
        str(row[3]),
        [str(s) for s in json.loads(row[4])],
        str(row[5]),
        str(row[6]),
        _text(row[7]),
        _text(row[8]),
        _text(row[9]),
        owner[0],
        owner[1],
    )


class Store:
    """Thread-safe access to the local API's SQLite database.

    One connection guarded by a lock: SQLite serialises writers anyway, and every statement
    here is an index lookup or a bounded index scan, so contention stays in microseconds.
    """

    def __init__(self, path: str | os.PathLike[str], *, unique_names: bool = True) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # Only hashes are stored, but the database is nobody else's business either;
            # SQLite gives its -wal and -shm files the same mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self._lock = threading.RLock()
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, one per write.
        self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        self._conn.execute("PRAGMA busy_timeout = 10000")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        with self._write() as cur:
            for statement in _SCHEMA:
                cur.execute(statement)
            cur.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        self.unique_names = True
        self.set_unique_names(unique_names)
        self._default_user = self._ensure_default_user()

    def set_unique_names(self, unique: bool) -> None:
        """Whether a user's live tokens must have distinct names, as Yatai's unique index
        (organisation, user, name) makes them. Deleted rows never hold a name.

        Enforced by a check in the create transaction; the partial unique index guards it
        and speeds the check up. A database from before this rule may hold live duplicates,
        on which the index cannot be built: the check alone then keeps new ones out.
        """
        with self._write() as cur:
            if not unique:
                cur.execute("DROP INDEX IF EXISTS tokens_unique_live_name")
            elif (
                cur.execute(_UNIQUE_NAME_INDEX_EXISTS).fetchone() is None
                # Checked first: building the index over duplicates would fail the start.
                and cur.execute(_LIVE_DUPLICATE_EXISTS).fetchone() is None
            ):
                cur.execute(_CREATE_UNIQUE_NAME_INDEX)
        self.unique_names = unique

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def _read(
        self, sql: str, params: Sequence[object] | dict[str, object]
    ) -> list[tuple[object, ...]]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    # users and keys

    def _ensure_default_user(self) -> UserRecord:
        now = format_db_time(_now())
        with self._write() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO organizations (id, uid, name, description, created_at) "
                "VALUES (1, ?, ?, ?, ?)",
                ("org_" + secrets.token_hex(8), "local", "reconciler local API", now),
            )
            cur.execute(
                "INSERT OR IGNORE INTO users (org_id, name, email, first_name, last_name, "
                "created_at) VALUES (1, ?, ?, ?, ?, ?)",
                ("admin", "admin@localhost", "Local", "Admin", now),
            )
        user = self.get_user("admin")
        assert user is not None
        return user

    @property
    def default_user(self) -> UserRecord:
        return self._default_user

    def get_user(self, name: str) -> UserRecord | None:
        rows = self._read(
            "SELECT id, name, email, first_name, last_name FROM users WHERE name = ?", (name,)
        )
        if not rows:
            return None
        row = rows[0]
        return UserRecord(int(str(row[0])), str(row[1]), str(row[2]), str(row[3]), str(row[4]))

    def create_user(
        self, name: str, *, email: str = "", first_name: str = "", last_name: str = ""
    ) -> UserRecord:
        """Add a user to the organisation (idempotent by name); tests use a second user to
        check that tokens are private to their owner."""
        with self._write() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO users (org_id, name, email, first_name, last_name, "
                "created_at) VALUES (1, ?, ?, ?, ?, ?)",
                (name, email, first_name, last_name, format_db_time(_now())),
            )
        user = self.get_user(name)
        assert user is not None
        return user

    def create_api_key(
        self, user: UserRecord | None = None, *, value: str | None = None, admin: bool = False
    ) -> str:
        """Register an API key for ``user`` (default: the admin user) and return its value."""
        value = value or new_admin_key()
        owner = user or self._default_user
        with self._write() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO api_keys (user_id, hashed_key, is_admin, created_at) "
                "VALUES (?, ?, ?, ?)",
                (owner.id, hash_secret(value), int(admin), format_db_time(_now())),
            )
        return value

    def set_admin_key(self, value: str) -> None:
        """Make ``value`` the one admin key; earlier admin keys stop working."""
        with self._write() as cur:
            cur.execute("DELETE FROM api_keys WHERE is_admin = 1")
            cur.execute(
                "INSERT OR REPLACE INTO api_keys (user_id, hashed_key, is_admin, created_at) "
                "VALUES (?, ?, 1, ?)",
                (self._default_user.id, hash_secret(value), format_db_time(_now())),
            )

    def is_admin_key(self, value: str) -> bool:
        principal = self.authenticate(value)
        return principal is not None and principal.is_admin

    def authenticate(self, value: str, now: datetime | None = None) -> Principal | None:
        """The principal a presented key belongs to: an API key, or a live token's value
        (not deleted, not expired). None when the key is unknown."""
        if not value:
            return None
        now = now or _now()
        digest = hash_secret(value)
        rows = self._read(
            "SELECT k.id, k.hashed_key, k.is_admin, k.last_used_at, "
            "u.id, u.name, u.email, u.first_name, u.last_name "
            "FROM api_keys AS k JOIN users AS u ON u.id = k.user_id WHERE k.hashed_key = ?",
            (digest,),
        )
        if rows:
            row = rows[0]
            if not hmac.compare_digest(str(row[1]), digest):
                return None
            self._touch("api_keys", int(str(row[0])), row[3], now)
            user = UserRecord(int(str(row[4])), str(row[5]), str(row[6]), str(row[7]), str(row[8]))
            return Principal(user=user, is_admin=bool(row[2]))
        rows = self._read(
            "SELECT t.id, t.hashed_token, t.uid, t.expired_at, t.last_used_at, "
            "u.id, u.name, u.email, u.first_name, u.last_name, t.scopes "
            "FROM tokens AS t JOIN users AS u ON u.id = t.user_id "
            "WHERE t.hashed_token = ? AND t.deleted_at IS NULL",
            (digest,),
        )
        if not rows:
            return None
        row = rows[0]
        if not hmac.compare_digest(str(row[1]), digest):
            return None
        expired_at = parse_db_time(row[3]) if isinstance(row[3], str) else None
        if expired_at is not None and expired_at <= now:
            return None
        self._touch("tokens", int(str(row[0])), row[4], now)
        user = UserRecord(int(str(row[5])), str(row[6]), str(row[7]), str(row[8]), str(row[9]))
        scopes = frozenset(str(s) for s in json.loads(str(row[10])))
        return Principal(user=user, is_admin=False, token_uid=str(row[2]), scopes=scopes)

    def _touch(self, table: str, row_id: int, last_used: object, now: datetime) -> None:
        previous = parse_db_time(last_used) if isinstance(last_used, str) else None
        if previous is not None and now - previous < LAST_USED_INTERVAL:
            return
        stamp = format_db_time(now)
        # Two fixed statements rather than a formatted table name: SQL is never built.
        with self._write() as cur:
            if table == "tokens":
                cur.execute("UPDATE tokens SET last_used_at = ? WHERE id = ?", (stamp, row_id))
            else:
                cur.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (stamp, row_id))

    # tokens

    def create_token(
        self,
        user: UserRecord,
        name: str,
        *,
        description: str = "",
        scopes: Iterable[str] = (),
        expired_at: datetime | None = None,
        now: datetime | None = None,
    ) -> tuple[TokenRecord, str]:
        """Insert a token and return it with its secret value, which is stored only hashed."""
        value = new_token_value()
        uid = UID_PREFIX + secrets.token_hex(10)
        stamp = format_db_time(now or _now())
        with self._write() as cur:
            # Inside the write transaction: no other create can take the name meanwhile.
            if self.unique_names and cur.execute(_NAME_HELD, (user.id, name)).fetchone():
                raise NameTakenError(name)
            cur.execute(
                _INSERT_TOKEN,
                (
                    uid,
                    user.id,
                    name,
                    description,
                    json.dumps(list(scopes)),
                    stamp,
                    stamp,
                    format_db_time(expired_at) if expired_at is not None else None,
                    hash_secret(value),
                ),
            )
        record = self.get_token(user, uid)
        assert record is not None
        return record, value

    def seed_tokens(
        self,
        count: int,
        *,
        user: UserRecord | None = None,
        prefix: str = "seed",
        description: str = "",
        scopes: Sequence[str] = ("api",),
        expired_at: datetime | None = None,
    ) -> list[str]:
        """Insert ``count`` tokens named ``<prefix>-<n>`` in one transaction (tests and
        benchmarks); returns their uids, oldest first. Their secrets are discarded."""
        owner = user or self._default_user
        stamp = format_db_time(_now())
        expiry = format_db_time(expired_at) if expired_at is not None else None
        scopes_json = json.dumps(list(scopes))
        uids = [UID_PREFIX + secrets.token_hex(10) for _ in range(count)]
        rows = [
            (
                uid,
                owner.id,
                f"{prefix}-{n}",
                description,
                scopes_json,
                stamp,
                stamp,
                expiry,
                hash_secret(secrets.token_hex(16)),
            )
            for n, uid in enumerate(uids)
        ]
        with self._write() as cur:
            cur.executemany(_INSERT_TOKEN, rows)
        return uids

    def update_token(
        self,
        user: UserRecord,
        uid: str,
        *,
        description: str | None = None,
        scopes: Iterable[str] | None = None,
        expired_at: datetime | None = None,
        now: datetime | None = None,
    ) -> TokenRecord | None:
        """Change a live token of ``user`` in place (None = unchanged; the secret never
        changes); returns it, or None when there is no such live token."""
        stamp = format_db_time(now or _now())
        values = (
            description,
            json.dumps(list(scopes)) if scopes is not None else None,
            format_db_time(expired_at) if expired_at is not None else None,
            stamp,
            uid,
            user.id,
        )
        with self._write() as cur:
            cur.execute(_UPDATE_TOKEN, values)
            changed = cur.rowcount
        return self.get_token(user, uid) if changed else None

    def get_token(self, user: UserRecord, uid: str) -> TokenRecord | None:
        """A live (not deleted) token of ``user``; another user's token is not found."""
        rows = self._read(_SELECT_LIVE_TOKEN, (uid, user.id))
        return _token_from_row(rows[0]) if rows else None

    def list_tokens(
        self, user: UserRecord, *, start: int = 0, count: int = 100, search: str | None = None
    ) -> tuple[list[TokenRecord], int]:
        """A page of ``user``'s live tokens, newest first, and the total number matching."""
        params: dict[str, object] = {
            "user": user.id,
            "search": search or "",
            "limit": count,
            "offset": start,
        }
        with self._lock:
            rows = self._conn.execute(_LIST_TOKENS, params).fetchall()
            total = self._conn.execute(_COUNT_TOKENS, params).fetchone()[0]
        owners: dict[int, tuple[UserRecord, OrganizationRecord]] = {}
        return [_token_from_row(row, owners) for row in rows], int(total)

    def delete_token(
        self, user: UserRecord, uid: str, now: datetime | None = None
    ) -> TokenRecord | None:
        """Soft-delete a live token of ``user`` (its value stops working at once); returns
        the deleted token, or None when there is no such live token."""
        stamp = format_db_time(now or _now())
        with self._write() as cur:
            cur.execute(
                "UPDATE tokens SET deleted_at = ?, updated_at = ? "
                "WHERE uid = ? AND user_id = ? AND deleted_at IS NULL",
                (stamp, stamp, uid, user.id),
            )
            changed = cur.rowcount
        if not changed:
            return None
        rows = self._read(
            "SELECT" + _TOKEN_COLUMNS + _TOKEN_FROM + "WHERE t.uid = ?",
            (uid,),
        )
        return _token_from_row(rows[0])

    def count_tokens(self, *, include_deleted: bool = False) -> int:
        """Every token row (all users); for tests that check what a faulty run left behind."""
        if include_deleted:
            rows = self._read("SELECT COUNT(*) FROM tokens", ())
        else:
            rows = self._read("SELECT COUNT(*) FROM tokens WHERE deleted_at IS NULL", ())
        return int(str(rows[0][0]))
