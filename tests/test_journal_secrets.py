"""The secrets file as apply fills it: values for new names appended in place, durably.

Part of the per-step bookkeeping of issue 13 (see reconciler/secrets_sink.py): the file
must stay complete JSON or dotenv after every single add, hold each name once, and keep
its mode; these run on real files.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

from reconciler.destinations.file import FileDestination


def test_new_values_are_appended_in_place_and_the_file_stays_whole(tmp_path: Path) -> None:
    """Values for new names go to the end of the same file (no rename per value); a
    replaced value, a removal, or a chunk crossing a page rewrites it. The file parses
    after every single add."""
    for fmt, name in (("json", "secrets.json"), ("dotenv", "secrets.env")):
        path = tmp_path / name
        sink = FileDestination.open(path, fmt)  # type: ignore[arg-type]
        sink.add("first", "v-first")
        inodes = set()
        expected = {"first": "v-first"}
        for n in range(200):
            sink.add(f"token-{n}", f"value-{n:04d}")
            expected[f"token-{n}"] = f"value-{n:04d}"
            inodes.add(path.stat().st_ino)
            assert read_back(path, fmt) == expected
        assert len(inodes) < 60, "most values must be appended, not renamed in"
        sink.add("token-3", "replaced")
        sink.forget("token-4")
        expected["token-3"] = "replaced"
        del expected["token-4"]
        assert read_back(path, fmt) == expected
        sink.close()
        assert read_back(path, fmt) == expected
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def read_back(path: Path, fmt: str) -> dict[str, str]:
    if fmt == "json":
        data = json.loads(path.read_text())
        assert isinstance(data, dict)
        return data
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.lower().replace("_", "-")] = value
    return values


def test_concurrent_adds_from_workers_leave_each_value_once(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "secrets.json"
    sink = FileDestination.open(path, "json")
    sink.add("seed", "v")
    barrier = threading.Barrier(8)

    def worker(k: int) -> None:
        barrier.wait()
        for n in range(25):
            sink.add(f"w{k}-{n}", f"value-{k}-{n}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pairs = json.loads(path.read_text(), object_pairs_hook=list)
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)) == 1 + 8 * 25
    assert dict(pairs)["w3-7"] == "value-3-7"
    sink.close()
