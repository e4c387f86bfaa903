"""The validate and schema use cases: manifests checked offline, and their JSON Schema."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Validation:
    """Manifests that passed every check: how many tokens in how many files, and warnings
    that do not fail validation (a fixed expiry that has passed)."""

    tokens: int
    files: int
    warnings: tuple[str, ...]


def validate(paths: Sequence[str]) -> Validation:
    """Every manifest check, offline (ManifestError with every problem otherwise)."""
    from reconciler.manifest.loader import past_expiries
    from reconciler.operations.plan import load_manifests
    from reconciler.util.times import utcnow

    manifests = load_manifests(paths)
    warnings = tuple(past_expiries(manifests, utcnow()))
    return Validation(len(manifests.tokens), len(manifests.files), warnings)


def manifest_schema() -> str:
    """The JSON Schema of a manifest, as committed in schema/manifest.schema.json."""
    from reconciler.manifest.loader import render_json_schema

    return render_json_schema()
