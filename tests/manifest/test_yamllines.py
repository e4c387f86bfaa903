"""Safe, bounded YAML with lines (reconciler.manifest.yamllines): aliases, nesting and
tabs refused with the line, never a crash."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.cli import run_cli_subprocess

from reconciler.errors import ManifestError, Problem
from reconciler.manifest.loader import load_manifests
from reconciler.manifest.yamllines import MAX_DEPTH, load_yaml


def write(base: Path, name: str, text: str | bytes) -> Path:
    path = base / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def problems(*paths: Path | str) -> list[Problem]:
    with pytest.raises(ManifestError) as caught:
        load_manifests(list(paths))
    return caught.value.problems


def one_problem(tmp_path: Path, text: str | bytes, name: str = "m.yaml") -> Problem:
    path = write(tmp_path, name, text)
    found = problems(path)
    assert len(found) == 1, found
    assert found[0].file == str(path)
    return found[0]


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
tokens: *i
"""


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    started = time.perf_counter()
    problem = one_problem(tmp_path, BILLION_LAUGHS)
    assert time.perf_counter() - started < 1.0
    assert problem.line == 2
    assert "aliases (*a) are not supported" in problem.message


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        "tokens: " + "[" * 500 + "]" * 500,
        "".join("  " * depth + f"k{depth}:\n" for depth in range(2000)),
        "".join("  " * depth + "-\n" for depth in range(2000)),
    ],
    ids=["flow-100k", "flow-500", "block-mappings", "block-lists"],
)
def test_deep_nesting_is_a_problem_not_a_crash(tmp_path: Path, text: str) -> None:
    problem = one_problem(tmp_path, text)
    assert problem.line is not None
    assert "nested" in problem.message or "YAML syntax error" in problem.message


def test_depth_cap_reports_the_line() -> None:
    text = "".join("  " * depth + f"k{depth}:\n" for depth in range(MAX_DEPTH + 5))
    value, found = load_yaml(text, "deep.yaml")
    assert value is None
    assert [(p.line, "nested more than" in p.message) for p in found] == [(MAX_DEPTH + 1, True)]


def test_tab_indentation_is_named(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    bad = tmp_path / "manifests" / "t.yaml"
    bad.write_text("tokens:\n\t- name: tabbed\n", encoding="utf-8")
    result = run_cli_subprocess("validate", cwd=tmp_path)
    assert result.exit_code == 1, result
    assert "t.yaml:2" in result.stderr
    assert "tabs are not allowed for indentation, use spaces" in result.stderr
    assert "cannot start any token" not in result.stderr
    assert bad.read_text(encoding="utf-8") == "tokens:\n\t- name: tabbed\n"
