"""ApiToken (reconciler.api.token): a token from the real local API never shows its value
in repr, str, dict, YAML or logs."""

from __future__ import annotations

import logging

import pytest
from support.local_api import MakeApi

from reconciler.server.embedded import LocalServer


def test_secret_never_in_repr_str_or_logs(
    server: LocalServer, caplog: pytest.LogCaptureFixture, make_api: MakeApi
) -> None:
    caplog.set_level(logging.DEBUG)
    api = make_api(server)
    created = api.create("secretive")
    assert created.token is not None
    logging.getLogger("test").info("created %s / %r", created, created)
    for text in (
        repr(created),
        str(created),
        str(created.to_dict()),
        created.to_yaml(),
        caplog.text,
        repr(api.client),
    ):
        assert created.token not in text
        assert server.admin_key not in text
    assert created.to_dict(include_secret=True)["token"] == created.token
