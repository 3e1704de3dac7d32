"""Message: the one thing that wakes an agent. Parse, render and validate message files (DESIGN §3)."""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

import frontmatter
import yaml

from anima.errors import BadMessage

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


def new_id(now: dt.datetime | None = None) -> str:
    """A sortable, unique id: UTC time to the millisecond plus 6 random hex digits."""
    now = now or utcnow()
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z-" + secrets.token_hex(3)


def iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


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
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False)
    body = msg.body if msg.body.endswith("\n") else msg.body + "\n"
    return f"---\n{head}---\n{body}"


def _text(value: Any) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return iso(value)
    return str(value)


def parse(raw: bytes, *, fallback_id: str, default_to: str, mtime: float | None = None) -> Message:
    """Parse a message file. Raises BadMessage with a reason a person can act on."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise BadMessage(f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    if b"\x00" in raw:
        raise BadMessage("message is binary (contains NUL bytes); messages are UTF-8 Markdown")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadMessage(f"message is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        post = frontmatter.loads(text)
    except yaml.YAMLError as exc:
        raise BadMessage(f"front matter is not valid YAML: {exc}") from exc
    meta = post.metadata
    if not isinstance(meta, dict):
        raise BadMessage("front matter must be a mapping of keys to values")
    msg_id = _text(meta.get("id") or fallback_id)
    if not valid_id(msg_id):
        raise BadMessage(f"id {msg_id!r} is not safe (letters, digits, '.', '_', '-')")
    kind = _text(meta.get("kind", "message"))
    if kind not in KINDS:
        raise BadMessage(f"kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    body = post.content + "\n" if post.content else ""  # render() always ends the body with one
    if not body.strip() and kind == "message":
        raise BadMessage("message body is empty")
    channel = _text(meta.get("channel", "file"))
    conversation = _text(meta.get("conversation", channel))
    if not valid_id(conversation):
        raise BadMessage(
            f"conversation {conversation!r} is not safe (letters, digits, '.', '_', '-')"
        )
    created = meta.get("created")
    if created is None and mtime is not None:
        created = dt.datetime.fromtimestamp(mtime, dt.UTC)
    return Message(
        id=msg_id,
        sender=_text(meta.get("from", "you")),
        to=_text(meta.get("to", default_to)),
        body=body,
        channel=channel,
        conversation=conversation,
        kind=kind,
        in_reply_to=_text(meta["in_reply_to"]) if meta.get("in_reply_to") else None,
        created=_text(created) if created is not None else iso(utcnow()),
        extra={k: v for k, v in meta.items() if k not in _KNOWN},
    )
