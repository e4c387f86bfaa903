"""AWS settings boto3 does not read by itself here: the region from ``AWS_REGION``."""

from __future__ import annotations

import os
from collections.abc import Mapping


def region_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """``AWS_REGION``, which AWS documents ahead of ``AWS_DEFAULT_REGION`` but botocore does
    not read; None leaves the choice to botocore (``AWS_DEFAULT_REGION``, then the profile)."""
    env = os.environ if env is None else env
    return env.get("AWS_REGION", "").strip() or None
