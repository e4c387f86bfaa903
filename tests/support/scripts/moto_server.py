"""moto's server as a real process: ``python tests/support/scripts/moto_server.py HOST PORT``.

It is moto's own server (the WSGI app ``python -m moto.server`` runs) with one difference:
requests are handled one at a time. moto checks If-Match / If-None-Match and then stores in
two steps, so two requests arriving together could both pass the check, where S3 decides
them atomically; serving one request at a time gives the tests S3's guarantee. Set
INITIAL_NO_AUTH_ACTION_COUNT in its environment to make it enforce IAM after that many
requests.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

try:  # moto >= 5.2.x serves with its own request handler; older ones use werkzeug's
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    HANDLER: dict[str, Any] = {"request_handler": MotoRequestHandler}
except ImportError:  # pragma: no cover - depends on the installed moto
    HANDLER = {}


def main(argv: list[str]) -> None:
    host, port = argv[0], int(argv[1])
    app = DomainDispatcherApplication(create_backend_app)
    one_at_a_time = threading.Lock()

    def serialised(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with one_at_a_time:
            return list(app(environ, start_response))

    run_simple(host, port, serialised, threaded=True, **HANDLER)


if __name__ == "__main__":
    main(sys.argv[1:])
