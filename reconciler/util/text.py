"""Small text helpers shared by messages and renderers (no reconciler imports, so any
module can use them)."""

from __future__ import annotations

import unicodedata


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 token', '2 tokens' (``many`` for irregular plurals)."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def quotable(value: object, limit: int = 60) -> str | None:
    """str(value) when it is short and printable enough to quote back whole in a one-line
    message (a newline or escape sequence would break the line), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return None  # str() of a huge int is slow, and raises beyond 4300 digits
    text = str(value)
    return text if len(text) <= limit and text.isprintable() else None


def clip(value: object, limit: int = 60) -> str:
    """repr() of a value taken from user input, short enough for a one-line message.

    A 1 MB name or a 5000-digit number is shown by its start and its size, never whole
    (repr() of such an int even raises ValueError).
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<about {int(value.bit_length() * 0.30103) + 1} digits>"
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters"
    return f"{shorten(text, limit)} ({size})"


def plain(text: str) -> str:
    """User text made safe for one terminal line: control and format characters (newlines,
    ANSI escapes, bidi overrides) become visible escapes instead of acting."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char != " " and unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cn"):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def one_line(text: str, limit: int = 300) -> str:
    """A store's message made fit for a one-line error."""
    return shorten(" ".join(text.split()), limit)


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
