"""`reconciler import NAME UID`: adopt an existing live token into state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from reconciler.errors import PlanError, StateError
from reconciler.operations.plan import load_manifests
from reconciler.state.model import OwnedToken

if TYPE_CHECKING:
    from reconciler.manifest.spec import TokenSpec
    from reconciler.session import Session


def import_token(
    session: Session, name: str, uid: str, paths: Sequence[str], *, lock_timeout: float = 0.0
) -> str:
    """Record live token ``uid`` as the owned token ``name``, with the spec the manifests
    declare for it (under the state lock). The next plan then shows whether the live token
    matches that spec."""
    manifests = load_manifests(paths)
    with session.backend.lock("import", lock_timeout):
        return _import(session, manifests.tokens.get(name), name, uid, paths)


def _import(
    session: Session, spec: TokenSpec | None, name: str, uid: str, paths: Sequence[str]
) -> str:
    if spec is None:
        raise PlanError(
            f"{name} is not declared in the manifests ({', '.join(map(str, paths))}); declare "
            "it first, then import it"
        )
    state = session.read_state()
    if name in state.tokens:
        raise StateError(
            f"{name} is already owned (uid {state.tokens[name].uid}); "
            f"`reconciler state rm {name}` first if you mean to replace it"
        )
    holder = state.owner_of(uid)
    if holder is not None:
        raise StateError(f"token {uid} is already owned as {holder.name}")
    if uid in state.previous:
        previous = state.previous[uid]
        raise StateError(
            f"token {uid} is already owned as a previous generation of {previous.name}"
        )
    live = session.api.get(uid)
    if live is None:
        raise PlanError(f"token {uid} does not exist (or is not visible to this API key)")
    if live.name != name:
        raise PlanError(
            f"token {uid} is named {live.name!r}, not {name!r}; BentoCloud cannot rename "
            "tokens, so import it under its own name"
        )
    # Proven: a token someone already uses; its value is not ours to test.
    owned = OwnedToken(
        name=name,
        uid=uid,
        spec=spec,
        created_at=live.created_at,
        expired_at=live.expired_at,
        live_name=live.name,
    )
    session.backend.write(state.with_token(owned))
    return (
        f"Imported {name} ({uid}) into {session.backend.describe()}. Run `reconciler plan` to "
        "see whether it matches its manifest."
    )
