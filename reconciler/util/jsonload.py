"""JSON decoding that fails with a short reason, never a traceback, on hostile input."""

from __future__ import annotations

import json


def load_json(raw: bytes) -> object:
    """Decode a JSON document; ValueError (with a short reason) for anything that is not
    one, including nesting too deep for the parser and integers too long to read."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:
        # int() refuses integers of thousands of digits (CVE-2020-10735 limit).
        raise ValueError("a number has too many digits") from None
