"""The local BentoCloud-compatible token API; submodules are imported only when used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.server.app import create_app
    from reconciler.server.embedded import LocalServer, run_server
    from reconciler.server.faults import FaultInjector, Faults
    from reconciler.server.store import Store

__all__ = ["FaultInjector", "Faults", "LocalServer", "Store", "create_app", "run_server"]

# Importing the package must stay cheap (the CLI touches it for every command), so the
# FastAPI/uvicorn-heavy modules load on first attribute access.
_HOMES = {
    "create_app": "reconciler.server.app",
    "LocalServer": "reconciler.server.embedded",
    "run_server": "reconciler.server.embedded",
    "FaultInjector": "reconciler.server.faults",
    "Faults": "reconciler.server.faults",
    "Store": "reconciler.server.store",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
