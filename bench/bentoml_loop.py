"""The baseline for `apply`: BentoML's own SDK creating tokens in a serial loop.

Runs in BentoML's interpreter (bench/run.py finds it through RECONCILER_BENTOML_PYTHON or
the .venv-bentoml virtualenv .ci/run builds), so it imports nothing from reconciler:

    $RECONCILER_BENTOML_PYTHON bench/bentoml_loop.py URL API_KEY COUNT [--prefix NAME]

Prints one line of JSON: {"created": ..., "loop_seconds": ...} (the loop alone, without
interpreter start-up and BentoML's imports; bench/run.py also times the whole process).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("key")
    parser.add_argument("count", type=int)
    parser.add_argument("--prefix", default="sdk")
    args = parser.parse_args(argv)

    from bentoml._internal.cloud.api_token import ApiTokenAPI
    from bentoml._internal.cloud.client import RestApiClient

    api = ApiTokenAPI(RestApiClient(args.url, args.key))
    started = time.perf_counter()
    for n in range(args.count):
        token = api.create(f"{args.prefix}-{n}", description="bench token", scopes=["api"])
        assert token.token, "the SDK returned no token value"
    elapsed = time.perf_counter() - started
    print(json.dumps({"created": args.count, "loop_seconds": elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
