"""The validate and schema use cases: manifests checked offline, and their JSON Schema."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.defaults import MANIFESTS
from reconciler.errors import ManifestError
from reconciler.manifest.loader import load_manifests, past_expiries
from reconciler.manifest.schema import render_json_schema
from reconciler.util.times import utcnow


@dataclass(frozen=True)
class Validation:
    """Manifests that passed every check: how many tokens in how many files, and warnings
    that do not fail validation (a fixed expiry that has passed)."""

    tokens: int
    files: int
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": VALIDATE_FORMAT_VERSION,
            "valid": True,
            "tokens": self.tokens,
            "files": self.files,
            "warnings": list(self.warnings),
            "problems": [],
        }


#: Version of `validate --format json`; fields are only ever added.
VALIDATE_FORMAT_VERSION = 1


def problems_document(error: ManifestError) -> dict[str, Any]:
    """`validate --format json` for invalid manifests: every problem with its file and line."""
    return {
        "format_version": VALIDATE_FORMAT_VERSION,
        "valid": False,
        "warnings": [],
        "problems": [
            {"file": p.file, "line": p.line, "message": p.message} for p in error.problems
        ],
    }


def validate(paths: Sequence[str]) -> Validation:
    """Every manifest check, offline (ManifestError with every problem otherwise)."""
    manifests = load_manifests(tuple(paths) or MANIFESTS)
    warnings = tuple(past_expiries(manifests, utcnow()))
    return Validation(len(manifests.tokens), len(manifests.files), warnings)


def manifest_schema() -> str:
    """The JSON Schema of a manifest, as committed in schema/manifest.schema.json."""
    return render_json_schema()
