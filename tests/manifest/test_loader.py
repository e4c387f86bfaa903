"""Tests for manifest loading: valid forms, every error's file/line/fix, scale, schema."""

from __future__ import annotations

import importlib
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import FIXTURES, REPO
from support.workspace import Workspace, token

from reconciler.errors import ManifestError, Problem
from reconciler.manifest import loader as manifest_module
from reconciler.manifest.loader import Manifests, load_manifests
from reconciler.manifest.schema import manifest_json_schema, render_json_schema
from reconciler.manifest.spec import NAME_PATTERN, SCOPES, Expiry, TokenSpec

# The tests' own copy: users edit manifests/example.yaml (e2e/test_example_manifests.py
# checks that one).
EXAMPLE = FIXTURES / "example.yaml"
SCHEMA_FILE = REPO / "schema" / "manifest.schema.json"


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


# ---------------------------------------------------------------- valid manifests


def test_full_token(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        """\
tokens:
  - name: ci-deployer
    description: Deploys bentos from CI
    scopes: [api, write_cluster]
    expires: 90d
    rotate_before: 14d
""",
    )
    result = load_manifests([path])
    assert result.tokens == {
        "ci-deployer": TokenSpec(
            name="ci-deployer",
            description="Deploys bentos from CI",
            scopes=frozenset({"api", "write_cluster"}),
            expires=Expiry("duration", duration=timedelta(days=90)),
            rotate_before=timedelta(days=14),
        )
    }
    assert result.files == [path]
    assert result.locations == {"ci-deployer": (str(path), 2)}


def test_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "tokens:\n  - name: a\n    scopes: [api]\n")
    spec = load_manifests([path]).tokens["a"]
    assert spec.description == ""
    assert spec.expires == Expiry.never()
    assert spec.rotate_before is None


def test_scopes_are_a_set(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        "tokens:\n  - name: a\n    scopes: [write_cluster, api, api]\n"
        "  - name: b\n    scopes:\n      - api\n      - write_cluster\n",
    )
    tokens = load_manifests([path]).tokens
    assert tokens["a"].scopes == tokens["b"].scopes == frozenset({"api", "write_cluster"})


def test_rotate_before_with_fixed_date(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        "tokens:\n  - name: a\n    scopes: [api]\n    expires: 2027-01-31\n    rotate_before: 1w\n",
    )
    assert load_manifests([path]).tokens["a"].rotate_before == timedelta(weeks=1)


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "# only a comment\n", "---\n", "tokens: []\n", "tokens:\n", "tokens: # soon\n"],
)
def test_empty_manifests_give_no_tokens(tmp_path: Path, text: str) -> None:
    result = load_manifests([write(tmp_path, "m.yaml", text)])
    assert result.tokens == {}
    assert result.locations == {}


def test_no_paths_and_empty_dir(tmp_path: Path) -> None:
    assert load_manifests([]).tokens == {}
    assert load_manifests([]).files == []
    result = load_manifests([tmp_path])
    assert result == Manifests(tokens={}, files=[], digest=result.digest, locations={})


