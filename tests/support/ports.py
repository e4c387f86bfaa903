"""Free ports on 127.0.0.1 for the servers tests start (and for addresses nothing answers)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now (so a connection to it is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
