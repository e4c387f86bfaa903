"""The manifest schema: the pydantic models a manifest is validated with, and the JSON
Schema generated from them (schema/manifest.schema.json, for editors and pre-commit)."""

from __future__ import annotations

import difflib
import json
from datetime import timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
)

from reconciler.destinations.parse import parse_destination
from reconciler.errors import DestinationSyntaxError
from reconciler.manifest.spec import (
    MAX_DESCRIPTION,
    NAME_PATTERN,
    NAME_RULE,
    SCOPES,
    Expiry,
    TokenSpec,
)
from reconciler.manifest.yamllines import kind_of
from reconciler.util.text import clip
from reconciler.util.times import parse_duration

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


SCOPE_LIST = ", ".join(SCOPES)


# DNS-1035 allows 63; a new generation made while the old one lives is named NAME-N.
MAX_MANIFEST_NAME = 60


EXPIRES_FORMS = (
    "never, a duration (12h, 90d, 2w), a date (2027-01-31) or an ISO datetime "
    "(2027-01-31T12:00:00Z; UTC when no zone)"
)


def _check_scope(value: str) -> str:
    if value not in SCOPES:
        close = difflib.get_close_matches(value.lower(), SCOPES, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown scope {clip(value)}: {hint}valid scopes are {SCOPE_LIST}")
    return value


def parse_expires(value: object) -> Expiry:
    if isinstance(value, bool):
        # YAML 1.1 reads `no`/`off` as false; Expiry.parse would only say "not bool".
        raise ValueError(f"expires must be {EXPIRES_FORMS}, not a boolean ({value})")
    return Expiry.parse(value)


def parse_rotate_before(value: object) -> timedelta | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(
            f"rotate_before must be a duration such as 12h, 14d or 2w, not {kind_of(value)}"
        )
    return parse_duration(value)


def _parse_overlap(value: object) -> timedelta:
    if not isinstance(value, str):
        raise ValueError(
            f"overlap must be a duration such as 0s, 30m, 12h or 1d, not {kind_of(value)}"
        )
    return parse_duration(value, allow_zero=True)


def _check_destination(value: str) -> str:
    # Parsing talks to no store and imports no client: a typo fails validate, offline.
    try:
        parse_destination(value)
    except DestinationSyntaxError as exc:
        raise ValueError(f"deliver_to: {exc}") from None
    return value


DestinationText = Annotated[
    str,
    AfterValidator(_check_destination),
    WithJsonSchema({"type": "string", "minLength": 1}),
]


Scope = Annotated[
    str,
    AfterValidator(_check_scope),
    WithJsonSchema({"type": "string", "enum": list(SCOPES)}),
]


# Looser than the parser (unit order is not checked), which says what is wrong.
_DURATION_SCHEMA = {"type": "string", "pattern": r"^\s*(\d+[wdhms])+\s*$"}


ExpiresField = Annotated[
    Expiry,
    PlainValidator(parse_expires),
    WithJsonSchema(
        {
            "anyOf": [
                {"const": "never"},
                _DURATION_SCHEMA,
                {"type": "string", "format": "date"},
                {"type": "string", "format": "date-time"},
                {"type": "null"},
            ],
            "default": "never",
        }
    ),
]


RotateBeforeField = Annotated[
    timedelta | None,
    PlainValidator(parse_rotate_before),
    WithJsonSchema({"anyOf": [_DURATION_SCHEMA, {"type": "null"}], "default": None}),
]


OverlapField = Annotated[
    timedelta,
    PlainValidator(_parse_overlap),
    WithJsonSchema({**_DURATION_SCHEMA, "default": "0s"}),
]


class TokenEntry(BaseModel):
    """One `tokens:` item as written in a manifest."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, title="Token")

    name: str = Field(
        pattern=NAME_PATTERN.pattern,
        max_length=MAX_MANIFEST_NAME,
        description=(
            f"Unique name of the token across all manifests: {NAME_RULE}; in a manifest at "
            f"most {MAX_MANIFEST_NAME}, leaving room for the -N suffix of a later generation."
        ),
    )
    description: str = Field(
        default="", max_length=MAX_DESCRIPTION, description="Free text shown in BentoCloud."
    )
    scopes: list[Scope] = Field(
        min_length=1,
        description=(
            "What the token may do; order and duplicates do not matter. "
            f"One or more of: {SCOPE_LIST}."
        ),
    )
    expires: ExpiresField = Field(
        default_factory=Expiry.never,
        description=(
            f"When the token expires: {EXPIRES_FORMS}. A duration is a policy: new tokens "
            "get now + duration."
        ),
    )
    overlap: OverlapField = Field(
        default_factory=lambda: parse_duration("0s", allow_zero=True),
        description=(
            "How long the previous generation stays valid after a replacement delivered its "
            "successor's value (0s, 30m, 12h, 1d): consumers have that long to switch."
        ),
    )
    rotate_before: RotateBeforeField = Field(
        default=None,
        description=(
            "Replace the token when less than this duration (12h, 14d, 2w) remains before "
            "it expires. Needs expires."
        ),
    )
    deliver_to: list[DestinationText] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Where this token's new values go, replacing the run's --secrets-out / secrets: "
            "list: vault://MOUNT/PATH, aws-sm://PATH, exec:COMMAND or a file path."
        ),
    )

    def to_spec(self) -> TokenSpec:
        return TokenSpec(
            name=self.name,
            description=self.description,
            scopes=frozenset(self.scopes),
            expires=self.expires,
            rotate_before=self.rotate_before,
            overlap=self.overlap,
            deliver_to=tuple(self.deliver_to or ()),
        )


class ManifestFile(BaseModel):
    """A whole manifest file: a mapping with one key, `tokens`."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        title="reconciler manifest",
        json_schema_extra={
            "description": "BentoCloud API tokens declared for reconciler (one file of many)."
        },
    )

    tokens: list[TokenEntry] | None = Field(
        description="The tokens this file declares (names are unique across all files).",
    )


TOKEN_KEYS = tuple(TokenEntry.model_fields)


FILE_KEYS = tuple(ManifestFile.model_fields)


def manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema of one manifest file, generated from the validating models."""
    schema = ManifestFile.model_json_schema()
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def render_json_schema() -> str:
    """manifest_json_schema() as the exact text of schema/manifest.schema.json."""
    return json.dumps(manifest_json_schema(), indent=2) + "\n"
