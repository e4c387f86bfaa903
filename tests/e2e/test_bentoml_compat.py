"""BentoML's own SDK and `bentoml api-token` CLI, unchanged, against the local API.

BentoML is heavy and pins its own dependencies, so it runs in a separate interpreter named
by RECONCILER_BENTOML_PYTHON (a virtualenv with bentoml installed); the module is skipped
when the variable is unset.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from support.local_api import LocalApi

BENTOML_PYTHON = os.environ.get("RECONCILER_BENTOML_PYTHON", "")

pytestmark = [
    pytest.mark.bentoml,
    # Skipped locally without BentoML; in CI (CI=true) a missing interpreter fails instead.
    pytest.mark.skipif(
        not BENTOML_PYTHON and not os.environ.get("CI"),
        reason="RECONCILER_BENTOML_PYTHON is not set",
    ),
]

TOKENS = "/api/v1/api_tokens"
RESULT = "@@RESULT@@"

PRELUDE = textwrap.dedent(
    """
    import json, os, sys
    from datetime import datetime, timedelta
    from bentoml._internal.cloud.client import RestApiClient
    from bentoml._internal.cloud.api_token import ApiTokenAPI
    from bentoml.exceptions import BentoMLException

    client = RestApiClient(os.environ["TEST_ENDPOINT"], os.environ["TEST_KEY"])
    api = ApiTokenAPI(client)
    out = {}

    def d(token):
        return None if token is None else token.to_dict()

    def error_of(call):
        try:
            call()
        except BentoMLException as exc:
            return type(exc).__name__ + ": " + str(exc)
        return None
    """
)


def run_sdk(api: LocalApi, body: str, *, key: str | None = None) -> dict[str, Any]:
    """Run ``body`` after PRELUDE in BentoML's interpreter; it fills the dict ``out``."""
    script = (
        PRELUDE + textwrap.dedent(body) + f"\nprint({RESULT!r} + json.dumps(out, default=str))\n"
    )
    env = {
        **os.environ,
        "TEST_ENDPOINT": api.url,
        "TEST_KEY": key if key is not None else api.admin_key,
        "BENTOML_DO_NOT_TRACK": "True",
    }
    proc = subprocess.run(
        [BENTOML_PYTHON, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith(RESULT))
    result: dict[str, Any] = json.loads(line[len(RESULT) :])
    return result


def run_bentoml_cli(
    api: LocalApi, tmp_path: Path, *args: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "bentoml-home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "True",
        "BENTO_CLOUD_API_KEY": key if key is not None else api.admin_key,
        "BENTO_CLOUD_API_ENDPOINT": api.url,
        # rich wraps at 80 columns when stdout is not a terminal, which breaks JSON.
        "COLUMNS": "400",
    }
    cli = str(Path(BENTOML_PYTHON).parent / "bentoml")
    return subprocess.run(
        [cli, "api-token", *args], capture_output=True, text=True, env=env, timeout=120
    )


def json_in(text: str) -> Any:
    """The JSON document in CLI output (create prints a panel with the value before it)."""
    starts = [i for i, line in enumerate(text.splitlines()) if line[:1] in "[{"]
    assert starts, text
    return json.loads("\n".join(text.splitlines()[starts[0] :]))


def test_sdk_create_list_get_delete(local_api: LocalApi) -> None:
    result = run_sdk(
        local_api,
        """
        plain = api.create("sdk-plain")
        out["plain"] = d(plain)
        out["plain_secret"] = plain.token
        expiring = api.create(
            "sdk-expiring",
            description="made by bentoml",
            scopes=["api", "read_cluster"],
            expired_at=datetime(2031, 1, 2, 3, 4, 5, 123456),
        )
        out["expiring"] = d(expiring)
        out["expiring_expired_at"] = expiring.expired_at.isoformat()
        out["list"] = [d(t) for t in api.list()]
        out["search"] = [t.name for t in api.list(search="expir")]
        got = api.get(plain.uid)
        out["get"] = d(got)
        out["get_token"] = got.token
        out["get_created_by"] = got.created_by
        out["missing"] = d(api.get("tok_does_not_exist"))
        api.delete(plain.uid)
        out["after_delete"] = d(api.get(plain.uid))
        out["delete_missing"] = error_of(lambda: api.delete(plain.uid))
        out["names_left"] = [t.name for t in api.list()]
        """,
    )
    plain = result["plain"]
    assert plain["name"] == "sdk-plain"
    assert plain["uid"].startswith("tok_")
    assert result["plain_secret"].startswith("rct_")
    assert plain["description"] == ""
    assert plain["created_by"] == "admin"

    expiring = result["expiring"]
    assert expiring["description"] == "made by bentoml"
    assert expiring["scopes"] == ["api", "read_cluster"]
    assert result["expiring_expired_at"].startswith("2031-01-02T03:04:05.123456")

    assert [t["name"] for t in result["list"]] == ["sdk-expiring", "sdk-plain"]
    assert result["search"] == ["sdk-expiring"]
    assert result["get"]["uid"] == plain["uid"]
    assert result["get_token"] is None
    assert result["get_created_by"] == "admin"
    assert result["missing"] is None
    assert result["after_delete"] is None
    assert "404" in result["delete_missing"]
    assert result["names_left"] == ["sdk-expiring"]

    # The expiry BentoML sent (naive, space separated) was read as UTC.
    with local_api.client() as client:
        stored = client.get(f"{TOKENS}/{expiring['uid']}").json()
    assert stored["expired_at"] == "2031-01-02T03:04:05.123456Z"


def test_sdk_token_value_works_as_bentoml_key(local_api: LocalApi) -> None:
    with local_api.client() as client:
        secret = client.post(TOKENS, json={"name": "machine", "scopes": ["api"]}).json()["token"]
    result = run_sdk(
        local_api,
        """
        out["names"] = [t.name for t in api.list()]
        out["user"] = client.v1.get_current_user().name
        """,
        key=secret,
    )
    assert result == {"names": ["machine"], "user": "admin"}


def test_sdk_errors(local_api: LocalApi) -> None:
    bad = run_sdk(
        local_api,
        """
        out["list"] = error_of(lambda: api.list())
        out["get"] = error_of(lambda: api.get("tok_x"))
        """,
        key="wrong",
    )
    assert "401" in bad["list"] and "401" in bad["get"]

    local_api.set_faults(error_rate=1.0)
    faulty = run_sdk(local_api, 'out["list"] = error_of(lambda: api.list())')
    local_api.reset_faults()
    assert "trace ID" in faulty["list"]

    invalid = run_sdk(local_api, 'out["create"] = error_of(lambda: api.create("Not_Valid"))')
    assert "400" in invalid["create"] and "DNS-1035" in invalid["create"]


def test_sdk_duplicate_create_gets_yatais_400(local_api: LocalApi) -> None:
    result = run_sdk(
        local_api,
        """
        api.create("taken")
        out["create"] = error_of(lambda: api.create("taken"))
        out["names"] = [t.name for t in api.list()]
        """,
    )
    assert "400" in result["create"]
    assert "duplicate key value violates unique constraint" in result["create"]
    assert result["names"] == ["taken"]


def test_cli_duplicate_create_fails(local_api: LocalApi, tmp_path: Path) -> None:
    assert run_bentoml_cli(local_api, tmp_path, "create", "cli-taken").returncode == 0
    again = run_bentoml_cli(local_api, tmp_path, "create", "cli-taken")
    assert again.returncode == 1
    assert "duplicate key" in again.stdout + again.stderr
    with local_api.client() as client:
        assert client.get(TOKENS).json()["total"] == 1


def test_sdk_and_cli_work_with_duplicates_allowed(local_api_factory: Any, tmp_path: Path) -> None:
    api = local_api_factory(allow_duplicate_names=True)
    result = run_sdk(
        api,
        """
        first, second = api.create("twin"), api.create("twin")
        out["uids"] = [first.uid, second.uid]
        out["names"] = [t.name for t in api.list()]
        """,
    )
    assert len(set(result["uids"])) == 2
    assert result["names"] == ["twin", "twin"]
    listing = run_bentoml_cli(api, tmp_path, "list", "-o", "json")
    assert listing.returncode == 0, listing.stderr
    assert [t["name"] for t in json_in(listing.stdout)] == ["twin", "twin"]


def test_sdk_list_sees_one_page_of_100(local_api: LocalApi) -> None:
    local_api.store.seed_tokens(120)
    result = run_sdk(
        local_api,
        """
        out["sdk_list"] = len(api.list())
        second = client.v1.list_api_tokens(start=100, count=100)
        out["second"] = [len(second.items), second.total, second.start, second.count]
        """,
    )
    assert result["sdk_list"] == 100
    assert result["second"] == [20, 120, 100, 100]


def test_cli_create_list_get_delete(local_api: LocalApi, tmp_path: Path) -> None:
    created = run_bentoml_cli(
        local_api,
        tmp_path,
        "create",
        "cli-token",
        "-d",
        "from the cli",
        "-s",
        "api",
        "-s",
        "write_cluster",
        "--expires",
        "30d",
        "-o",
        "json",
    )
    assert created.returncode == 0, created.stderr
    token = json_in(created.stdout)
    assert token["name"] == "cli-token"
    assert token["description"] == "from the cli"
    assert token["scopes"] == ["api", "write_cluster"]
    assert token["created_by"] == "admin"
    # The value is shown once, in the panel printed before the JSON.
    with local_api.client() as client:
        stored = client.get(f"{TOKENS}/{token['uid']}").json()
    expires = datetime.fromisoformat(stored["expired_at"].replace("Z", "+00:00"))
    assert abs(expires - (datetime.now(timezone.utc) + timedelta(days=30))) < timedelta(days=1)
    assert "rct_" in created.stdout

    plain = run_bentoml_cli(local_api, tmp_path, "create", "cli-plain")
    assert plain.returncode == 0, plain.stderr
    assert "created successfully" in plain.stdout
    assert "Never" in plain.stdout

    listed = run_bentoml_cli(local_api, tmp_path, "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [t["name"] for t in json_in(listed.stdout)] == ["cli-plain", "cli-token"]
    assert all("token" not in t for t in json_in(listed.stdout))

    searched = run_bentoml_cli(local_api, tmp_path, "list", "--search", "plain", "-o", "json")
    assert searched.returncode == 0, searched.stderr
    assert [t["name"] for t in json_in(searched.stdout)] == ["cli-plain"]

    table = run_bentoml_cli(local_api, tmp_path, "list")
    assert table.returncode == 0, table.stderr
    assert "cli-token" in table.stdout and "cli-plain" in table.stdout

    got = run_bentoml_cli(local_api, tmp_path, "get", token["uid"], "-o", "json")
    assert got.returncode == 0, got.stderr
    assert json_in(got.stdout)["uid"] == token["uid"]
    got_table = run_bentoml_cli(local_api, tmp_path, "get", token["uid"])
    assert got_table.returncode == 0, got_table.stderr
    assert "from the cli" in got_table.stdout

    deleted = run_bentoml_cli(local_api, tmp_path, "delete", token["uid"])
    assert deleted.returncode == 0, deleted.stderr
    assert f"API token {token['uid']} deleted successfully" in deleted.stdout

    missing = run_bentoml_cli(local_api, tmp_path, "get", token["uid"])
    assert missing.returncode == 1
    assert "not found" in (missing.stdout + missing.stderr)

    with local_api.client() as client:
        names = [t["name"] for t in client.get(TOKENS).json()["items"]]
    assert names == ["cli-plain"]


def test_cli_errors(local_api: LocalApi, tmp_path: Path) -> None:
    unauthorized = run_bentoml_cli(local_api, tmp_path, "list", key="wrong")
    assert unauthorized.returncode == 1
    assert "401" in unauthorized.stderr + unauthorized.stdout

    invalid = run_bentoml_cli(local_api, tmp_path, "create", "Bad_Name")
    assert invalid.returncode == 1
    assert "DNS-1035" in invalid.stderr + invalid.stdout

    delete_missing = run_bentoml_cli(local_api, tmp_path, "delete", "tok_nope")
    assert delete_missing.returncode == 1


def test_server_saw_only_the_documented_routes(local_api: LocalApi) -> None:
    local_api.reset_stats()
    run_sdk(
        local_api,
        """
        t = api.create("routes")
        api.list()
        api.get(t.uid)
        api.delete(t.uid)
        """,
    )
    assert local_api.stats()["requests"] == {
        "POST /api/v1/api_tokens": 1,
        "GET /api/v1/api_tokens": 1,
        "GET /api/v1/api_tokens/{uid}": 1,
        "DELETE /api/v1/api_tokens/{uid}": 1,
    }
    assert httpx.get(local_api.url + TOKENS, headers=local_api.headers).status_code == 200
