"""ApiToken: one BentoCloud API token as the wire describes it (docs/wire-format.md section 4)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reconciler.errors import InvalidResponseError
from reconciler.util.times import as_utc


class LabelItem(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    key: str
    value: str


class User(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    email: str = ""
    first_name: str = ""
    last_name: str = ""


class Organization(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    uid: str
    name: str
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None
    resource_type: str = "organization"
    labels: list[LabelItem] = Field(default_factory=list)
    description: str = ""


def _blank_to_none(value: object) -> object:
    # BentoML's client reads "" as None for every datetime field; so do we.
    return None if value == "" else value


class ApiToken(BaseModel):
    """A token as the API returns it. ``token`` (the secret) is set only on create and is
    kept out of ``repr()``, ``str()`` and ``to_dict()`` unless asked for."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    uid: str
    name: str
    resource_type: str = "api_token"
    labels: list[LabelItem] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None
    description: str = ""
    scopes: list[str] = Field(default_factory=list)
    user: User | None = None
    organization: Organization | None = None
    expired_at: datetime | None = None
    last_used_at: datetime | None = None
    is_expired: bool = False
    is_api_token: bool = True
    is_organization_token: bool = False
    is_global_access: bool = False
    token: str | None = Field(default=None, repr=False, exclude=True)

    @field_validator(
        "created_at", "updated_at", "deleted_at", "expired_at", "last_used_at", mode="before"
    )
    @classmethod
    def _dates(cls, value: object) -> object:
        return _blank_to_none(value)

    @field_validator("created_at", "updated_at", "deleted_at", "expired_at", "last_used_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value) if value is not None else None

    @field_validator("description", mode="before")
    @classmethod
    def _description(cls, value: object) -> object:
        return "" if value is None else value

    @property
    def created_by(self) -> str | None:
        """The name of the user who created the token (as BentoML's ApiToken adds it)."""
        return self.user.name if self.user is not None else None

    @classmethod
    def from_schema(cls, data: object) -> ApiToken:
        """Build from a decoded wire object; a malformed one is an InvalidResponseError."""
        if not isinstance(data, dict):
            raise InvalidResponseError(
                f"expected a token object from the API, got {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            fields = ", ".join(
                ".".join(str(p) for p in err["loc"]) or "(body)" for err in exc.errors()[:5]
            )
            raise InvalidResponseError(
                f"the API returned a token object reconciler cannot read (bad fields: {fields})"
            ) from None

    def to_dict(self, *, include_secret: bool = False) -> dict[str, Any]:
        """JSON-friendly dict: datetimes as ISO strings, ``created_by`` added, no secret
        unless ``include_secret``."""
        data = self.model_dump(mode="json")
        data["created_by"] = self.created_by
        if include_secret and self.token is not None:
            data["token"] = self.token
        return data

    def to_yaml(self, *, include_secret: bool = False) -> str:
        return yaml.safe_dump(self.to_dict(include_secret=include_secret), sort_keys=False)

    def __str__(self) -> str:
        return f"ApiToken(name={self.name!r}, uid={self.uid!r})"
