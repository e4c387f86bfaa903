"""Running the local API (reconciler.server.embedded): data and admin key across
restarts, `reconciler serve` and its flags as a process, and `--endpoint local` starting
it in a fresh directory."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from support.local_api import create

from reconciler.server.embedded import LocalServer, admin_key_path, resolve_admin_key
from reconciler.server.store import Store, hash_secret

if TYPE_CHECKING:
    from support.local_api import LocalApi
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from support.local_api import LocalApi
import signal

from support.cli import cli_environment, run_cli_subprocess
from support.local_api import LocalApi

TOKENS = "/api/v1/api_tokens"


def test_data_and_admin_key_survive_a_restart(local_api: LocalApi) -> None:
    with local_api.client() as client:
        token = create(client, "durable", scopes=["api"])
    url, key = local_api.url, local_api.admin_key
    local_api.restart()
    assert (local_api.url, local_api.admin_key) == (url, key)
    with local_api.client() as client:
        assert client.get(f"{TOKENS}/{token['uid']}").json()["name"] == "durable"
    with local_api.client(token["token"]) as client:
        assert client.get(TOKENS).status_code == 200


def test_a_new_server_on_the_same_database_reuses_the_admin_key(tmp_path: Path) -> None:
    db = tmp_path / "local.db"
    with LocalServer(db) as first:
        key = first.admin_key
        created = httpx.post(
            first.url + TOKENS, headers=first.headers, json={"name": "kept"}
        ).json()
    key_file = admin_key_path(db)
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with LocalServer(db) as second:
        assert second.admin_key == key
        response = httpx.get(f"{second.url}{TOKENS}/{created['uid']}", headers=second.headers)
        assert response.status_code == 200


def test_explicit_api_key_replaces_the_admin_key(tmp_path: Path) -> None:
    db = tmp_path / "local.db"
    with LocalServer(db) as first:
        old = first.admin_key
    with LocalServer(db, api_key="my-own-key") as second:
        assert second.admin_key == "my-own-key"
        headers = {"X-YATAI-API-TOKEN": "my-own-key"}
        assert httpx.get(second.url + TOKENS, headers=headers).status_code == 200
        old_headers = {"X-YATAI-API-TOKEN": old}
        assert httpx.get(second.url + TOKENS, headers=old_headers).status_code == 401
    assert admin_key_path(db).read_text().strip() == "my-own-key"


def test_a_lost_key_file_rotates_the_admin_key(tmp_path: Path) -> None:
    db = tmp_path / "local.db"
    with Store(db) as store:
        first, created = resolve_admin_key(store, db)
        assert created
        assert resolve_admin_key(store, db) == (first, False)
        admin_key_path(db).unlink()
        second, created = resolve_admin_key(store, db)
        assert created and second != first
        assert not store.is_admin_key(first)
        assert store.is_admin_key(second)
        assert store.authenticate(second) is not None
        assert hash_secret(second) != second


def _read_until(stream: Any, marker: str, timeout: float = 20.0) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        line = stream.readline()
        if not line or time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} never printed; got:\n{seen}")
        seen += line
    return seen


def test_run_server_prints_the_admin_key_once(tmp_path: Path) -> None:
    db = tmp_path / "serve.db"
    script = (
        "import sys\n"
        "from reconciler.server.embedded import run_server\n"
        "run_server('127.0.0.1', 0, sys.argv[1], None, None, 1000, log_level='warning')\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def serve() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", script, str(db)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    proc = serve()
    try:
        assert proc.stderr is not None
        out = _read_until(proc.stderr, "BENTO_CLOUD_API_KEY=")
        out += proc.stderr.readline()
        url = re.search(r"BENTO_CLOUD_API_ENDPOINT=(\S+)", out)
        key = re.search(r"BENTO_CLOUD_API_KEY=(\S+)", out)
        assert url and key
        response = httpx.get(
            url.group(1) + TOKENS, headers={"X-YATAI-API-TOKEN": key.group(1)}, timeout=10
        )
        assert response.status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
    assert admin_key_path(db).read_text().strip() == key.group(1)

    proc = serve()
    try:
        assert proc.stderr is not None
        again = _read_until(proc.stderr, "BENTO_CLOUD_API_KEY=")
        assert key.group(1) not in again
        assert str(admin_key_path(db)) in again
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


# ---------------------------------------------------------------- reconciler serve


AUTH = "X-YATAI-API-TOKEN"


def _serve(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler",
            "serve",
            "--port",
            "0",
            "--db",
            str(tmp_path / "s.db"),
            *flags,
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**__import__("os").environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    out = _read_until(proc.stderr, "BENTO_CLOUD_API_KEY=")
    url = re.search(r"BENTO_CLOUD_API_ENDPOINT=(\S+)", out)
    key = re.search(r"BENTO_CLOUD_API_KEY=(\S+)", out + proc.stderr.readline())
    assert url and key, out
    return proc, url.group(1), key.group(1)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(10)
    if proc.stderr is not None:
        proc.stderr.close()


@pytest.mark.parametrize(
    ("flags", "duplicate_status", "patch_status"),
    [((), 400, 200), (("--allow-duplicate-names", "--no-update-route"), 200, 404)],
)
def test_serve_flags(
    tmp_path: Path, flags: tuple[str, ...], duplicate_status: int, patch_status: int
) -> None:
    proc, url, key = _serve(tmp_path, *flags)
    try:
        with httpx.Client(base_url=url, headers={AUTH: key}, timeout=30) as client:
            token = create(client, "served")
            again = client.post(TOKENS, json={"name": "served"})
            assert again.status_code == duplicate_status
            patch = client.patch(f"{TOKENS}/{token['uid']}", json={"description": "x"})
            assert patch.status_code == patch_status
            if patch_status == 404:
                assert patch.text == "404 page not found"
    finally:
        _stop(proc)


def test_serve_stopped_by_sigterm_says_so_and_exits_0(tmp_path: Path) -> None:
    full = cli_environment(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "serve", "--port", "0", "--db", "api.sqlite3"],
        cwd=tmp_path,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "reconciler local API on" in first, first
        time.sleep(0.5)  # let uvicorn install its handlers
        proc.send_signal(signal.SIGTERM)
        _out, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    assert "Stopped the local API (SIGTERM)." in rest
    assert "Aborted" not in rest and "Traceback" not in rest


# ---------------------------------------------------------------- --endpoint local


def test_endpoint_local_works_in_a_fresh_directory(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "tokens.yaml").write_text(
        "tokens:\n  - name: ci-deployer\n    scopes: [api]\n    expires: 90d\n",
        encoding="utf-8",
    )
    plan = run_cli_subprocess("--endpoint", "local", "plan", "--detailed-exitcode", cwd=tmp_path)
    assert plan.exit_code == 2, plan
    assert "+   create   ci-deployer" in plan.stdout
    applied = run_cli_subprocess(
        "--endpoint", "local", "apply", "--auto-approve", "--secrets-out", "s.json", cwd=tmp_path
    )
    assert applied.exit_code == 0, applied
    assert "Apply complete: 1 created." in applied.stdout
    assert (tmp_path / "state" / "local-api.sqlite3").is_file()
    state = json.loads((tmp_path / "state" / "tokens.state.json").read_text(encoding="utf-8"))
    assert state["endpoint"] == "local"
    assert [t["name"] for t in state["tokens"]] == ["ci-deployer"]
    assert "rct_" not in applied.output
    again = run_cli_subprocess("--endpoint", "local", "plan", "--detailed-exitcode", cwd=tmp_path)
    assert again.exit_code == 0, again
    assert "No changes. 1 token matches the manifests." in again.stdout
