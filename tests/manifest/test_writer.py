"""Tests of reconciler.manifest.writer: specs written as a manifest and read back by the
manifest loader unchanged, whatever the description (property-based), expiries exact to
the microsecond, comments that cannot break out, and the schema comment first."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.manifest.loader import load_manifests
from reconciler.manifest.spec import MAX_DESCRIPTION, SCOPES, Expiry, TokenSpec
from reconciler.manifest.writer import (
    ManifestEntry,
    UnwritableSpec,
    render_entry,
    render_manifest,
)

INSTANT = datetime(2027, 2, 28, 21, 24, 30, 123456, tzinfo=timezone.utc)


def read_back(text: str, tmp_path: Path) -> dict[str, TokenSpec]:
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    return load_manifests([path]).tokens


TRICKY = [
    'He said "hi"\nand left',
    "it's: #not a comment",
    "yes",
    "null",
    "~",
    "- item",
    "  lead and trail  ",
    "a\n \nb",
    "line\n",
    "ünïcødé ☃ \u2028 separator",
    "\x00\x07 control",
    "tab\there",
    "@at *star &anchor !tag %percent",
    "'",
    '"',
    "{x: y}",
    "[a, b]",
    "a\r\nb",
    "\ufeffbom",
    "0o17",
    "1e3",
    "2027-01-01",
    "x" * MAX_DESCRIPTION,
]


def test_tricky_descriptions_and_expiries_read_back_unchanged(tmp_path: Path) -> None:
    expiries = [
        Expiry("at", at=INSTANT),
        Expiry("at", at=datetime(2027, 3, 31, tzinfo=timezone.utc)),
        Expiry.never(),
    ]
    entries = [
        ManifestEntry(
            TokenSpec(
                name=f"t{i}",
                description=text,
                scopes=frozenset({"api", "read_cluster"}),
                expires=expiries[i % 3],
            ),
            comment=[f"comment {i}"],
        )
        for i, text in enumerate(TRICKY)
    ]
    text = render_manifest(entries)
    assert read_back(text, tmp_path) == {e.spec.name: e.spec for e in entries}


def test_expiries_are_written_as_people_write_them() -> None:
    def expires_line(expires: Expiry) -> str:
        lines = render_entry(TokenSpec(name="t", expires=expires))
        return next(line.strip() for line in lines if "expires:" in line)

    assert expires_line(Expiry("at", at=INSTANT)) == "expires: 2027-02-28T21:24:30.123456Z"
    whole = INSTANT.replace(microsecond=0)
    assert expires_line(Expiry("at", at=whole)) == "expires: 2027-02-28T21:24:30Z"
    midnight = datetime(2027, 3, 31, tzinfo=timezone.utc)
    assert expires_line(Expiry("at", at=midnight)) == "expires: 2027-03-31"
    assert expires_line(Expiry.never()) == "expires: never"
    assert expires_line(Expiry.parse("90d")) == "expires: 90d"


def test_layout_schema_comment_header_and_comments(tmp_path: Path) -> None:
    spec = TokenSpec(
        name="ci",
        description="Deploys\nfrom CI",
        scopes=frozenset({"write_cluster", "api"}),
        rotate_before=timedelta(days=14),
        expires=Expiry.parse("90d"),
        overlap=timedelta(hours=1),
        deliver_to=("vault://secret/x",),
    )
    text = render_manifest(
        [ManifestEntry(spec, comment=["made by\nalice", "line two"])],
        schema_ref="../../schema/manifest.schema.json",
        header=["Exported"],
    )
    assert text.splitlines()[:4] == [
        "# yaml-language-server: $schema=../../schema/manifest.schema.json",
        "#",
        "# Exported",
        "tokens:",
    ]
    assert "  # made by\\x0aalice\n  # line two\n  - name: ci\n" in text
    assert "    description: |-\n      Deploys\n      from CI\n" in text
    assert "    scopes: [api, write_cluster]\n" in text
    back = read_back(text, tmp_path)["ci"]
    assert back == spec and back.deliver_to == spec.deliver_to


def test_no_entries_is_an_empty_list() -> None:
    assert render_manifest([]).endswith("tokens: []\n")


def test_a_description_yaml_cannot_carry_is_refused_or_left_out() -> None:
    spec = TokenSpec(name="bad", description="lone \ud800 surrogate")
    with pytest.raises(UnwritableSpec, match="token bad"):
        render_manifest([ManifestEntry(spec)])
    left: list[ManifestEntry] = []
    good = ManifestEntry(TokenSpec(name="good"))
    text = render_manifest([ManifestEntry(spec), good], on_unwritable=left.append)
    assert [e.spec.name for e in left] == ["bad"]
    assert "name: good" in text and "name: bad" not in text


# Text a JSON API may send: any code point but lone surrogates (which UTF-8 cannot hold).
_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=MAX_DESCRIPTION // 4)


@settings(max_examples=300, deadline=None)
@given(
    description=_TEXT,
    scopes=st.sets(st.sampled_from(SCOPES), min_size=1),
    micro=st.integers(0, 999_999),
)
def test_any_description_reads_back_unchanged(
    description: str, scopes: set[str], micro: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    spec = TokenSpec(
        name="t",
        description=description,
        scopes=frozenset(scopes),
        expires=Expiry("at", at=INSTANT.replace(microsecond=micro)),
    )
    text = render_manifest([ManifestEntry(spec, comment=[description])])
    assert read_back(text, tmp_path_factory.mktemp("w")) == {"t": spec}
