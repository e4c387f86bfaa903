"""States and owned tokens as tests build them, for backends, codecs and journals."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from reconciler.manifest.spec import Expiry, TokenSpec
from reconciler.state.model import OwnedToken, PendingCreate, State

CREATED = datetime(2026, 12, 1, tzinfo=timezone.utc)


def owned_token(name: str, uid: str | None = None) -> OwnedToken:
    """An owned token of scope api, ``uid`` by default derived from the name."""
    spec = TokenSpec(name, "", frozenset({"api"}))
    return OwnedToken(name=name, uid=uid or f"uid-{name}", spec=spec, created_at=CREATED)


ENDPOINT = "https://cloud.example.com"


def sample_state() -> State:
    """A state using every field, so a round trip proves each one is stored."""
    created = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
    state = State.new(ENDPOINT)
    state = state.with_token(
        OwnedToken(
            name="ci-deploy",
            uid="tok_abc123",
            spec=TokenSpec(
                name="ci-deploy",
                description="CI deploys",
                scopes=frozenset({"api", "read_cluster"}),
                expires=Expiry.parse("90d"),
                rotate_before=timedelta(days=7),
            ),
            created_at=created,
            expired_at=created + timedelta(days=90),
        )
    )
    state = state.with_token(
        OwnedToken(
            name="reader",
            uid="tok_def456",
            spec=TokenSpec(name="reader", expires=Expiry.parse("2027-01-31T00:00:00Z")),
            created_at=created,
            expired_at=None,
        )
    )
    return state.with_pending(PendingCreate(name="new-one", started_at=created))
