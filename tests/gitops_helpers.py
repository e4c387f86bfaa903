"""A GitOps working copy for end-to-end CLI tests (test_gitops.py, test_rotation.py).

``Workspace`` is a temporary directory laid out like a user's repository (``manifests/``,
``state/tokens.state.json``) connected to a running local API through BentoML's
environment variables, so commands run exactly as a user or a CI job types them.
``age_token`` moves a token's clock: it rewrites created_at/expired_at in the local API's
SQLite database, which is how tests make a token expire or fall due for rotation without
sleeping.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from clihelpers import CliResult, invoke_cli, run_cli
from conftest import LocalApi

from reconciler.server.store import format_db_time


class Workspace:
    """A repository checkout with manifests and a local state file, bound to ``api``."""

    def __init__(self, root: Path, api: LocalApi) -> None:
        self.root = root
        self.api = api
        self.state_path = root / "state" / "tokens.state.json"
        (root / "manifests").mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str | None]:
        return {"BENTO_CLOUD_API_ENDPOINT": self.api.url, "BENTO_CLOUD_API_KEY": self.api.admin_key}

    def manifest(self, *tokens: Mapping[str, Any], name: str = "tokens.yaml") -> None:
        """Replace ``manifests/<name>`` with these token entries."""
        path = self.root / "manifests" / name
        # Through JSON: shared lists would otherwise be dumped as YAML aliases.
        data = json.loads(json.dumps({"tokens": [dict(t) for t in tokens]}))
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    def run(
        self,
        *args: str,
        env: Mapping[str, str | None] | None = None,
        input: str | None = None,
        timeout: float = 120,
    ) -> CliResult:
        """``python -m reconciler ARGS`` in the workspace (a real process, stdin not a tty)."""
        return run_cli(
            *args, cwd=self.root, env={**self.env, **(env or {})}, input=input, timeout=timeout
        )

    def call(
        self, *args: str, env: Mapping[str, str | None] | None = None, input: str | None = None
    ) -> CliResult:
        """The same command run in this process: same code, no process boundary, about ten
        times faster. For setup steps and checks beside the behaviour under test."""
        return invoke_cli(*args, cwd=self.root, env={**self.env, **(env or {})}, input=input)

    def setup(self, *args: str) -> CliResult:
        """Run a setup command in this process; it must succeed."""
        result = self.call(*args)
        assert result.exit_code == 0, str(result)
        return result

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state_path.read_text(encoding="utf-8"))
        return data

    def backup(self) -> dict[str, Any]:
        path = self.state_path.with_name(self.state_path.name + ".backup")
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data

    def owned(self) -> dict[str, str]:
        """name -> uid of the tokens state owns."""
        return {t["name"]: t["uid"] for t in self.state()["tokens"]}

    def live(self) -> dict[str, list[str]]:
        """name -> uids of the live (not deleted) tokens."""
        tokens, _total = self.api.store.list_tokens(self.api.store.default_user, count=100_000)
        names: dict[str, list[str]] = {}
        for token in tokens:
            names.setdefault(token.name, []).append(token.uid)
        return names

    def seed(self, name: str, **kwargs: Any) -> str:
        """Create a token by hand (not through reconciler); returns its uid."""
        record, _value = self.api.store.create_token(self.api.store.default_user, name, **kwargs)
        return record.uid

    def delete_by_hand(self, uid: str) -> None:
        assert self.api.store.delete_token(self.api.store.default_user, uid) is not None


def age_token(
    api: LocalApi, uid: str, *, created_at: datetime, expired_at: datetime | None
) -> None:
    """Set a token's created_at and expired_at in the local API's database, as if time had
    passed since it was created."""
    with sqlite3.connect(api.db_path, timeout=10) as conn:
        cursor = conn.execute(
            "UPDATE tokens SET created_at = ?, updated_at = ?, expired_at = ? WHERE uid = ?",
            (
                format_db_time(created_at),
                format_db_time(created_at),
                format_db_time(expired_at) if expired_at is not None else None,
                uid,
            ),
        )
        assert cursor.rowcount == 1, uid
    conn.close()


def token_times(api: LocalApi, uid: str) -> dict[str, str | None]:
    """created_at / deleted_at / expired_at of any token row, deleted ones included."""
    with sqlite3.connect(api.db_path, timeout=10) as conn:
        row = conn.execute(
            "SELECT created_at, deleted_at, expired_at FROM tokens WHERE uid = ?", (uid,)
        ).fetchone()
    conn.close()
    assert row is not None, uid
    return {"created_at": row[0], "deleted_at": row[1], "expired_at": row[2]}


def all_uids(api: LocalApi) -> dict[str, str]:
    """uid -> name of every token row, deleted ones included (for normalising output)."""
    with sqlite3.connect(api.db_path, timeout=10) as conn:
        rows = conn.execute("SELECT uid, name FROM tokens").fetchall()
    conn.close()
    return {str(uid): str(name) for uid, name in rows}
