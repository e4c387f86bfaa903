"""The append-only state journal of a local state file, on real files.

apply's every step appends one fsynced line beside the state instead of rewriting the whole
document; readers apply those lines on top of it; the end of the run (or the next apply
after a crash) folds them in. These tests check each of those promises on disk, including
the remains a kill can leave (a torn last line, a journal already folded).
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from support.states import owned_token

from reconciler.errors import StateError
from reconciler.state.backends.local import LocalStateBackend
from reconciler.state.journal import Journal
from reconciler.state.model import PendingCreate, State

WHEN = datetime(2026, 12, 1, tzinfo=timezone.utc)


def stored(path: Path, tokens: int = 3) -> tuple[LocalStateBackend, State]:
    """A state file owning ``tokens`` tokens, read back by a fresh backend."""
    state = State(
        endpoint="http://api", tokens={f"t-{n}": owned_token(f"t-{n}") for n in range(tokens)}
    )
    LocalStateBackend(path).write(state)
    backend = LocalStateBackend(path)
    read = backend.read()
    assert read is not None
    return backend, read


def journal_lines(path: Path) -> list[bytes]:
    journal = path.with_name(path.name + ".journal")
    return journal.read_bytes().splitlines() if journal.exists() else []


def test_updates_append_to_the_journal_and_leave_the_document_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    backend, state = stored(path)
    before = path.stat()
    journal = Journal(backend, state)
    journal.update(lambda s: s.with_pending(PendingCreate("new", WHEN)))
    journal.update(lambda s: s.with_token(owned_token("new")).without_pending("new"))
    journal.update(lambda s: s.without_token("t-0"))

    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(journal_lines(path)) == 3
    assert oct(path.with_name("s.json.journal").stat().st_mode & 0o777) == "0o600"
    seen = LocalStateBackend(path).read()
    assert seen is not None
    assert sorted(seen.tokens) == ["new", "t-1", "t-2"]
    assert not seen.pending and seen.serial == state.serial + 3


def test_fold_writes_the_document_removes_the_journal_and_keeps_the_serial(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.json"
    backend, state = stored(path)
    journal = Journal(backend, state)
    journal.update(lambda s: s.with_token(owned_token("new")))
    replayed = LocalStateBackend(path).read()
    journal.fold()

    assert journal_lines(path) == []
    document = json.loads(path.read_text())
    assert [t["name"] for t in document["tokens"]] == ["new", "t-0", "t-1", "t-2"]
    assert replayed is not None and document["serial"] == replayed.serial
    assert json.loads(path.with_name("s.json.backup").read_text())["serial"] == state.serial
    # Further updates append again, on top of the folded document.
    journal.update(lambda s: s.without_token("new"))
    again = LocalStateBackend(path).read()
    assert again is not None and "new" not in again.tokens


def test_releasing_the_apply_lock_folds_and_a_plan_lock_does_not(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    backend, state = stored(path)
    with backend.lock("plan", 0):
        Journal(backend, state).update(lambda s: s.with_token(owned_token("a")))
    assert len(journal_lines(path)) == 1
    with backend.lock("apply", 0):
        pass
    assert journal_lines(path) == []
    assert "a" in {t["name"] for t in json.loads(path.read_text())["tokens"]}


def test_a_torn_last_line_is_ignored_and_cut_off_by_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    backend, state = stored(path)
    Journal(backend, state).update(lambda s: s.with_token(owned_token("kept")))
    journal_file = path.with_name("s.json.journal")
    with journal_file.open("ab") as handle:
        handle.write(b'{"base": 1, "lineage": "x", "seq": 2, "tokens": {"lost": nu')

    reader = LocalStateBackend(path)
    seen = reader.read()
    assert seen is not None and "kept" in seen.tokens and "lost" not in seen.tokens
    Journal(reader, seen).update(lambda s: s.with_token(owned_token("next")))
    lines = journal_lines(path)
    assert len(lines) == 2 and all(b"lost" not in line for line in lines)
    final = LocalStateBackend(path).read()
    assert final is not None and {"kept", "next"} <= set(final.tokens)


def test_a_journal_of_an_older_serial_is_ignored_then_removed(tmp_path: Path) -> None:
    """A kill between the fold's replace of the document and its removal of the journal."""
    path = tmp_path / "s.json"
    backend, state = stored(path)
    Journal(backend, state).update(lambda s: s.with_token(owned_token("folded")))
    stale = path.with_name("s.json.journal").read_bytes()
    backend.fold()
    path.with_name("s.json.journal").write_bytes(stale)

    reader = LocalStateBackend(path)
    seen = reader.read()
    assert seen is not None and "folded" in seen.tokens
    serial = seen.serial
    Journal(reader, seen).update(lambda s: s.without_token("folded"))
    lines = journal_lines(path)
    assert len(lines) == 1 and json.loads(lines[0].rsplit(b"\t", 1)[0])["base"] == serial
    final = LocalStateBackend(path).read()
    assert final is not None and "folded" not in final.tokens


