"""Message: the one thing that wakes an agent. Parse, render and validate message files (DESIGN §3)."""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
from dataclasses import dataclass, field, replace

from anima.errors import BadFrontMatter, BadMessage, UnfinishedMessage

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (mypy knows)
if TYPE_CHECKING:
    from typing import Any

MAX_MESSAGE_BYTES = 1024 * 1024
KINDS = ("message", "heartbeat", "reminder")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_KNOWN = ("id", "from", "to", "channel", "conversation", "kind", "in_reply_to", "created")


def utcnow() -> dt.datetime:
    """Now, in UTC. `ANIMA_NOW` (an ISO time) pins the clock: for tests and demos that need
    "day 1" and "day 3"."""
    pinned = os.environ.get("ANIMA_NOW")
    if pinned:
        return dt.datetime.fromisoformat(pinned.replace("Z", "+00:00")).astimezone(dt.UTC)
    return dt.datetime.now(dt.UTC)


_LAST_ID: list[tuple[str, int]] = [("", 0)]
"""The last id's time and suffix: ids made in one process within one millisecond count up."""
_ID_LOCK = threading.Lock()


def new_id(now: dt.datetime | None = None) -> str:
    """A sortable, unique id: UTC time to the millisecond plus 6 hex digits, random, except
    that ids this process makes within one millisecond count up from the first: they sort in
    the order they were made (messages of one conversation are delivered in id order)."""
    now = now or utcnow()
    stamp = now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z-"
    with _ID_LOCK:
        last, n = _LAST_ID[0]
        if stamp == last and n < 0xFFFFFF:
            n += 1
        else:
            n = int.from_bytes(os.urandom(3), "big") >> 1  # room to count up
        _LAST_ID[0] = (stamp, n)
    return stamp + f"{n:06x}"


def iso(ts: dt.datetime) -> str:
    """UTC to the millisecond, always a four-digit year (strftime writes year 5 as "5")."""
    u = ts.astimezone(dt.UTC)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}."
        f"{u.microsecond // 1000:03d}Z"
    )


def valid_id(value: str) -> bool:
    return bool(_ID_RE.match(value)) and ".." not in value


@dataclass(frozen=True)
class Message:
    """A message file's content. Pure value: where it lives is the mailbox's business."""

    id: str
    sender: str
    to: str
    body: str
    channel: str = "cli"
    conversation: str = "main"
    kind: str = "message"
    in_reply_to: str | None = None
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        *,
        sender: str,
        to: str,
        body: str,
        channel: str = "cli",
        conversation: str | None = None,
        kind: str = "message",
        in_reply_to: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Message:
        now = utcnow()
        return cls(
            id=new_id(now),
            sender=sender,
            to=to,
            body=body,
            channel=channel,
            conversation=conversation or channel,
            kind=kind,
            in_reply_to=in_reply_to,
            created=iso(now),
            extra=dict(extra or {}),
        )

    @property
    def hops(self) -> int:
        """Agent-to-agent hops the message's chain has taken (the loop cap counts them); a
        value that is not a count is 0, never an error in the turn or the router."""
        value = self.extra.get("hops", 0)
        if isinstance(value, bool):
            return 0
        try:
            return max(0, int(value))
        except (TypeError, ValueError, OverflowError):
            return 0

    def with_(self, **changes: Any) -> Message:
        return replace(self, **changes)


def render(msg: Message) -> str:
    """Markdown with YAML front matter; known keys first, unknown keys kept."""
    meta: dict[str, Any] = {
        "id": msg.id,
        "from": msg.sender,
        "to": msg.to,
        "channel": msg.channel,
        "conversation": msg.conversation,
        "kind": msg.kind,
    }
    if msg.in_reply_to:
        meta["in_reply_to"] = msg.in_reply_to
    meta["created"] = msg.created
    meta.update({k: v for k, v in msg.extra.items() if k not in _KNOWN})
    head = simple_head(meta)
    if head is None:
        import yaml

        head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False)
    body = msg.body if msg.body.endswith("\n") else msg.body + "\n"
    return f"---\n{head}---\n{body}"


_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,99}|[0-9]{8}T[0-9]{9}Z-[0-9a-f]{6}")
"""Strings YAML reads back as the same string, written bare: a name or word of up to 100 characters
(PyYAML writes a longer key, past ~120, as a complex key), and new_id()'s ids."""
_YAML_WORDS = frozenset({"yes", "no", "true", "false", "on", "off", "null", "y", "n"})
"""...except these, which YAML reads as booleans or null, in any case."""
_ISO_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")


