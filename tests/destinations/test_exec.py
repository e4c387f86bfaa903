"""exec: destinations run real /bin/sh commands: the value on stdin, the fields in the
environment, output masked, failures and hangs."""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

import pytest
from support.deliveries import error_text, new_delivery
from support.leaks import REGISTRY

from reconciler.destinations.exec import ExecDestination
from reconciler.destinations.parse import parse_destination
from reconciler.errors import DeliveryFailedError, DestinationCheckError


def test_command_gets_the_value_on_stdin_and_the_fields_in_its_environment(
    tmp_path: Path,
) -> None:
    out = tmp_path / "received"
    destination = parse_destination(
        f"exec:cat > {out}; env | grep ^RECONCILER_TOKEN_ | sort > {out}.env"
    )
    assert isinstance(destination, ExecDestination)
    delivery = new_delivery("2027-03-01T00:00:00Z")
    destination.check({"ci-deployer"})
    destination.deliver(delivery)
    assert out.read_bytes() == delivery.value.encode()  # exactly, no newline added
    assert (tmp_path / "received.env").read_text().splitlines() == [
        "RECONCILER_TOKEN_EXPIRES_AT=2027-03-01T00:00:00Z",
        "RECONCILER_TOKEN_LIVE_NAME=ci-deployer-7f3a",
        "RECONCILER_TOKEN_NAME=ci-deployer",
        f"RECONCILER_TOKEN_UID={delivery.uid}",
    ]


def test_command_inherits_the_environment_but_not_the_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api_key = "rca_" + secrets.token_urlsafe(32)
    REGISTRY.add_secret(api_key, "api-key")
    monkeypatch.setenv("BENTO_CLOUD_API_KEY", api_key)
    monkeypatch.setenv("GH_TOKEN", "ghp_for_the_command")
    out = tmp_path / "env"
    ExecDestination(f"env > {out}").deliver(new_delivery())
    seen = out.read_text()
    assert "GH_TOKEN=ghp_for_the_command" in seen and api_key not in seen
    assert "BENTO_CLOUD_API_KEY" not in seen


def test_never_expiring_token_has_an_empty_expiry(tmp_path: Path) -> None:
    out = tmp_path / "expiry"
    ExecDestination(f'printf "[%s]" "$RECONCILER_TOKEN_EXPIRES_AT" > {out}').deliver(new_delivery())
    assert out.read_text() == "[]"


def test_output_is_passed_on_and_logged_with_the_value_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []
    delivery = new_delivery()
    echoing = ExecDestination(
        'echo "stored $(cat) for $RECONCILER_TOKEN_NAME"', on_output=seen.append
    )
    echoing.deliver(delivery)
    assert seen == ["stored *** for ci-deployer\n"]
    with caplog.at_level(logging.INFO, logger="reconciler.destinations.exec"):
        ExecDestination('echo "got $(cat)"').deliver(delivery)
    assert [r.getMessage() for r in caplog.records] == ["got ***"]


def test_nonzero_exit_fails_with_its_last_line_masked() -> None:
    delivery = new_delivery()
    seen: list[str] = []
    failing = ExecDestination(
        'v=$(cat); echo "trying $v"; echo "gh: HTTP 403 for $v" >&2; exit 4', on_output=seen.append
    )
    with pytest.raises(DeliveryFailedError) as caught:
        failing.deliver(delivery)
    text = error_text(caught.value, delivery)
    assert text.startswith("exec:v=$(cat);")
    assert text.endswith("exited with status 4: gh: HTTP 403 for ***")
    assert seen == ["trying ***\ngh: HTTP 403 for ***\n"]


def test_hanging_command_is_killed_with_its_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    hanging = ExecDestination(f"sleep 300 & echo $! > {pid_file}; wait", timeout=1)
    started = time.monotonic()
    with pytest.raises(DeliveryFailedError, match="did not finish within 1 s; its process group"):
        hanging.deliver(new_delivery())
    assert time.monotonic() - started < 10
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child not yet reaped by its parent shell is a zombie: dead for our purpose.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def test_command_that_ignores_stdin_still_succeeds() -> None:
    ExecDestination("true").deliver(new_delivery())


def test_unparseable_command_fails_check_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(DestinationCheckError, match="cannot parse the command"):
        ExecDestination(f"touch {marker}; if then fi").check()
    assert not marker.exists()