def test_a_damaged_line_followed_by_others_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    backend, state = stored(path)
    journal = Journal(backend, state)
    journal.update(lambda s: s.with_token(owned_token("a")))
    journal.update(lambda s: s.with_token(owned_token("b")))
    journal_file = path.with_name("s.json.journal")
    lines = journal_file.read_bytes().split(b"\n")
    journal_file.write_bytes(b"\n".join([lines[0].replace(b'"a"', b'"z"'), *lines[1:]]))
    before = (path.read_bytes(), journal_file.read_bytes())

    with pytest.raises(StateError) as raised:
        LocalStateBackend(path).read()
    message = str(raised.value)
    assert "\n" not in message and "s.json.journal" in message and "line 1" in message
    assert (path.read_bytes(), journal_file.read_bytes()) == before


def test_a_whole_write_includes_the_journal_and_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    backend, state = stored(path)
    Journal(backend, state).update(lambda s: s.with_token(owned_token("journaled")))
    writer = LocalStateBackend(path)
    seen = writer.read()
    assert seen is not None
    writer.write(seen.without_token("t-0"))
    assert journal_lines(path) == []
    names = {t["name"] for t in json.loads(path.read_text())["tokens"]}
    assert names == {"journaled", "t-1", "t-2"}


def test_another_writer_in_between_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    backend, state = stored(path)
    journal = Journal(backend, state)
    journal.update(lambda s: s.with_token(owned_token("a")))
    other = LocalStateBackend(path)
    seen = other.read()
    assert seen is not None
    other.write(seen.with_token(owned_token("other")))
    with pytest.raises(StateError, match="another run wrote it"):
        journal.update(lambda s: s.with_token(owned_token("b")))
    final = LocalStateBackend(path).read()
    assert final is not None and "other" in final.tokens and "b" not in final.tokens


def test_concurrent_updates_share_appends_and_all_are_durable(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    backend, state = stored(path, tokens=200)
    journal = Journal(backend, state)
    barrier = threading.Barrier(16)

    def worker(k: int) -> None:
        barrier.wait()
        for n in range(10):
            journal.update(lambda s, name=f"w{k}-{n}": s.with_token(owned_token(name)))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert journal.writes == len(journal_lines(path)) <= 160
    final = LocalStateBackend(path).read()
    assert final is not None and len(final.tokens) == 200 + 160


def test_a_new_state_is_written_whole_first(tmp_path: Path) -> None:
    path = tmp_path / "new" / "s.json"
    backend = LocalStateBackend(path)
    assert backend.read() is None
    journal = Journal(backend, State.new("http://api"))
    journal.update(lambda s: s.with_pending(PendingCreate("first", WHEN)))
    assert path.exists() and journal_lines(path) == []
    journal.update(lambda s: s.with_token(owned_token("first")).without_pending("first"))
    assert len(journal_lines(path)) == 1
    assert os.stat(path).st_size > 0
