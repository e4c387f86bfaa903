"""Safe, bounded YAML loading that keeps the line of every key and list item."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from reconciler.errors import Problem
from reconciler.util.text import clip, quotable

try:
    from yaml import CSafeLoader as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _Parser  # type: ignore[assignment]

# A manifest is four levels deep; anything near this is hostile or a mistake, and stopping
# early keeps libyaml, this loader and pydantic far from any recursion limit.
MAX_DEPTH = 64

_STR = "tag:yaml.org,2002:str"
_MAP_TAGS = (None, "!", "tag:yaml.org,2002:map")
_SEQ_TAGS = (None, "!", "tag:yaml.org,2002:seq")

# PyYAML's stubs leave resolve untyped; it returns the tag string.
_resolve: Callable[[type[ScalarNode], str, tuple[bool, bool]], str] = Resolver().resolve
_RESOLVABLE_FIRST = frozenset(key for key in Resolver.yaml_implicit_resolvers if key)
_CONSTRUCTOR = SafeConstructor()


class YMap(dict[str, Any]):
    """A YAML mapping that remembers its own line and the line of each key (1-based)."""

    __slots__ = ("key_lines", "line")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[str, int] = {}


class YList(list[Any]):
    """A YAML sequence that remembers its own line and the line of each item (1-based)."""

    __slots__ = ("item_lines", "line")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []


class _Fatal(Exception):
    """Stops loading one file; carries the problem that made it unreadable."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _scalar(event: Any, tags: dict[str, str]) -> Any:
    """The Python value of a scalar event, as PyYAML's SafeLoader would build it.

    tags caches the implicit tag of plain scalars already seen in this document.
    """
    tag = event.tag
    value: str = event.value
    if tag is None or tag == "!":
        if not event.implicit[0]:
            return value
        # Most plain scalars (names, scopes) cannot be anything but strings; skipping the
        # resolver's regexes for them halves the cost of a large manifest.
        if value and value[0] not in _RESOLVABLE_FIRST:
            return value
        tag = tags.get(value)
        if tag is None:
            tag = tags[value] = _resolve(ScalarNode, value, (True, False))
    if tag == _STR:
        return value
    construct = SafeConstructor.yaml_constructors.get(tag)
    line = event.start_mark.line + 1
    if construct is None or tag.endswith((":map", ":seq", ":omap", ":pairs", ":set")):
        raise _Fatal(
            line, f"unsupported YAML tag {clip(tag)}: remove the tag and write a plain value"
        )
    node = ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
    try:
        return construct(_CONSTRUCTOR, node)
    except (ValueError, OverflowError, yaml.YAMLError):
        # Looks like a date or number but is not one (2027-02-30): keep the text so the
        # field's own validation reports it with its accepted forms.
        return value


def load_yaml(text: str, file: str) -> tuple[Any, list[Problem]]:
    """Parse one YAML document into dicts/lists/scalars (YMap/YList carry line numbers).

    Returns (value, problems). Aliases, unknown tags, more than one document and nesting
    deeper than MAX_DEPTH are refused; when a problem stops the load, value is None.
    Duplicate keys are reported but do not stop the load (the last value wins).
    """
    problems: list[Problem] = []
    try:
        return _build(text, file, problems), problems
    except _Fatal as fatal:
        problems.append(Problem(file, fatal.line, fatal.message))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or exc.context or "invalid YAML"
        context = ""
        if exc.context and exc.problem:
            started = exc.context_mark
            at = (
                f" at line {started.line + 1}"
                if started is not None and started is not mark
                else ""
            )
            context = f" ({exc.context}{at})"
        column = f" at column {mark.column + 1}" if mark is not None else ""
        if _is_tab(exc, text):
            message = f"YAML syntax error{column}: tabs are not allowed for indentation, use spaces"
            problems.append(Problem(file, line, message))
            return None, problems
        problems.append(
            Problem(file, line, f"YAML syntax error{column}: {what}{context}; fix the YAML syntax")
        )
    except yaml.reader.ReaderError as exc:
        # libyaml reports characters YAML forbids (NUL, most control characters) by offset.
        line = text.count("\n", 0, exc.position) + 1
        problems.append(
            Problem(file, line, f"character {exc.character!r} is not allowed in YAML: remove it")
        )
    except RecursionError:
        problems.append(Problem(file, None, "document is nested too deeply: flatten it"))
    except yaml.YAMLError as exc:
        problems.append(Problem(file, None, f"YAML error: {exc}; fix the YAML syntax"))
    return None, problems


