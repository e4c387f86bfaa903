"""The floor for `plan`: the least any client could do to read every live token.

A fresh Python process that imports httpx and pages through the tokens in the largest pages
the server allows, decoding each page and nothing more. bench/run.py runs it beside
`reconciler plan` and reports plan's wall time as a multiple of this one.

    python bench/floor.py URL API_KEY [--page-size N]

Prints one line of JSON: {"tokens": ..., "requests": ...}.
"""

from __future__ import annotations

import argparse
import json
import sys

import httpx

TOKENS_PATH = "/api/v1/api_tokens"


def read_all(url: str, key: str, page_size: int) -> tuple[int, int]:
    """(tokens read, requests made), following ``total`` as a client must."""
    seen = 0
    requests = 0
    with httpx.Client(base_url=url, headers={"X-YATAI-API-TOKEN": key}, timeout=60) as client:
        while True:
            response = client.get(TOKENS_PATH, params={"start": seen, "count": page_size})
            requests += 1
            response.raise_for_status()
            body = response.json()
            items = body["items"]
            seen += len(items)
            if not items or seen >= body["total"]:
                return seen, requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("key")
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args(argv)
    tokens, requests = read_all(args.url, args.key, args.page_size)
    print(json.dumps({"tokens": tokens, "requests": requests}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
