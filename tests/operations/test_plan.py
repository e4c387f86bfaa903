"""The plan use case refusing what it cannot honestly plan, through the real CLI."""

from __future__ import annotations

import pytest
from support.checks import ok
from support.workspace import Workspace, token


@pytest.mark.env_connection
def test_past_fixed_expiry_warns_in_validate_and_is_refused_by_plan(ws: Workspace) -> None:
    ws.declare(token("old", expires="2020-01-01"))
    checked = ok(ws.run("validate"))
    assert "Warning:" in checked.stderr and "2020-01-01" in checked.stderr
    refused = ws.run("plan")
    assert refused.exit_code == 1
    assert "tokens.yaml:2: token old" in refused.stderr and "born expired" in refused.stderr
    assert not ws.state_path.exists()
