"""`reconciler export`: a manifest for every live token that no manifest declares and
state does not own, so that the next plan adopts each one (the first step of a takeover).

with Session(SessionSettings(endpoint="local")) as session:
    exported = export_tokens(session, ExportRequest())
    print(exported.text)
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from reconciler.api.token import ApiToken
from reconciler.defaults import MANIFESTS
from reconciler.errors import ConfigError
from reconciler.manifest.loader import load_manifests
from reconciler.manifest.schema import MAX_MANIFEST_NAME
from reconciler.manifest.spec import MAX_DESCRIPTION, NAME_PATTERN, SCOPES, Expiry, TokenSpec
from reconciler.manifest.writer import (
    DEFAULT_SCHEMA_REF,
    ManifestEntry,
    render_manifest,
)
from reconciler.session import Session
from reconciler.state.model import State
from reconciler.util import atomicfile
from reconciler.util.text import clip, plain
from reconciler.util.times import format_time, utcnow

SCHEMA_FILE = Path("schema") / "manifest.schema.json"
_GENERATION = re.compile(r"^(?P<name>.+)-(?P<n>[2-9]|[1-9][0-9]+)$")


@dataclass(frozen=True)
class ExportRequest:
    """What to export: the manifests already written (default: manifests/, which need not
    exist yet), live tokens whose name contains ``search``, expired ones too or not."""

    paths: Sequence[str] = ()
    search: str | None = None
    include_expired: bool = False
    #: The file the manifest will replace (--out with --force): its tokens are not
    #: "declared", they are exported again.
    replacing: Path | None = None


@dataclass(frozen=True)
class Skipped:
    """A live token export leaves out, and why (a sentence with the fix)."""

    name: str
    uid: str
    reason: str

    def __str__(self) -> str:
        return f"skipped {plain(self.name)} ({plain(self.uid)}): {self.reason}"


@dataclass(frozen=True)
class Selection:
    """Which live tokens become manifest entries, and what happened to the others."""

    exported: tuple[ApiToken, ...]
    skipped: tuple[Skipped, ...]
    #: Live tokens state owns (current or previous generations): managed already.
    managed: int
    #: Expired tokens left out (``include_expired`` exports them).
    expired: int


@dataclass(frozen=True)
class Export:
    """The outcome: the selection, and the manifest text (None when nothing is exported)."""

    selection: Selection
    text: str | None
    entries: tuple[ManifestEntry, ...]


def is_expired(token: ApiToken, now: datetime) -> bool:
    return token.is_expired or (token.expired_at is not None and token.expired_at <= now)


def spec_of(token: ApiToken) -> TokenSpec:
    """The spec that adopts ``token`` as it is: same description and scopes, and its
    expiry as the exact instant (or never), which a plan compares to the second."""
    expires = Expiry("at", at=token.expired_at) if token.expired_at else Expiry.never()
    return TokenSpec(
        name=token.name,
        description=token.description,
        scopes=frozenset(token.scopes),
        expires=expires,
    )


def _recorded_names(state: State) -> dict[str, str]:
    """Live names state records -> the sentence saying whose they are."""
    names: dict[str, str] = {}
    for pending in state.pending.values():
        names[pending.live_name] = (
            f"the live name of an interrupted create of {pending.name}: a token of this name "
            "made then is an orphan whose value nobody received, which the next apply deletes"
        )
    for generation in state.previous.values():
        names[generation.live_name] = (
            f"the live name of a previous generation of {generation.name}, which state owns"
        )
    for name, owned in state.tokens.items():
        names[owned.live_name] = f"the live name of {name}'s current generation, which state owns"
    return names


def _generation_of(name: str, state: State) -> str | None:
    """The managed token ``name`` would be a generation of (NAME-N of an owned NAME)."""
    match = _GENERATION.match(name)
    if match is None or match.group("name") not in state.tokens:
        return None
    return match.group("name")


def _content_problem(token: ApiToken) -> str | None:
    """Why ``token``'s description or scopes cannot be declared in a manifest, or None."""
    unknown = sorted(set(token.scopes) - set(SCOPES))
    if unknown:
        return (
            f"scope {', '.join(clip(s) for s in unknown)} is not one a manifest can declare "
            f"({', '.join(SCOPES)}); declare it by hand once reconciler knows the scope"
        )
    if not token.scopes:
        return "it has no scopes, and a manifest declares at least one; delete it by hand"
    if len(token.description) > MAX_DESCRIPTION:
        return (
            f"its description is longer than the {MAX_DESCRIPTION} characters a manifest "
            "allows; shorten it in BentoCloud, then export again"
        )
    return None


def _name_problem(name: str) -> str | None:
    if NAME_PATTERN.match(name) and len(name) <= MAX_MANIFEST_NAME:
        return None
    return (
        "not a valid manifest name (a DNS-1035 label of at most "
        f"{MAX_MANIFEST_NAME} characters, leaving room for a generation's -N suffix); "
        "BentoCloud cannot rename tokens: make a replacement under a valid name by hand"
    )


