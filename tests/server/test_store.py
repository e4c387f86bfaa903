"""The local API's SQLite store (reconciler.server.store): names unique among a user's
live tokens, old databases still open, SQL built only from constants, keys compared in
constant time."""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.local_api import create, names

from reconciler.server.store import Store

if TYPE_CHECKING:
    from support.local_api import LocalApi, LocalApiFactory
import ast
from typing import TYPE_CHECKING

import reconciler.server.app as app_module
import reconciler.server.store as store_module

if TYPE_CHECKING:
    from support.local_api import LocalApi


TOKENS = "/api/v1/api_tokens"
DUPLICATE = {
    "error": "create apiToken: ERROR: duplicate key value violates unique constraint "
    '"uk_apiToken_organizationId_userId_name" (SQLSTATE 23505)'
}


def test_a_taken_name_is_refused_with_yatais_400(local_api: LocalApi) -> None:
    with local_api.client() as client:
        first = create(client, "ci-deployer", scopes=["api"])
        again = client.post(TOKENS, json={"name": "ci-deployer", "scopes": ["read_cluster"]})
        assert again.status_code == 400
        assert again.json() == DUPLICATE
        assert names(client) == ["ci-deployer"]
        # A deleted token holds no name, as Yatai deletes the row.
        assert client.delete(f"{TOKENS}/{first['uid']}").status_code == 200
        second = create(client, "ci-deployer")
        assert second["uid"] != first["uid"]
        assert names(client) == ["ci-deployer"]


def test_names_are_unique_per_user_only(local_api: LocalApi) -> None:
    store = local_api.store
    other_key = store.create_api_key(store.create_user("bob"))
    with local_api.client() as admin, local_api.client(other_key) as bob:
        create(admin, "shared-name")
        create(bob, "shared-name")
        assert names(admin) == names(bob) == ["shared-name"]


def test_an_expired_token_still_holds_its_name(local_api: LocalApi) -> None:
    # Yatai's index covers every row until it is deleted, expired or not.
    store = local_api.store
    past = datetime.now(timezone.utc) - timedelta(minutes=1)
    store.create_token(store.default_user, "lapsed", expired_at=past)
    with local_api.client() as client:
        assert client.post(TOKENS, json={"name": "lapsed"}).json() == DUPLICATE


def test_duplicates_are_allowed_with_the_option(local_api_factory: LocalApiFactory) -> None:
    api = local_api_factory(allow_duplicate_names=True)
    with api.client() as client:
        uids = {create(client, "twin")["uid"], create(client, "twin")["uid"]}
        assert len(uids) == 2
        assert names(client) == ["twin", "twin"]
    indexes = _indexes(api.db_path)
    assert "tokens_unique_live_name" not in indexes


