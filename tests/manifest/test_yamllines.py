"""Safe, bounded YAML with lines (reconciler.manifest.yamllines): every key and list item
keeps its line; aliases, tags, nesting, tabs and second documents are refused with the
line, never a crash."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import pytest
from support.cli import run_cli_subprocess

from reconciler.errors import ManifestError, Problem
from reconciler.manifest.loader import load_manifests
from reconciler.manifest.yamllines import MAX_DEPTH, YList, YMap, load_yaml


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


# ---------------------------------------------------------------- load_yaml directly


def test_every_key_and_list_item_keeps_its_line() -> None:
    text = (
        "# a comment\n"
        "tokens:\n"
        "  - name: ci-deployer\n"
        "    scopes:\n"
        "      - api\n"
        "      - write_cluster\n"
        "  - {name: reader, scopes: [read_cluster]}\n"
    )
    value, problems = load_yaml(text, "m.yaml")
    assert problems == []
    assert isinstance(value, YMap) and value.line == 2 and value.key_lines == {"tokens": 2}
    tokens = value["tokens"]
    assert isinstance(tokens, YList) and tokens.item_lines == [3, 7]
    first, second = tokens
    assert first.key_lines == {"name": 3, "scopes": 4}
    assert first["scopes"] == ["api", "write_cluster"] and first["scopes"].item_lines == [5, 6]
    assert second.line == 7 and second.key_lines == {"name": 7, "scopes": 7}


def test_scalars_are_read_as_yaml_reads_them_but_keys_stay_text() -> None:
    value, problems = load_yaml(
        "a: 12\nb: true\nc: 2027-01-31\nd: 2027-02-30\n'yes': x\n1: y\ne: null\n", "m.yaml"
    )
    assert problems == []
    assert value["a"] == 12 and value["b"] is True and value["e"] is None
    assert value["c"] == date(2027, 1, 31)
    assert value["d"] == "2027-02-30"  # not a date: kept as written for the field to report
    assert value["yes"] == "x" and value["1"] == "y"


def test_a_duplicate_key_is_reported_and_the_last_value_wins() -> None:
    value, problems = load_yaml("name: a\nscopes: [api]\nname: b\n", "m.yaml")
    assert value == {"name": "b", "scopes": ["api"]}
    assert value.key_lines["name"] == 3
    assert [(p.file, p.line) for p in problems] == [("m.yaml", 3)]
    assert "duplicate key 'name' (first at line 1)" in problems[0].message


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("a: 1\n---\nb: 2\n", 2, "more than one YAML document"),
        ("tokens: !!python/object:os.system x\n", 1, "unsupported YAML tag"),
        ("tokens: !custom [a]\n", 1, "unsupported YAML tag '!custom'"),
        ("? [a, b]\n: c\n", 1, "a mapping or list cannot be a key"),
        ("a: &x 1\nb: *x\n", 2, "YAML aliases (*x) are not supported"),
        ("a: [1, 2\nb: 3\n", 2, "YAML syntax error at column"),
        ("a: 1\x00\n", 1, "is not allowed in YAML: remove it"),
    ],
    ids=["two-documents", "python-tag", "unknown-tag", "complex-key", "alias", "syntax", "nul"],
)
def test_what_is_refused_stops_the_load_with_its_line(text: str, line: int, fragment: str) -> None:
    value, problems = load_yaml(text, "m.yaml")
    assert value is None
    assert len(problems) == 1 and problems[0].line == line, problems
    assert fragment in problems[0].message, problems[0].message
