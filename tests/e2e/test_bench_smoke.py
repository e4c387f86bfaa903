"""bench/run.py --quick runs end to end and prints its tables, so the benchmarks cannot rot.

Only that it ran is checked: timings on a shared CI machine mean nothing. BentoML is not
needed (its row says "skipped").
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from support import REPO


def test_quick_bench_prints_every_table(tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    env = {k: v for k, v in os.environ.items() if k != "RECONCILER_BENTOML_PYTHON"}
    command = [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--no-bentoml"]
    result = subprocess.run(
        [*command, "--json", str(figures)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    headings = ("Machine: ", "plan: ", "adopt: ", "apply: ", "validate", "start-up", "targets")
    for heading in headings:
        assert heading in out, heading
    assert re.search(r"\|\s*reconciler p=1\s*\|\s*\d", out)
    assert re.search(r"\|\s*httpx loop p=1\s*\|\s*\d", out)
    assert re.search(r"\|\s*BentoML SDK serial loop\s*\|\s*skipped\s*\|", out)
    data = json.loads(figures.read_text())
    assert [row["tokens"] for row in data["plan"]] == [10, 40]
    assert all(row["requests"] >= 1 for row in data["plan"])
    assert [row["tokens"] for row in data["adopt"]] == [40]