def test_concurrent_creates_of_one_name_make_one_token(local_api: LocalApi) -> None:
    import threading

    statuses: list[int] = []

    def worker() -> None:
        with local_api.client() as client:
            statuses.append(client.post(TOKENS, json={"name": "race"}).status_code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [400] * 7
    assert local_api.store.count_tokens() == 1


def _indexes(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    return {str(r[0]) for r in rows}


def test_an_old_database_with_duplicates_still_opens(tmp_path: Path) -> None:
    """A database written while duplicates were allowed keeps its tokens; new duplicates
    are refused even though the unique index cannot be built over the old ones."""
    db = tmp_path / "old.db"
    with Store(db, unique_names=False) as old:
        old.create_token(old.default_user, "twin")
        old.create_token(old.default_user, "twin")
        old.create_token(old.default_user, "single")
    with Store(db) as store:
        assert store.count_tokens() == 3
        assert "tokens_unique_live_name" not in _indexes(db)
        from reconciler.server.store import NameTakenError

        with pytest.raises(NameTakenError):
            store.create_token(store.default_user, "single")
        with pytest.raises(NameTakenError):
            store.create_token(store.default_user, "twin")
        twins = [r for r in store.list_tokens(store.default_user)[0] if r.name == "twin"]
        store.delete_token(store.default_user, twins[0].uid)
    with Store(db) as store:
        assert "tokens_unique_live_name" in _indexes(db)  # built once the duplicates went
        store.create_token(store.default_user, "fresh")
    with Store(db, unique_names=False) as store:
        assert "tokens_unique_live_name" not in _indexes(db)
        store.create_token(store.default_user, "fresh")
        assert store.count_tokens() == 4


# ---------------------------------------------------------------- source checks


STORE_SOURCE = Path(store_module.__file__)
APP_SOURCE = Path(app_module.__file__)


def _module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    constants: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                constants[target.id] = node.value
    return constants


def _is_static_sql(node: ast.expr, constants: dict[str, ast.expr], seen: frozenset[str]) -> bool:
    """True when the SQL text is built from string literals and module constants only."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.Name) and node.id in constants and node.id not in seen:
        return _is_static_sql(constants[node.id], constants, seen | {node.id})
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_static_sql(node.left, constants, seen) and _is_static_sql(
            node.right, constants, seen
        )
    if isinstance(node, ast.Tuple):  # the _SCHEMA tuple of statements
        return all(_is_static_sql(e, constants, seen) for e in node.elts)
    return False


def test_store_sql_is_built_from_constants_only() -> None:
    """Every statement the store executes is a literal (or a concatenation of literals and
    module constants); values always travel as parameters. No f-string, %, or format()."""
    tree = ast.parse(STORE_SOURCE.read_text())
    constants = _module_constants(tree)
    read = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_read")
    read_lines = range(read.lineno, (read.end_lineno or read.lineno) + 1)
    calls = 0
    dynamic: list[str] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in ("execute", "executemany", "executescript", "_read"):
            continue
        calls += 1
        sql = node.args[0] if node.args else None
        if isinstance(sql, ast.Name) and sql.id == "statement":
            sql = ast.Name(id="_SCHEMA")  # `for statement in _SCHEMA: cur.execute(statement)`
        if isinstance(sql, ast.Name) and sql.id == "sql" and node.lineno in read_lines:
            continue  # _read(sql, params) passes on what its callers (checked here) give it
        if sql is None or not _is_static_sql(sql, constants, frozenset()):
            dynamic.append(f"line {node.lineno}: {ast.unparse(node)[:100]}")
    assert calls >= 15
    assert not dynamic, "SQL not built from constants:\n" + "\n".join(dynamic)

    source = STORE_SOURCE.read_text()
    sql_word = r"(SELECT|INSERT|UPDATE|DELETE|WHERE|CREATE|DROP|ORDER BY|LIMIT)"
    assert not re.search(rf"""\bf["'][^"'\n]*\b{sql_word}\b""", source), "f-string SQL"
    assert not re.search(rf"""["'][^"'\n]*\b{sql_word}\b[^"'\n]*["']\s*%""", source), "% SQL"
    assert not re.search(rf"""\b{sql_word}\b[^"'\n]*["']\s*\.format\(""", source), ".format SQL"


def test_keys_are_compared_in_constant_time() -> None:
    """authenticate() compares digests with hmac.compare_digest, and no server module
    compares a key, digest or hash with == or !=."""
    tree = ast.parse(STORE_SOURCE.read_text())
    authenticate = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "authenticate"
    )
    compared = [
        node
        for node in ast.walk(authenticate)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "compare_digest"
    ]
    assert len(compared) >= 2  # API keys and token values
    secret_words = re.compile(r"digest|hash|secret|api_key|token_value|value", re.I)
    for path in sorted(APP_SOURCE.parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(
                isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops
            ):
                text = ast.unparse(node)
                operands = [node.left, *node.comparators]
                names = [ast.unparse(o) for o in operands if not isinstance(o, ast.Constant)]
                if all(secret_words.search(name) for name in names) and len(names) == 2:
                    pytest.fail(f"{path.name}:{node.lineno}: secret compared with ==: {text}")
