"""What the tests share: the servers they start, the CLI runners, the workspace and the leak scan.

Importable as ``support`` from every test folder: pyproject.toml puts ``tests/`` on the
path (``pythonpath``), and test modules are imported by path (``--import-mode=importlib``),
so test files in different folders may share a name.
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
# Test data: the tests' own copy of the example manifest, and the plan snapshots.
FIXTURES = TESTS / "fixtures"
SNAPSHOTS = TESTS / "snapshots"
