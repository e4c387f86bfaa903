"""A new value on its way to destinations, as the exec and deliver_all tests make it."""

from __future__ import annotations

import secrets

from reconciler.destinations.base import Delivery
from support.leaks import REGISTRY


def new_delivery(expires_at: str | None = None) -> Delivery:
    """A delivery of a fresh value (looked for by the leak scan) of token ci-deployer, live
    under a generation's name."""
    value = "rct_" + secrets.token_urlsafe(32)
    REGISTRY.add_secret(value, "destination-test-value")
    return Delivery(
        name="ci-deployer",
        live_name="ci-deployer-7f3a",
        uid="tok_" + secrets.token_hex(10),
        expires_at=expires_at,
        value=value,
    )


def error_text(exc: BaseException, delivery: Delivery) -> str:
    """The error's text, recorded for the leak scan; it must not hold the value."""
    text = str(exc)
    REGISTRY.record("destination error", text)
    assert delivery.value not in text
    return text
