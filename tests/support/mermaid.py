"""A strict reading of the Mermaid ``gantt`` charts reconciler writes.

No well-kept pure-Python Mermaid parser exists, so this checks the subset we emit against
Mermaid's own grammar (packages/mermaid/src/diagrams/gantt/parser/gantt.jison): its lexer
is case-insensitive and takes the first rule that matches, so a task text starting with a
keyword (``gantt``, ``title ``, ``click ``...) is read as that keyword; ``#``, ``;`` and
``%%`` start comments or split statements; ``:`` ends a task text; task data is split on
commas, tags (done, active, crit, milestone) first, then an id, a start and an end. Dates
must parse with the chart's dateFormat (dayjs, strict), here only the tokens we use.
Anything outside the subset is an error, so a chart that passes draws as intended.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

_DAYJS_TO_STRPTIME = {"YYYY": "%Y", "MM": "%m", "DD": "%d", "HH": "%H", "mm": "%M", "ss": "%S"}
_DAYJS_TOKEN = re.compile(r"YYYY|MM|DD|HH|mm|ss")
# Keywords the lexer tries before a task text (case-insensitive, first match wins).
_KEYWORD_START = re.compile(
    r"^(gantt|dateformat\s|inclusiveenddates|topaxis|axisformat\s|tickinterval\s|includes\s"
    r"|excludes\s|todaymarker\s|weekday\s|\d{4}-\d{2}-\d{2}|title\s|accdescription\s"
    r"|section\s|click\s|call\s|href\s|acctitle\s*:|accdescr\s*[:{])",
    re.IGNORECASE,
)
_TEXT = re.compile(r"^[^#:;%\n]+$")
_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_TAGS = ("active", "done", "crit", "milestone")


class MermaidError(AssertionError):
    pass


@dataclass
class Task:
    text: str
    id: str
    tags: tuple[str, ...]
    start: datetime
    end: datetime


@dataclass
class Gantt:
    title: str | None = None
    date_format: str | None = None
    axis_format: str | None = None
    sections: dict[str, list[Task]] = field(default_factory=dict)

    @property
    def tasks(self) -> list[Task]:
        return [task for tasks in self.sections.values() for task in tasks]


def strptime_format(dayjs: str) -> str:
    """A dayjs format made of the tokens this checker knows, as a strptime format."""
    rest = _DAYJS_TOKEN.sub("", dayjs)
    if re.search(r"[A-Za-z]", rest):
        raise MermaidError(f"dateFormat {dayjs!r} uses tokens this check does not know")
    return _DAYJS_TOKEN.sub(lambda m: _DAYJS_TO_STRPTIME[m.group(0)], dayjs)


def _date(text: str, fmt: str, line: int) -> datetime:
    try:
        return datetime.strptime(text, fmt)
    except ValueError:
        raise MermaidError(f"line {line}: {text!r} does not match dateFormat {fmt!r}") from None


def parse_gantt(source: str) -> Gantt:
    """Read a gantt chart strictly; MermaidError on anything outside the subset."""
    lines = source.split("\n")
    if not lines or lines[0].strip() != "gantt":
        raise MermaidError(f"first line must be 'gantt', not {lines[0]!r}")
    chart = Gantt()
    section: str | None = None
    ids: set[str] = set()
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("title "):
            if chart.title is not None or re.search(r"[#;%]", line):
                raise MermaidError(f"line {number}: a second or unsafe title: {line!r}")
            chart.title = line[6:]
        elif line.startswith("dateFormat "):
            chart.date_format = strptime_format(line[11:].strip())
        elif line.startswith("axisFormat "):
            chart.axis_format = line[11:].strip()
        elif line.startswith("section "):
            section = line[8:]
            if not _TEXT.match(section):
                raise MermaidError(f"line {number}: unsafe section title {section!r}")
            if section in chart.sections:
                raise MermaidError(f"line {number}: section {section!r} appears twice")
            chart.sections[section] = []
        else:
            task = _task(line, number, chart.date_format, ids)
            if section is None:
                raise MermaidError(f"line {number}: a task before any section")
            chart.sections[section].append(task)
    if chart.date_format is None:
        raise MermaidError("no dateFormat")
    return chart


def _task(line: str, number: int, date_format: str | None, ids: set[str]) -> Task:
    if date_format is None:
        raise MermaidError(f"line {number}: a task before dateFormat")
    text, colon, data = line.partition(":")
    text = text.strip()
    if not colon or not text or not _TEXT.match(text) or _KEYWORD_START.match(text):
        raise MermaidError(f"line {number}: not a task Mermaid reads as one: {line!r}")
    if re.search(r"[#;%]", data):
        raise MermaidError(f"line {number}: task data with a comment or separator: {line!r}")
    parts = [part.strip() for part in data.split(",")]
    tags: list[str] = []
    while parts and parts[0] in _TAGS:
        tags.append(parts.pop(0))
    if len(parts) != 3:
        raise MermaidError(f"line {number}: expected id, start, end after the tags: {line!r}")
    task_id, start_text, end_text = parts
    if not _ID.match(task_id) or task_id in ids:
        raise MermaidError(f"line {number}: bad or repeated task id {task_id!r}")
    ids.add(task_id)
    start = _date(start_text, date_format, number)
    end = _date(end_text, date_format, number)
    if end <= start:
        raise MermaidError(f"line {number}: ends before it starts: {line!r}")
    return Task(text, task_id, tuple(tags), start, end)


def mermaid_blocks(markdown: str) -> list[str]:
    """The bodies of the ```mermaid fenced blocks of a Markdown text."""
    return re.findall(r"^```mermaid\n(.*?)\n```$", markdown, re.S | re.M)
