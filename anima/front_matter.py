"""Front matter: the YAML head of a Markdown file (messages, memory notes), split off and loaded
within bounds.

Anyone can drop a file in an inbox, so the head is hostile until proven otherwise. It is built
from the parser's event stream, never by PyYAML's constructor: no tags (`!!python/object`,
`!!binary`, `!foo`), no aliases (an anchor bomb expands nothing), mappings with unique text keys,
and caps on size, nesting and node count. Every failure is a BadFrontMatter with a reason.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent,
    CollectionStartEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
    SequenceEndEvent,
)
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from anima.errors import BadFrontMatter

MAX_CHARS = 64 * 1024
"""The longest head accepted; a message's own fields need a few hundred characters."""
MAX_DEPTH = 16
MAX_NODES = 4096
MAX_KEY_CHARS = 256
MAX_NUMBER_CHARS = 64
"""Longer integer literals are refused: Python cannot even print an int of 4,300+ digits."""

_BOUNDARY = re.compile(r"^-{3,}[ \t\r]*$", re.MULTILINE)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVER = Resolver()
_SCALARS = SafeConstructor()
_TAG = "tag:yaml.org,2002:"


class Split(NamedTuple):
    """A file cut at its front matter. `head` is None when there is none; `closed` is False when
    the file opens a front matter and never closes it (still being written, or broken)."""

    head: str | None
    body: str
    closed: bool = True


def split(text: str) -> Split:
    """Cut `text` into the YAML between its first two `---` lines and the body after them
    (both stripped, as python-frontmatter did). Without an opening `---` it is all body."""
    text = text.strip()
    first = _BOUNDARY.match(text)
    if first is None:
        return Split(None, text)
    close = _BOUNDARY.search(text, first.end())
    if close is None:
        return Split(None, text, closed=False)
    return Split(text[first.end() : close.start()], text[close.end() :].strip())


def load(head: str) -> dict[str, Any]:
    """The mapping in a front matter `head` (empty: {}). Raises BadFrontMatter."""
    if len(head) > MAX_CHARS:
        raise BadFrontMatter(f"front matter is {len(head)} characters; the limit is {MAX_CHARS}")
    try:
        value = _build(yaml.parse(head, Loader=_LOADER))
    except yaml.YAMLError as exc:
        raise BadFrontMatter(f"front matter is not valid YAML: {_cut(str(exc), 400)}") from exc
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadFrontMatter("front matter must be a mapping of keys to values")
    return value


def parse(text: str) -> tuple[dict[str, Any], str]:
    """Front matter and body of a whole file. Raises BadFrontMatter (also when unclosed)."""
    parts = split(text)
    if not parts.closed:
        raise BadFrontMatter("front matter starts with '---' but is never closed by a '---' line")
    return (load(parts.head) if parts.head is not None else {}), parts.body


def read_meta(path: Path) -> dict[str, Any]:
    """The front matter of a note on disk, or {} when it has none or cannot be read safely
    (not a regular file, not UTF-8, hostile YAML). Reads only the head: never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return {}
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(MAX_CHARS * 4 + 16)
    except OSError:
        return {}
    finally:
        os.close(fd)
    if not raw.lstrip().startswith(b"---"):
        return {}
    if len(raw) > MAX_CHARS * 4:  # only the head matters: cut at a line, never inside a character
        raw = raw[: raw.rfind(b"\n") + 1]
    try:
        return parse(raw.decode("utf-8"))[0]
    except (UnicodeDecodeError, BadFrontMatter):
        return {}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


class _Mapping:
    """A mapping being built: its items and the key waiting for its value."""

    def __init__(self) -> None:
        self.items: dict[str, Any] = {}
        self.key: str | None = None


def _build(events: Iterable[Event]) -> Any:
    """One YAML document from parser events, refusing what a message never needs."""
    builder = _Builder()
    for event in events:
        builder.feed(event)
    return builder.root


class _Builder:
    """Plain values from parser events, with an explicit stack (no recursion) and the caps."""

    def __init__(self) -> None:
        self.stack: list[_Mapping | list[Any]] = []
        self.root: Any = None
        self.documents = 0
        self.nodes = 0

    def feed(self, event: Event) -> None:
        if isinstance(event, DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise BadFrontMatter("front matter must be one YAML document")
        elif isinstance(event, AliasEvent):
            raise BadFrontMatter(
                f"front matter uses a YAML alias (*{_cut(str(event.anchor), 40)}); "
                "aliases are not accepted"
            )
        elif isinstance(event, (MappingEndEvent, SequenceEndEvent)):
            done = self.stack.pop()
            self._place(done.items if isinstance(done, _Mapping) else done)
        elif isinstance(event, NodeEvent):
            self._node(event)

    def _node(self, event: NodeEvent) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise BadFrontMatter(f"front matter has more than {MAX_NODES} values")
        tag = getattr(event, "tag", None)
        if tag is not None:
            raise BadFrontMatter(
                f"front matter uses the YAML tag {_cut(str(tag), 60)!r}; tags are not accepted"
            )
        top = self.stack[-1] if self.stack else None
        is_key = isinstance(top, _Mapping) and top.key is None
        if isinstance(event, ScalarEvent):  # keys are the text written: `on:` is "on", not True
            self._place(event.value if is_key else _scalar(event))
        elif isinstance(event, CollectionStartEvent):
            if is_key:
                raise BadFrontMatter("front matter keys must be text, not lists or mappings")
            if len(self.stack) >= MAX_DEPTH:
                raise BadFrontMatter(f"front matter is nested more than {MAX_DEPTH} levels deep")
            self.stack.append(_Mapping() if isinstance(event, MappingStartEvent) else [])

    def _place(self, value: Any) -> None:
        """Put a finished value where it belongs: a list, a mapping's key or value, the root."""
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        if isinstance(top, list):
            top.append(value)
        elif top.key is None:
            if len(value) > MAX_KEY_CHARS:
                raise BadFrontMatter(
                    f"a front matter key is longer than {MAX_KEY_CHARS} characters"
                )
            if value in top.items:
                raise BadFrontMatter(f"front matter key {_cut(value, 60)!r} appears twice")
            top.key = value
        else:
            top.items[top.key] = value
            top.key = None


def _scalar(event: ScalarEvent) -> Any:
    """A plain scalar resolved as YAML 1.1 would (null, bool, int, float, timestamp); a quoted
    one is text. An impossible value (2026-13-45, year 0) is refused, never raised."""
    value: str = event.value
    tag = _RESOLVER.resolve(ScalarNode, value, event.implicit)
    node = ScalarNode(tag, value)
    try:
        if tag == _TAG + "null":
            return None
        if tag == _TAG + "bool":
            return _SCALARS.construct_yaml_bool(node)
        if tag == _TAG + "int":
            if len(value) > MAX_NUMBER_CHARS:
                raise BadFrontMatter(
                    f"front matter number {_cut(value, 40)} is longer than "
                    f"{MAX_NUMBER_CHARS} digits"
                )
            return _SCALARS.construct_yaml_int(node)
        if tag == _TAG + "float":
            return _SCALARS.construct_yaml_float(node)
        if tag == _TAG + "timestamp":
            stamp: dt.date = _SCALARS.construct_yaml_timestamp(node)
            return stamp
    except (ValueError, OverflowError, TypeError, ArithmeticError) as exc:
        raise BadFrontMatter(
            f"front matter value {_cut(value, 60)!r} is impossible: {exc}"
        ) from exc
    return value
