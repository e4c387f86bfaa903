"""exec: destinations run real /bin/sh commands; deliver_all orders and undoes destinations.

A command gets the value on stdin (no newline) and the token's fields in its
environment; a nonzero exit and a hang (killed with its whole process group at the
timeout) are delivery failures; its output is passed on and put in errors with the value
masked. deliver_all runs commands after every other destination and undoes the others
when one fails.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Collection
from pathlib import Path

import pytest
from support.leaks import REGISTRY

from reconciler.destinations import (
    Delivery,
    FileDestination,
    check_all,
    deliver_all,
    parse_destination,
)
from reconciler.destinations.base import Undo
from reconciler.destinations.exec import ExecDestination
from reconciler.errors import (
    DeliveryAbortedError,
    DeliveryFailedError,
    DestinationCheckError,
    UndoFailedError,
)


def new_delivery(expires_at: str | None = None) -> Delivery:
    value = "rct_" + secrets.token_urlsafe(32)
    REGISTRY.add_secret(value, "destination-test-value")
    return Delivery(
        name="ci-deployer",
        live_name="ci-deployer-7f3a",
        uid="tok_" + secrets.token_hex(10),
        expires_at=expires_at,
        value=value,
    )


def error_text(exc: BaseException, delivery: Delivery) -> str:
    text = str(exc)
    REGISTRY.record("destination error", text)
    assert delivery.value not in text
    return text


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


# ---------------------------------------------------------------------------- deliver_all


class Recorder:
    """A reversible destination that records deliveries and undos in a shared log."""

    irreversible = False

    def __init__(self, label: str, log: list[str], *, fail: bool = False) -> None:
        self.label, self.log, self.fail = label, log, fail

    def describe(self) -> str:
        return self.label

    def check(self, names: Collection[str] = ()) -> None:
        self.log.append(f"check {self.label}")

    def deliver(self, delivery: Delivery) -> Undo:
        if self.fail:
            raise DeliveryFailedError(self.label, "refused")
        self.log.append(f"deliver {self.label}")
        return lambda: self.log.append(f"undo {self.label}")


def test_commands_run_after_every_other_destination(tmp_path: Path) -> None:
    log: list[str] = []
    trail = tmp_path / "trail"
    command = ExecDestination(f"cat >/dev/null; echo exec >> {trail}")
    sink: dict[str, str] = {}

    def add(name: str, value: str) -> None:
        sink[name] = value
        with trail.open("a") as out:
            out.write("file\n")

    delivery = new_delivery()
    deliver_all([command, FileDestination("new.json", add), Recorder("store", log)], delivery)
    assert trail.read_text() == "file\nexec\n"
    assert log == ["deliver store"] and sink == {"ci-deployer": delivery.value}


def test_failure_undoes_the_others_newest_first_and_skips_commands(tmp_path: Path) -> None:
    log: list[str] = []
    ran = tmp_path / "ran"
    destinations = [
        ExecDestination(f"cat > /dev/null; touch {ran}"),
        Recorder("vault://secret/a", log),
        Recorder("aws-sm://b", log),
        Recorder("vault://secret/c", log, fail=True),
    ]
    delivery = new_delivery()
    with pytest.raises(DeliveryAbortedError) as caught:
        deliver_all(destinations, delivery)
    assert log == [
        "deliver vault://secret/a",
        "deliver aws-sm://b",
        "undo aws-sm://b",
        "undo vault://secret/a",
    ]
    assert not ran.exists()  # the command never ran, so nothing is beyond recall
    assert str(caught.value) == (
        "vault://secret/c: refused; put back: aws-sm://b, vault://secret/a"
    )


def test_second_command_failing_names_the_first_as_not_undoable(tmp_path: Path) -> None:
    log: list[str] = []
    delivery = new_delivery()
    with pytest.raises(DeliveryAbortedError) as caught:
        deliver_all(
            [ExecDestination("cat >/dev/null"), ExecDestination("exit 2"), Recorder("s", log)],
            delivery,
        )
    text = error_text(caught.value, delivery)
    assert text == (
        "exec:exit 2: exited with status 2; put back: s; "
        "already ran and cannot be undone: exec:cat >/dev/null"
    )


def test_an_undo_that_fails_is_named_and_the_rest_still_run() -> None:
    log: list[str] = []

    class Stuck(Recorder):
        def deliver(self, delivery: Delivery) -> Undo:
            def undo() -> None:
                raise UndoFailedError(self.label, "putting back: permission denied")

            return undo

    destinations = [Recorder("a", log), Stuck("b", log), Recorder("c", log, fail=True)]
    with pytest.raises(DeliveryAbortedError) as caught:
        deliver_all(destinations, new_delivery())
    assert log == ["deliver a", "undo a"]
    assert [str(e) for e in caught.value.undo_failures] == ["b: putting back: permission denied"]
    assert str(caught.value).endswith(
        "put back: a; could not be put back: b: putting back: permission denied"
    )


def test_an_unexpected_exception_still_undoes_and_propagates() -> None:
    log: list[str] = []

    class Broken(Recorder):
        def deliver(self, delivery: Delivery) -> Undo:
            raise KeyError("VersionId")

    with pytest.raises(KeyError):
        deliver_all([Recorder("a", log), Broken("b", log)], new_delivery())
    assert log == ["deliver a", "undo a"]


def test_check_all_checks_every_destination() -> None:
    log: list[str] = []
    check_all([Recorder("a", log), Recorder("b", log)], {"ci-deployer"})
    assert log == ["check a", "check b"]
