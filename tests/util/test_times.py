"""Times and durations (reconciler.util.times): the duration grammar, its spellings, and
instants in UTC."""

from __future__ import annotations

import json
from pathlib import Path

from support.cli import run_cli_subprocess
from support.local_api import LocalApi


def test_durations_keep_the_users_spelling(local_api: LocalApi, tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    manifest = tmp_path / "manifests" / "t.yaml"
    env = {"BENTO_CLOUD_API_ENDPOINT": local_api.url, "BENTO_CLOUD_API_KEY": local_api.admin_key}
    manifest.write_text(
        "tokens:\n  - name: spelt\n    expires: 14d\n    rotate_before: 7d\n    scopes: [api]\n",
        encoding="utf-8",
    )
    planned = run_cli_subprocess("plan", "--format", "json", cwd=tmp_path, env=env)
    assert planned.exit_code == 0, planned
    after = json.loads(planned.stdout)["actions"][0]["after"]
    assert (after["expires"], after["rotate_before"]) == ("14d", "7d")
    manifest.write_text(
        "tokens:\n  - name: spelt\n    expires: 7d\n    rotate_before: 14d\n    scopes: [api]\n",
        encoding="utf-8",
    )
    invalid = run_cli_subprocess("validate", cwd=tmp_path)
    assert invalid.exit_code == 1, invalid
    assert "rotate_before (14d)" in invalid.stderr and "(7d)" in invalid.stderr, invalid
    assert "2w" not in invalid.stderr
