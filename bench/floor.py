"""The floors: the least any client could do to read every live token, or to create N.

A fresh Python process that imports httpx and nothing of reconciler:

- listing (default): pages through the tokens in the largest pages the server allows,
  decoding each page and nothing more; bench/run.py reports `plan` as a multiple of it.
- ``--create N --parallelism P``: posts N creates (the same names, description and scopes
  as the manifests apply is given) from P threads sharing one client, decoding each
  answer; bench/run.py reports `apply --parallelism P` as a multiple of it.

    python bench/floor.py URL API_KEY [--page-size N] [--create N --parallelism P]

Prints one line of JSON: {"tokens": ..., "requests": ..., "loop_seconds": ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

TOKENS_PATH = "/api/v1/api_tokens"


def read_all(client: httpx.Client, page_size: int) -> tuple[int, int]:
    """(tokens read, requests made), following ``total`` as a client must."""
    seen = 0
    requests = 0
    while True:
        response = client.get(TOKENS_PATH, params={"start": seen, "count": page_size})
        requests += 1
        response.raise_for_status()
        body = response.json()
        items = body["items"]
        seen += len(items)
        if not items or seen >= body["total"]:
            return seen, requests


def create_all(client: httpx.Client, count: int, parallelism: int, prefix: str) -> int:
    """Create ``count`` tokens from ``parallelism`` threads; returns how many answered
    with a value."""

    def create(n: int) -> bool:
        body = {"name": f"{prefix}-{n}", "description": "bench token", "scopes": ["api"]}
        response = client.post(TOKENS_PATH, json=body)
        response.raise_for_status()
        return bool(response.json().get("token"))

    with ThreadPoolExecutor(max_workers=parallelism) as pool:
        return sum(pool.map(create, range(count)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("key")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--create", type=int, default=0, help="Create N tokens instead.")
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--prefix", default="bench")
    args = parser.parse_args(argv)
    limits = httpx.Limits(max_connections=max(args.parallelism, 10))
    headers = {"X-YATAI-API-TOKEN": args.key}
    with httpx.Client(base_url=args.url, headers=headers, timeout=60, limits=limits) as client:
        started = time.perf_counter()
        if args.create:
            tokens = create_all(client, args.create, args.parallelism, args.prefix)
            requests = args.create
        else:
            tokens, requests = read_all(client, args.page_size)
        elapsed = time.perf_counter() - started
    print(json.dumps({"tokens": tokens, "requests": requests, "loop_seconds": elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
