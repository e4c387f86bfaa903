"""reconciler: converge BentoCloud API tokens to what YAML manifests declare."""

from __future__ import annotations

DISTRIBUTION = "bentocloud-reconciler"


def __getattr__(name: str) -> str:
    # The version is stated once, in pyproject.toml, and read from the installed
    # distribution's metadata when first asked for: importlib.metadata costs --help 20 ms.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version(DISTRIBUTION)
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        found = "0+unknown"
    globals()["__version__"] = found
    return found
