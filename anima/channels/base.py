"""What every channel adapter shares: the incoming-message value, the admission decision
(owner, allow-list, pairing, mentions in groups, no bots), delivery into an inbox, splitting long
replies, and the two kinds of send failure."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import logging
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anima import mailbox
from anima.channels.access import Access
from anima.errors import AnimaError
from anima.home import Home
from anima.message import Message, iso, utcnow
from anima.spool import PermanentError as PermanentError  # the adapters raise base.*Error
from anima.spool import TransientError as TransientError

log = logging.getLogger(__name__)


def install_hint(extra: str) -> str:
    """The command that installs an extra, from a package index and from a checkout."""
    return f"pip install 'anima[{extra}]' (from a checkout of Anima: pip install '.[{extra}]')"


def require(module: str, extra: str) -> Any:
    """Import a channel's SDK, or say in one line which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise AnimaError(
            f"the {extra} channel needs {module}, which is not installed: {install_hint(extra)}"
        ) from exc


@dataclass(frozen=True)
class Incoming:
    """A message from a chat service, reduced to what Anima needs."""

    channel: str
    user: str
    """The sender's id on the service (what pairing admits)."""
    name: str
    chat: str
    """Where replies go: the chat or channel id."""
    message_id: str
    text: str
    private: bool
    """A one-to-one chat; in groups the bot must be mentioned."""
    mentioned: bool = False
    from_bot: bool = False
    sent_at: dt.datetime | None = None


DELIVER, PAIR, NOTICE, IGNORE = "deliver", "pair", "notice", "ignore"
TEXT_ONLY = "I can only read text for now (a photo needs a caption); please write it out."


def admit(inc: Incoming, access: Access) -> tuple[str, str]:
    """(verdict, detail): DELIVER; PAIR with the new code to send; NOTICE with a text to send
    back instead of delivering; IGNORE with the reason."""
    if inc.from_bot:
        return IGNORE, "sender is a bot (no bot-to-bot loops)"
    if not inc.private and not inc.mentioned:
        return IGNORE, "group message without a mention"
    has_text = bool(inc.text.strip())
    if access.allowed(inc.user):  # without text (a sticker, a voice note): say so, not silence
        return (DELIVER, "") if has_text else (NOTICE, TEXT_ONLY)
    if not has_text:
        return IGNORE, "no text from an unknown sender"
    if not inc.private:
        return IGNORE, "unknown sender in a group (pairing happens in a private chat)"
    code, new = access.request(inc.user, inc.name)
    if code and new:
        return PAIR, code
    return IGNORE, "unknown sender, pairing already requested" if code else "unknown sender"


def pairing_text(channel: str, code: str) -> str:
    return (
        f"Hello! I only talk to people my owner has approved. Your pairing code is {code}.\n"
        f"Ask my owner to run: anima pairing approve {channel} {code}"
    )


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(part: str) -> str:
    return _UNSAFE.sub("_", part).strip("._") or "x"


def inbound_id(inc: Incoming) -> str:
    """Derived from the service's own ids, so a message fetched twice (a restart before the
    service saw our acknowledgement) is delivered once: mailbox.deliver is idempotent by id."""
    when = (inc.sent_at or utcnow()).astimezone(dt.UTC)
    stamp = when.strftime("%Y%m%dT%H%M%S") + f"{when.microsecond // 1000:03d}Z"
    return f"{stamp}-{inc.channel}-{_safe(inc.chat)}-{_safe(inc.message_id)}"[:128]


def to_message(inc: Incoming, agent: str, text: str | None = None) -> Message:
    conversation = f"{inc.channel}-{_safe(inc.chat)}"[:128]
    return Message(
        id=inbound_id(inc),
        sender=f"{inc.channel}:{inc.user}",
        to=agent,
        body=(text if text is not None else inc.text).strip() + "\n",
        channel=inc.channel,
        conversation=conversation,
        created=iso(inc.sent_at or utcnow()),
        extra={
            "chat": f"{inc.channel}:{inc.chat}",
            "thread": inc.message_id,
            "sender_name": inc.name,
        },
    )


def deliver(home: Home, agent: str, msg: Message) -> Path | None:
    """Into the agent's inbox, atomically; None when it was delivered before."""
    return mailbox.deliver(home.agents_dir / agent, msg)


def address_of(msg: Message) -> str:
    """The chat id an outgoing record is for: `telegram:123` → `123`."""
    prefix = f"{msg.channel}:"
    if not msg.to.startswith(prefix) or len(msg.to) == len(prefix):
        raise PermanentError(f"address {msg.to!r} is not {msg.channel}:ID")
    return msg.to[len(prefix) :]


def utf16_units(text: str) -> int:
    """Telegram counts message length in UTF-16 code units (an emoji may be two)."""
    return len(text.encode("utf-16-le")) // 2


def _fit(text: str, limit: int, measure: Callable[[str], int]) -> int:
    """How many characters of `text` fit in `limit` as `measure` counts."""
    n = min(len(text), limit)
    while n and (excess := measure(text[:n]) - limit) > 0:
        n -= max(1, excess // 2)
    return n


def split_text(text: str, limit: int, measure: Callable[[str], int] = len) -> list[str]:
    """Pieces of at most `limit` (as `measure` counts), cut at a paragraph, line, sentence or word
    end when one lies in the second half of the piece; never an empty piece."""
    text = text.strip()
    parts: list[str] = []
    while measure(text) > limit:
        size = _fit(text, limit, measure)
        window = text[:size]
        cut = -1
        for sep in ("\n\n", "\n", ". ", " "):
            at = window.rfind(sep)
            if at >= size // 2:
                cut = at + (1 if sep == ". " else 0)
                break
        if cut <= 0:
            cut = size
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        parts.append(text)
    return parts or ["…"]


def reply_targets(msg: Message) -> list[str]:
    """Ids of the incoming messages an outgoing record answers."""
    ids = [str(i) for i in msg.extra.get("answers", []) or []]
    if msg.in_reply_to and msg.in_reply_to not in ids:
        ids.append(msg.in_reply_to)
    return ids


async def supervise(
    stop: asyncio.Event,
    finish: list[Coroutine[Any, Any, None]],
    cancel: list[Coroutine[Any, Any, None]] = (),  # type: ignore[assignment]
    grace: float = 35.0,
) -> None:
    """Run an adapter's loops until `stop` or until one of them fails (then stop the others and
    raise, so systemd restarts the adapter). On stop, `cancel` loops (a long poll) are cancelled
    at once; `finish` loops (outbound sends in flight) get `grace` seconds to wind down."""
    first = [asyncio.create_task(c) for c in finish]
    second = [asyncio.create_task(c) for c in cancel]
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([waiter, *first, *second], return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    for task in second:
        task.cancel()
    _, late = await asyncio.wait([*first, *second], timeout=grace)
    for task in late:
        task.cancel()
    for task in [*first, *second]:
        if task.done() and not task.cancelled() and task.exception():
            raise task.exception()  # type: ignore[misc]