def _simple_scalar(value: object) -> str | None:
    """`value` written as PyYAML's safe_dump writes it, if it is one of the few simple forms."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        return None
    if _ISO_TIME.fullmatch(value):  # iso(): YAML would read a timestamp, so it is quoted
        return f"'{value}'"
    if _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS:
        return value
    return None


def simple_head(meta: dict[str, Any]) -> str | None:
    """The front matter PyYAML's safe_dump would write, when every key and value is simple (ids,
    names, iso() times, counts: what tick, send and the runtime write); None for anything else,
    which goes to PyYAML. Spares `anima send` and `anima tick` importing it."""
    lines = []
    for key, value in meta.items():
        k, v = _simple_scalar(key), _simple_scalar(value)
        if k is None or v is None or not isinstance(key, str):
            return None
        lines.append(f"{k}: {v}\n")
    return "".join(lines) if lines else None


MAX_FIELD_CHARS = 256
"""from, to, channel, conversation, kind, in_reply_to and id are one short line each."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _show(value: Any) -> str:
    """A value for an error message: its repr, cut short (the value may be hostile and huge)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "…"


def _field(meta: dict[str, Any], key: str, default: str) -> str:
    """A known field as one line of text: a scalar, bounded, without control characters."""
    value = meta.get(key)
    if value is None:
        return default
    if isinstance(value, (dict, list)):
        what = "list" if isinstance(value, list) else "mapping"
        raise BadMessage(f"{key} must be a single value, not a {what}")
    if isinstance(value, dt.datetime):
        text = _timestamp(key, value)
    elif isinstance(value, dt.date):
        text = value.isoformat()
    else:
        text = str(value)
    if len(text) > MAX_FIELD_CHARS:
        raise BadMessage(f"{key} is {len(text)} characters long; the limit is {MAX_FIELD_CHARS}")
    if _CONTROL.search(text):
        raise BadMessage(f"{key} {_show(text)} contains control characters or line breaks")
    return text


def _timestamp(key: str, value: Any) -> str:
    """A date and time as iso(); a date alone is midnight UTC, a time without zone is UTC.
    Impossible or out-of-range values (year 0, 99999-01-01, 9999-12-31T23:59-12:00) refused."""
    ts: dt.datetime
    if isinstance(value, dt.datetime):
        ts = value
    elif isinstance(value, dt.date):
        ts = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    elif isinstance(value, str) and len(value) <= 64:
        try:
            ts = dt.datetime.fromisoformat(value)
        except ValueError:
            raise BadMessage(
                f"{key} {_show(value)} is not a date and time (ISO 8601, e.g. 2026-11-24T10:15:00Z)"
            ) from None
    else:
        raise BadMessage(f"{key} {_show(value)} is not a date and time (ISO 8601)")
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    try:
        return iso(ts)
    except (ValueError, OverflowError):
        shown = value.isoformat() if isinstance(value, dt.date) else value
        raise BadMessage(f"{key} {_show(shown)} is out of range") from None


def _created(meta: dict[str, Any], mtime: float | None) -> str:
    """The `created` field; without one, the file's modification time, else now."""
    if meta.get("created") is not None:
        return _timestamp("created", meta["created"])
    if mtime is not None:
        try:
            return iso(dt.datetime.fromtimestamp(mtime, dt.UTC))
        except (ValueError, OverflowError, OSError):
            pass  # a file dated where no clock goes: the time it was read will do
    return iso(utcnow())


def _check_extra(extra: dict[str, Any]) -> None:
    """Unknown keys are kept, but the few the runtime acts on must be what it expects: `hops`
    caps agent chains, `reminder_id` names a file under reminders/."""
    hops = extra.get("hops")
    if hops is not None and (not isinstance(hops, int) or isinstance(hops, bool) or hops < 0):
        raise BadMessage(f"hops {_show(hops)} must be a whole number, 0 or more")
    rid = extra.get("reminder_id")
    if rid is not None and not (isinstance(rid, str) and valid_id(rid)):
        raise BadMessage(f"reminder_id {_show(rid)} is not safe (letters, digits, '.', '_', '-')")


def parse(raw: bytes, *, fallback_id: str, default_to: str, mtime: float | None = None) -> Message:
    """Parse a message file. Raises BadMessage with a reason a person can act on (and
    UnfinishedMessage, a BadMessage, when the front matter is opened and never closed)."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise BadMessage(f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    if b"\x00" in raw:
        raise BadMessage("message is binary (contains NUL bytes); messages are UTF-8 Markdown")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadMessage(f"message is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    from anima import front_matter  # here: its YAML parser costs only the processes that read

    parts = front_matter.split(text)
    if not parts.closed:
        raise UnfinishedMessage(
            "front matter starts with '---' but is never closed by a '---' line"
        )
    try:
        meta = front_matter.load(parts.head) if parts.head is not None else {}
    except BadFrontMatter as exc:
        raise BadMessage(str(exc)) from exc
    msg_id = _field(meta, "id", fallback_id)
    if not valid_id(msg_id):
        raise BadMessage(f"id {_show(msg_id)} is not safe (letters, digits, '.', '_', '-')")
    kind = _field(meta, "kind", "message")
    if kind not in KINDS:
        raise BadMessage(f"kind {_show(kind)} is unknown; use one of {', '.join(KINDS)}")
    body = parts.body + "\n" if parts.body else ""  # render() always ends the body with one
    if not body.strip() and kind == "message":
        raise BadMessage("message body is empty")
    channel = _field(meta, "channel", "file")
    conversation = _field(meta, "conversation", channel)
    if not valid_id(conversation):
        raise BadMessage(
            f"conversation {_show(conversation)} is not safe (letters, digits, '.', '_', '-')"
        )
    extra = {k: v for k, v in meta.items() if k not in _KNOWN}
    _check_extra(extra)
    return Message(
        id=msg_id,
        sender=_field(meta, "from", "you"),
        to=_field(meta, "to", default_to),
        body=body,
        channel=channel,
        conversation=conversation,
        kind=kind,
        in_reply_to=_field(meta, "in_reply_to", "") or None,
        created=_created(meta, mtime),
        extra=extra,
    )
