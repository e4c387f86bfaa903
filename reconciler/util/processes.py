"""Whether a process still runs (for stale lock files and temp files of dead runs)."""

from __future__ import annotations

import os


def pid_running(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a pid that cannot exist: no)."""
    if pid <= 0 or pid >= 2**31:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True