def test_directory_recursion_sorting_and_skips(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", "tokens:\n  - name: b\n    scopes: [api]\n")
    write(tmp_path, "a/z.yml", "tokens:\n  - name: z\n    scopes: [api]\n")
    write(tmp_path, "a/c.yaml", "tokens:\n  - name: c\n    scopes: [api]\n")
    write(tmp_path, "a/deeper/d.YAML.yaml", "tokens:\n  - name: d\n    scopes: [api]\n")
    # Not manifests: other extensions, hidden files and hidden directories (.github).
    write(tmp_path, "README.md", "not yaml: [")
    write(tmp_path, "notes.txt", "tokens: 1")
    write(tmp_path, ".hidden.yaml", "tokens: 1")
    write(tmp_path, ".github/workflows/ci.yml", "on: push\njobs: {}\n")
    result = load_manifests([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in result.files] == [
        "a/c.yaml",
        "a/deeper/d.YAML.yaml",
        "a/z.yml",
        "b.yaml",
    ]
    assert list(result.tokens) == ["b", "c", "d", "z"]
    assert result.locations["z"] == (str(tmp_path / "a" / "z.yml"), 2)


def test_explicit_yml_file_and_file_given_twice(tmp_path: Path) -> None:
    path = write(tmp_path, "one.yml", "tokens:\n  - name: a\n    scopes: [api]\n")
    result = load_manifests([path, tmp_path, str(path)])
    assert result.files == [path]
    assert list(result.tokens) == ["a"]


def test_tokens_sorted_by_name_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, "1.yaml", "tokens:\n  - name: zed\n    scopes: [api]\n")
    second = write(
        tmp_path,
        "2.yaml",
        "tokens:\n  - name: mid\n    scopes: [api]\n  - name: alpha\n    scopes: [api]\n",
    )
    result = load_manifests([first, second])
    assert list(result.tokens) == ["alpha", "mid", "zed"]
    assert result.locations == {
        "alpha": (str(second), 4),
        "mid": (str(second), 2),
        "zed": (str(first), 2),
    }


def test_digest_tracks_content_and_paths(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "tokens:\n  - name: a\n    scopes: [api]\n")
    digest = load_manifests([path]).digest
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert load_manifests([path]).digest == digest
    # A comment changes no token, but the saved plan was made from other bytes.
    path.write_text("tokens:\n  - name: a\n    scopes: [api]  # x\n", encoding="utf-8")
    changed = load_manifests([path]).digest
    assert changed != digest
    moved = tmp_path / "n.yaml"
    path.rename(moved)
    assert load_manifests([moved]).digest != changed
    assert load_manifests([]).digest != changed


def test_utf8_bom_and_unicode_description(tmp_path: Path) -> None:
    text = "tokens:\n  - name: a\n    description: Déploiement ✓\n    scopes: [api]\n"
    path = write(tmp_path, "m.yaml", b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert load_manifests([path]).tokens["a"].description == "Déploiement ✓"


def test_example_manifest_loads() -> None:
    result = load_manifests([EXAMPLE])
    assert list(result.tokens) == ["ci-deployer", "grafana-reader", "quarterly-audit"]
    ci = result.tokens["ci-deployer"]
    assert ci.scopes == frozenset({"api", "write_cluster"})
    assert ci.expires == Expiry("duration", duration=timedelta(days=90))
    assert ci.rotate_before == timedelta(days=14)
    assert result.tokens["grafana-reader"].scopes == frozenset(
        {"read_organization", "read_cluster"}
    )


# ---------------------------------------------------------------- errors: file, line and fix


TOKEN = "tokens:\n  - name: a\n"  # the token under test starts on line 2
ERROR_CASES = [
    # (id, text, line, fragments that must appear in the message)
    ("unknown key", TOKEN + "    scope: [api]\n", 3, ["unknown key 'scope'", "'scopes'"]),
    (
        "unknown key, no close match",
        TOKEN + "    scopes: [api]\n    colour: red\n",
        4,
        ["unknown key 'colour'", "remove it", "name, description, scopes, expires"],
    ),
    (
        "unknown top-level key",
        "tokens: []\ntoken: []\n",
        2,
        ["unknown key 'token'", "valid keys are tokens"],
    ),
    (
        "description not a string",
        TOKEN + "    description: 42\n    scopes: [api]\n",
        3,
        ["description must be a string, not a number (42)", 'description: "42"'],
    ),
    (
        "description is a date",
        TOKEN + "    description: 2027-01-31\n    scopes: [api]\n",
        3,
        ["description must be a string", "quote it"],
    ),
    (
        "description empty",
        TOKEN + "    description:\n    scopes: [api]\n",
        3,
        ["description is empty", "remove the key"],
    ),
    (
        "name not a string",
        "tokens:\n  - scopes: [api]\n    name: 123\n",
        3,
        ["name must be a string", 'name: "123"'],
    ),
    ("scopes a string", TOKEN + "    scopes: api\n", 3, ["scopes must be a list", "scopes: [api]"]),
    (
        "unknown scope",
        TOKEN + "    scopes:\n      - api\n      - wrte_cluster\n",
        5,
        ["unknown scope 'wrte_cluster'", "did you mean 'write_cluster'", ", ".join(SCOPES)],
    ),
    (
        "unknown scope, no close match",
        TOKEN + "    scopes: [admin]\n",
        3,
        ["unknown scope 'admin'", "valid scopes are api, read_organization"],
    ),
    (
        "scope not a string",
        TOKEN + "    scopes:\n      - 7\n",
        4,
        ["a scope must be a string", "use one of api"],
    ),
    (
        "empty scopes",
        TOKEN + "    scopes: []\n",
        3,
        ["scopes is empty", "scopes: [api]"],
    ),
    ("missing scopes", TOKEN + "    description: x\n", 2, ["missing `scopes:`", "scopes: [api]"]),
    (
        "missing name",
        "tokens:\n  - description: x\n    scopes: [api]\n",
        2,
        ["missing `name:`", "name: my-token"],
    ),
    (
        "bad name",
        "tokens:\n  - name: CI_Deployer\n    scopes: [api]\n",
        2,
        ["invalid name 'CI_Deployer'", "DNS-1035", "'ci-deployer'"],
    ),
    (
        "name too long",
        "tokens:\n  - name: " + "a" * 64 + "\n    scopes: [api]\n",
        2,
        ["invalid name", "at most 63 characters"],
    ),
    (
        "bad duration",
        TOKEN + "    scopes: [api]\n    expires: 90x\n",
        4,
        ["'90x' is not a valid expiry", "90d", "2027-01-31"],
    ),
    (
        "zero duration",
        TOKEN + "    scopes: [api]\n    expires: 0d\n",
        4,
        ["'0d' is not a duration", "positive whole number"],
    ),
    (
        "impossible date",
        TOKEN + "    scopes: [api]\n    expires: 2027-02-30\n",
        4,
        ["'2027-02-30' is not a valid expiry", "2027-01-31"],
    ),
    (
        "expires a number",
        TOKEN + "    scopes: [api]\n    expires: 90\n",
        4,
        ["expires must be never, a duration", "not int"],
    ),
    (
        "expires a boolean",
        TOKEN + "    scopes: [api]\n    expires: no\n",
        4,
        ["expires must be never", "boolean"],
    ),
    (
        "bad rotate_before",
        TOKEN + "    scopes: [api]\n    expires: 90d\n    rotate_before: 2 days\n",
        5,
        ["'2 days' is not a duration", "12h, 90d or 2w"],
    ),
    (
        "rotate_before a number",
        TOKEN + "    scopes: [api]\n    expires: 90d\n    rotate_before: 14\n",
        5,
        ["rotate_before must be a duration", "14d"],
    ),
    (
        "rotate_before without expires",
        TOKEN + "    scopes: [api]\n    rotate_before: 14d\n",
        4,
        ["rotate_before needs expires", "expires: 90d", "remove rotate_before"],
    ),
    (
        "rotate_before with expires never",
        TOKEN + "    scopes: [api]\n    expires: never\n    rotate_before: 14d\n",
        5,
        ["rotate_before needs expires"],
    ),
    (
        "rotate_before not shorter than expires",
        TOKEN + "    scopes: [api]\n    expires: 7d\n    rotate_before: 2w\n",
        5,
        # The user's own spelling comes back (7d, not 1w): issue 14.
        ["rotate_before (2w) must be shorter than expires (7d)", "lengthen expires"],
    ),
    ("top-level list", "- name: a\n  scopes: [api]\n", 1, ["must be a mapping", "`tokens:`"]),
    ("top-level scalar", "hello\n", 1, ["must be a mapping with one key", "not a string"]),
    ("missing tokens", "{}\n", 1, ["missing the `tokens:` key"]),
    (
        "tokens a mapping",
        "tokens:\n  name: a\n  scopes: [api]\n",
        1,
        ["tokens must be a list, not a mapping", "- name:"],
    ),
    (
        "token not a mapping",
        "tokens:\n  - name: a\n    scopes: [api]\n  - just-a-name\n",
        4,
        ["each item of `tokens:` must be a mapping, not a string", "- name: my-token"],
    ),
    (
        "yaml syntax error",
        "tokens:\n  - name: a\n    scopes: [api\n  - name: b\n",
        4,
        ["YAML syntax error", "fix the YAML syntax"],
    ),
    (
        "bad indentation",
        "tokens:\n  - name: a\n   scopes: [api]\n",
        3,
        ["YAML syntax error", "fix the YAML syntax"],
    ),
    (
        "two documents",
        "tokens: []\n---\ntokens: []\n",
        2,
        ["more than one YAML document", "its own file"],
    ),
    (
        "duplicate key",
        TOKEN + "    scopes: [api]\n    scopes: [read_cluster]\n",
        4,
        ["duplicate key 'scopes' (first at line 3)", "remove one"],
    ),
    (
        "alias",
        "tokens:\n  - name: a\n    scopes: &s [api]\n  - name: b\n    scopes: *s\n",
        5,
        ["aliases (*s) are not supported", "write the value out"],
    ),
    (
        "python tag",
        TOKEN + "    scopes: [api]\n    description: !!python/name:os.system x\n",
        4,
        ["unsupported YAML tag", "remove the tag"],
    ),
    ("set tag", "tokens: !!set {a: null}\n", 1, ["unsupported YAML tag", "remove the tag"]),
    (
        "complex key",
        "tokens: []\n? [a, b]\n: c\n",
        2,
        ["cannot be a key", "plain name"],
    ),
    (
        "control character",
        "tokens:\n  - name: a\n    description: bell\x07\n    scopes: [api]\n",
        3,
        ["is not allowed in YAML", "remove it"],
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "fragments"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_error_names_file_line_and_fix(
    tmp_path: Path, text: str, line: int, fragments: list[str]
) -> None:
    problem = one_problem(tmp_path, text)
    assert problem.line == line, problem
    for fragment in fragments:
        assert fragment in problem.message, (fragment, problem.message)
    assert str(problem).startswith(f"{problem.file}:{line}: ")


def test_token_name_prefixes_entry_errors(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, TOKEN + "    scopes: [nope]\n")
    assert problem.message.startswith("token 'a': unknown scope")


def test_duplicate_name_across_files_names_both(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", "tokens:\n  - name: x\n    scopes: [api]\n")
    second = write(
        tmp_path,
        "b.yaml",
        "# more\ntokens:\n  - name: y\n    scopes: [api]\n  - name: x\n    scopes: [api]\n",
    )
    (problem,) = problems(tmp_path)
    assert (problem.file, problem.line) == (str(second), 5)
    assert f"duplicate token name 'x', also declared at {first}:2" in problem.message
    assert "rename or remove one" in problem.message


def test_duplicate_name_in_one_file(tmp_path: Path) -> None:
    problem = one_problem(
        tmp_path, "tokens:\n  - name: x\n    scopes: [api]\n  - name: x\n    scopes: [api]\n"
    )
    assert problem.line == 4
    assert f"also declared at {problem.file}:2" in problem.message


def test_duplicate_found_even_when_other_entries_are_invalid(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "tokens:\n  - name: x\n    scopes: [bogus]\n")
    write(tmp_path, "b.yaml", "tokens:\n  - name: x\n    scopes: [api]\n")
    found = problems(tmp_path)
    assert [(Path(p.file).name, p.line) for p in found] == [("a.yaml", 3), ("b.yaml", 2)]


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    (problem,) = problems(missing)
    assert problem.file == str(missing)
    assert problem.line is None
    assert "no such file or directory" in problem.message


def test_non_utf8(tmp_path: Path) -> None:
    problem = one_problem(
        tmp_path, b"tokens:\n  - name: a\n    description: caf\xe9\n    scopes: [api]\n"
    )
    assert problem.line == 3
    assert "not UTF-8" in problem.message
    assert "0xe9" in problem.message
    assert "save the file as UTF-8" in problem.message


def test_utf16_file_is_not_utf8(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, "tokens: []\n".encode("utf-16"))
    assert "not UTF-8" in problem.message


def test_file_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_module, "MAX_FILE_BYTES", 64)
    problem = one_problem(tmp_path, "tokens:\n" + "# padding\n" * 20)
    assert problem.line is None
    assert "larger than" in problem.message
    assert "split it" in problem.message


def test_default_size_cap_is_ten_mib() -> None:
    assert manifest_module.MAX_FILE_BYTES == 10 * 1024 * 1024


def test_every_problem_in_every_file_is_collected(tmp_path: Path) -> None:
    write(tmp_path, "1.yaml", "tokens:\n  - name: A\n    scopes: []\n    colour: red\n")
    write(tmp_path, "2.yaml", "tokens: [\n")
    write(tmp_path, "3.yaml", b"\xff")
    write(tmp_path, "4.yaml", "tokens:\n  - name: ok\n    scopes: [api]\n")
    found = problems(tmp_path, tmp_path / "missing")
    where = [(Path(p.file).name, p.line) for p in found]
    assert where == [
        ("missing", None),
        ("1.yaml", 2),
        ("1.yaml", 3),
        ("1.yaml", 4),
        ("2.yaml", 2),
        ("3.yaml", 1),
    ]
    with pytest.raises(ManifestError, match=r"6 problems in manifests"):
        load_manifests([tmp_path, tmp_path / "missing"])


@pytest.mark.env_connection
def test_manifest_names_leave_room_for_the_generation_suffix(ws: Workspace) -> None:
    ws.declare(token("a" * 61), token("ok", expires="1h30m", rotate_before="30m", overlap="5m"))
    result = ws.run("validate")
    assert result.exit_code == 1 and "at most 60" in result.stderr
    ws.declare(token("ok", expires="1h30m", rotate_before="90m"))
    result = ws.run("validate")
    assert result.exit_code == 1 and "rotate_before (90m) must be shorter" in result.stderr


# ---------------------------------------------------------------- scale and fuzz


def test_ten_thousand_tokens_load_with_exact_locations(tmp_path: Path) -> None:
    lines = ["tokens:"]
    for index in range(10_000):
        lines += [
            f"  - name: token-{index}",
            f"    description: Token number {index}",
            "    scopes: [api, write_cluster]",
            "    expires: 90d",
            "    rotate_before: 14d",
        ]
    path = write(tmp_path, "big.yaml", "\n".join(lines) + "\n")
    result = load_manifests([path])
    # Scale correctness only; load time is measured by bench/, not asserted here.
    assert len(result.tokens) == 10_000
    assert result.locations["token-9999"] == (str(path), 2 + 5 * 9999)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet=st.sampled_from(list("tokens:-[]{}&*!|>'\"#\n ,?abc123_")), max_size=200))
def test_arbitrary_text_only_ever_raises_manifest_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "fuzz.yaml", text)
    try:
        load_manifests([path])
    except ManifestError as error:
        assert error.problems
        assert all(p.file == str(path) for p in error.problems)


# ---------------------------------------------------------------- JSON schema


def test_committed_schema_matches_the_models() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == render_json_schema(), (
        "schema/manifest.schema.json is stale: regenerate it with "
        "python -c 'from reconciler.manifest.schema import render_json_schema as r; "
        'open("schema/manifest.schema.json", "w").write(r())\''
    )
    assert json.loads(SCHEMA_FILE.read_text(encoding="utf-8")) == manifest_json_schema()


def test_schema_structure() -> None:
    schema = manifest_json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["type"] == "object"
    assert schema["required"] == ["tokens"]
    assert schema["additionalProperties"] is False
    token = schema["$defs"]["TokenEntry"]
    assert token["additionalProperties"] is False
    assert token["required"] == ["name", "scopes"]
    properties = token["properties"]
    assert set(properties) == {
        "name",
        "description",
        "scopes",
        "expires",
        "rotate_before",
        "overlap",
        "deliver_to",
    }
    for prop in [*properties.values(), schema["properties"]["tokens"]]:
        assert prop["description"]
    assert properties["name"]["pattern"] == NAME_PATTERN.pattern
    assert properties["scopes"]["items"]["enum"] == list(SCOPES)
    assert properties["scopes"]["minItems"] == 1
    assert properties["expires"]["default"] == "never"


def _schema_accepts(schema: dict[str, object], data: object) -> bool:
    """A tiny check of the parts of the schema a manifest exercises (no jsonschema here)."""
    defs = schema["$defs"]
    assert isinstance(defs, dict)
    token_schema = defs["TokenEntry"]["properties"]
    if not isinstance(data, dict) or set(data) != {"tokens"}:
        return False
    for entry in data["tokens"] or []:
        if not isinstance(entry, dict) or not set(entry) <= set(token_schema):
            return False
        if not re.search(token_schema["name"]["pattern"], entry.get("name", "")):
            return False
        scopes = entry.get("scopes", [])
        if not scopes or any(s not in token_schema["scopes"]["items"]["enum"] for s in scopes):
            return False
    return True


def test_schema_accepts_example_and_rejects_bad() -> None:
    try:
        # Imported by name so mypy does not need it: it is not a dependency of the project.
        jsonschema: Any = importlib.import_module("jsonschema")
    except ImportError:
        jsonschema = None
    import yaml

    schema = manifest_json_schema()
    example = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    example["tokens"][2]["expires"] = str(example["tokens"][2]["expires"])  # JSON has no dates
    bad = {"tokens": [{"name": "Bad_Name", "scopes": ["root"], "colour": 1}]}
    if jsonschema is not None:  # pragma: no cover - not installed in the dev venv
        jsonschema.validate(example, schema)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    assert _schema_accepts(schema, example)
    assert not _schema_accepts(schema, bad)