def select_exports(
    live: Sequence[ApiToken],
    state: State,
    declared: Collection[str],
    *,
    now: datetime,
    include_expired: bool = False,
    search: str | None = None,
) -> Selection:
    """Which live tokens to export (pure: no I/O, no clock). Left out: tokens state owns
    and, unless ``include_expired``, expired ones (both counted); tokens whose name does
    not contain ``search``. Skipped with a reason: a name the manifests declare, a live
    name state records for a generation or an interrupted create (or NAME-N of an owned
    NAME), an invalid manifest name, a name several live tokens share, and a description
    or scopes a manifest cannot declare."""
    owned = state.owned_uids() | set(state.previous)
    recorded = _recorded_names(state)
    needle = search.lower() if search else None
    managed = expired = 0
    candidates: list[ApiToken] = []
    skipped: list[Skipped] = []
    for token in sorted(live, key=lambda t: (t.name, t.uid)):
        if token.deleted_at is not None:
            continue
        if needle is not None and needle not in token.name.lower():
            continue
        if token.uid in owned:
            managed += 1
            continue
        if not include_expired and is_expired(token, now):
            expired += 1
            continue
        reason = _reason_to_skip(token, state, declared, recorded)
        if reason is not None:
            skipped.append(Skipped(token.name, token.uid, reason))
        else:
            candidates.append(token)
    shared = Counter(token.name for token in candidates)
    exported: list[ApiToken] = []
    for token in candidates:
        if shared[token.name] > 1:
            reason = (
                f"{shared[token.name]} live tokens are named {token.name}, and a manifest "
                "name declares one: delete the others by hand, then export again"
            )
            skipped.append(Skipped(token.name, token.uid, reason))
        else:
            exported.append(token)
    return Selection(tuple(exported), tuple(skipped), managed, expired)


def _reason_to_skip(
    token: ApiToken, state: State, declared: Collection[str], recorded: Mapping[str, str]
) -> str | None:
    name = token.name
    if name in declared:
        return (
            "the manifests declare this name already: `reconciler plan` adopts the token "
            "if it matches, or shows how it differs"
        )
    if name in recorded:
        return recorded[name]
    parent = _generation_of(name, state)
    if parent is not None:
        return (
            f"named like a generation of {parent} ({parent}-N), which state owns: declare "
            "it by hand if it is a token of its own"
        )
    return _name_problem(name) or _content_problem(token)


def _moment(moment: datetime) -> str:
    return format_time(moment.replace(microsecond=0))


def _comment(token: ApiToken) -> list[str]:
    created = _moment(token.created_at) if token.created_at else "at an unknown time"
    by = f" by {token.created_by}" if token.created_by else ""
    used = f"last used {_moment(token.last_used_at)}" if token.last_used_at else "never used"
    return [f"{token.uid}: created {created}{by}, {used}"]


def declared_names(paths: Sequence[str], *, replacing: Path | None = None) -> set[str]:
    """The names the manifests already declare: PATHS, or manifests/ when it exists (a
    repository being taken over may have none yet; a PATH given that is missing is an
    error). The tokens of ``replacing``, the file an export is about to replace, do not
    count: they are exported again."""
    if paths:
        manifests = load_manifests(tuple(paths))
    elif any(Path(p).exists() for p in MANIFESTS):
        manifests = load_manifests(MANIFESTS)
    else:
        return set()
    replaced = replacing.resolve() if replacing is not None else None
    return {
        name
        for name in manifests.tokens
        if replaced is None or Path(manifests.locations[name][0]).resolve() != replaced
    }


def export_tokens(
    session: Session, request: ExportRequest, *, schema_ref: str = DEFAULT_SCHEMA_REF
) -> Export:
    """List the live tokens and state (without the lock: nothing is written) and make the
    manifest of what to export. Manifests are read first, offline: a bad one fails before
    anything is contacted."""
    declared = declared_names(request.paths, replacing=request.replacing)
    state = session.read_state()
    live = session.api.list()
    now = utcnow()
    selection = select_exports(
        live,
        state,
        declared,
        now=now,
        include_expired=request.include_expired,
        search=request.search,
    )
    header = [
        f"Written by `reconciler export` at {_moment(now)}: the live tokens of the API key's",
        "user that no manifest declared and reconciler did not own. `reconciler plan` adopts",
        "each one (recorded in state, no API call); from then on, edit them like any manifest.",
    ]
    entries = [ManifestEntry(spec_of(token), _comment(token)) for token in selection.exported]
    unwritable: list[ManifestEntry] = []
    text = render_manifest(
        entries, schema_ref=schema_ref, header=header, on_unwritable=unwritable.append
    )
    if unwritable:
        selection = _without_unwritable(selection, {entry.spec.name for entry in unwritable})
    written = tuple(entry for entry in entries if entry not in unwritable)
    return Export(selection, text if written else None, written)


def _without_unwritable(selection: Selection, names: set[str]) -> Selection:
    reason = "its description cannot be written as YAML that reads back the same"
    return Selection(
        tuple(t for t in selection.exported if t.name not in names),
        selection.skipped
        + tuple(Skipped(t.name, t.uid, reason) for t in selection.exported if t.name in names),
        selection.managed,
        selection.expired,
    )


def schema_ref_for(out: Path | None) -> str:
    """The schema comment's path to ./schema/manifest.schema.json, relative to the file
    written (a manifest under manifests/ when printed)."""
    if out is None:
        return DEFAULT_SCHEMA_REF
    folder = (Path.cwd() / out).parent
    return Path(os.path.relpath(Path.cwd() / SCHEMA_FILE, folder)).as_posix()


def refuse_existing(out: Path, *, force: bool) -> None:
    """An existing ``out`` is refused unless ``force`` (checked before anything is listed,
    and again before writing)."""
    if not force and (out.exists() or out.is_symlink()):
        raise ConfigError(
            f"{out} exists already: pass --force to replace it, or choose another --out"
        )


def write_export(out: Path, text: str, *, force: bool) -> None:
    """Write the manifest to ``out`` in one step (its folder made when missing); an
    existing file is refused unless ``force``."""
    refuse_existing(out, force=force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        target = atomicfile.resolve(out)
        atomicfile.remove_stale_temps(target)
        atomicfile.atomic_write(target, text, mode=0o644)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write the manifest ({exc.strerror or exc})") from None
