"""A file destination delivered to from many workers at once (apply --parallelism): every
value ends up in the file, whichever worker opens it and however the writes interleave."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reconciler.destinations.base import Delivery
from reconciler.destinations.file import FileDestination


class SlowToRead(FileDestination):
    """Reading the existing file takes a while, as on a slow or busy disk: a worker that
    opened the file again while others deliver would put back what it read, dropping
    values written in the meantime."""

    def _read(self) -> str | None:
        text = super()._read()
        time.sleep(0.05)
        return text


@pytest.mark.parametrize("fmt", ["json", "dotenv"])
def test_concurrent_deliveries_keep_every_value(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / ("new.json" if fmt == "json" else "new.env")
    # Values from an earlier run, so opening the file reads something back.
    FileDestination.open(path, fmt).add("earlier", "value-earlier-0000")  # type: ignore[arg-type]
    destination = SlowToRead(path, fmt)  # type: ignore[arg-type]
    names = [f"tok-{n}" for n in range(300)]

    def deliver(name: str) -> None:
        # Not opened beforehand: the first deliveries race to open it, as workers may.
        destination.deliver(Delivery(name, name, f"uid-{name}", None, value=f"value-{name}"))

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(deliver, names))
    text = path.read_text(encoding="utf-8")
    if fmt == "json":
        held = json.loads(text)
    else:
        lines = [line.split("=", 1) for line in text.splitlines() if "=" in line]
        held = {key.lower().replace("_", "-"): value for key, value in lines}
    assert held == {"earlier": "value-earlier-0000", **{n: f"value-{n}" for n in names}}