def _is_tab(exc: yaml.MarkedYAMLError, text: str) -> bool:
    """Whether PyYAML stopped at a tab ('found character that cannot start any token', or
    'a tab character that violates indentation'): YAML indents with spaces only."""
    if "tab character" in (exc.problem or ""):
        return True
    mark = exc.problem_mark
    index = getattr(mark, "index", -1)
    return mark is not None and 0 <= index < len(text) and text[index] == "\t"


def _build(text: str, file: str, problems: list[Problem]) -> Any:
    """Build values from the parser's event stream with an explicit stack (no recursion)."""
    parser = _Parser(text)
    try:
        # Events are read duck-typed: the C and Python parsers share no typed base.
        get_event: Callable[[], Any] = parser.get_event
        builder = _Builder(file, problems)
        while True:
            event = get_event()
            if event is None:
                return builder.root
            builder.feed(event)
    finally:
        parser.dispose()


class _Builder:
    """Turns parser events into YMap/YList/scalars. Each stack frame is [container,
    pending key, pending key line, expecting key?]; lists only use the container slot."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        self.root: Any = None
        self.documents = 0
        self.tags: dict[str, str] = {}
        self.stack: list[list[Any]] = []

    def feed(self, event: Any) -> None:
        kind = type(event)
        if kind is ScalarEvent:
            top = self.stack[-1] if self.stack else None
            if top is not None and top[3]:
                self._key(top, event)
                return
            # Only list items need their own line (a value's line is its key's).
            self._add(_scalar(event, self.tags), 0, event)
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            self._start(event, mapping=kind is MappingStartEvent)
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            value = self.stack.pop()[0]
            self._add(value, value.line, event)
        elif kind is AliasEvent:
            anchor = quotable(event.anchor, 40) or clip(event.anchor, 40)
            raise _Fatal(
                event.start_mark.line + 1,
                f"YAML aliases (*{anchor}) are not supported: write the value "
                "out in full instead of referring to an anchor",
            )
        elif kind is DocumentStartEvent:
            self.documents += 1
            if self.documents > 1:
                raise _Fatal(
                    event.start_mark.line + 1,
                    "more than one YAML document (a second `---`): put every token under "
                    "the one `tokens:` list, or move the second document to its own file",
                )

    def _key(self, top: list[Any], event: Any) -> None:
        line = event.start_mark.line + 1
        # Keys are names: `yes:` or `1:` is reported as an unknown key spelled as
        # written, not as True or 1.
        key = event.value
        container: YMap = top[0]
        if key in container.key_lines:
            self.problems.append(
                Problem(
                    self.file,
                    line,
                    f"duplicate key {clip(key)} (first at line "
                    f"{container.key_lines[key]}): remove one of them",
                )
            )
        top[1] = key
        top[2] = line
        top[3] = False

    def _start(self, event: Any, *, mapping: bool) -> None:
        line = event.start_mark.line + 1
        top = self.stack[-1] if self.stack else None
        if top is not None and top[3]:
            raise _Fatal(line, "a mapping or list cannot be a key: use a plain name as the key")
        if len(self.stack) >= MAX_DEPTH:
            raise _Fatal(
                line,
                f"nested more than {MAX_DEPTH} levels deep: a manifest is "
                "`tokens:` -> list -> token -> scopes; flatten it",
            )
        if event.tag not in (_MAP_TAGS if mapping else _SEQ_TAGS):
            raise _Fatal(line, f"unsupported YAML tag {clip(event.tag)}: remove the tag")
        self.stack.append([YMap(line), None, 0, True] if mapping else [YList(line), None, 0, False])

    def _add(self, value: Any, line: int, event: Any) -> None:
        """A finished value (scalar or container) goes into its parent."""
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        parent = top[0]
        if type(parent) is YList:
            parent.append(value)
            parent.item_lines.append(line or event.start_mark.line + 1)
        else:
            key = top[1]
            parent[key] = value
            # The line of the value that wins, so later errors point at it.
            parent.key_lines[key] = top[2]
            top[3] = True


def kind_of(value: object) -> str:
    """How YAML users would name the type of a value."""
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({quotable(value) or clip(value)})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__} ({quotable(value) or clip(value)})"
