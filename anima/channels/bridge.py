"""The half of a chat adapter (Telegram, Discord) that does not depend on the service: admit or
pair the sender, deliver to the agent's inbox, show "typing…" until the reply leaves, and send
replies split to the service's limit, threaded under the message they answer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Protocol

from anima.channels import base
from anima.channels.access import Access
from anima.channels.config import ChatChannel
from anima.home import Home
from anima.message import Message
from anima.spool import Progress, Spool, drain

log = logging.getLogger(__name__)

TYPING_EVERY = 4.0
"""Both services show a typing indicator for about five seconds per request."""


class ChatPort(Protocol):
    """What a chat service must offer. Errors are base.TransientError / base.PermanentError."""

    limit: int
    """Longest text one message may carry, as `measure` counts it."""

    def measure(self, text: str) -> int: ...

    async def send_text(self, chat: str, text: str, reply_to: str | None) -> None: ...

    async def show_typing(self, chat: str) -> None: ...


class ChatBridge:
    def __init__(self, home: Home, channel: str, cfg: ChatChannel, port: ChatPort):
        self.home = home
        self.channel = channel
        self.cfg = cfg
        self.port = port
        self.access = Access(home, channel, owner=cfg.owner, allow=cfg.allow)
        self.spool = Spool(home, channel)
        self.working: dict[str, tuple[str, float]] = {}
        """Inbound message id → (chat, give-up time): chats that get a typing indicator."""

    async def receive(self, inc: base.Incoming, text: str | None = None) -> str:
        """Handle one message from the service. Returns the verdict (for logs and tests).
        `text`: the message with the bot's mention removed, when the service marks mentions."""
        inc = dataclasses.replace(inc, channel=self.channel)  # the instance, not its kind
        verdict, detail = base.admit(inc, self.access)
        if verdict == base.PAIR:
            log.info("%s: pairing code %s sent to %s (%s)", self.channel, detail, inc.user, inc.name)
            try:
                await self.port.send_text(inc.chat, base.pairing_text(self.channel, detail), None)
            except (base.TransientError, base.PermanentError) as exc:
                log.warning("%s: could not send the pairing code: %s", self.channel, exc)
        elif verdict == base.NOTICE:
            with contextlib.suppress(base.TransientError, base.PermanentError):
                await self.port.send_text(inc.chat, detail, inc.message_id)
        elif verdict == base.IGNORE:
            log.info("%s: ignored message from %s: %s", self.channel, inc.user, detail)
        else:
            msg = base.to_message(inc, self.cfg.agent, text)
            if base.deliver(self.home, self.cfg.agent, msg):
                self.working[msg.id] = (inc.chat, time.monotonic() + self.cfg.typing_seconds)
                with contextlib.suppress(base.TransientError, base.PermanentError):
                    await self.port.show_typing(inc.chat)
        return verdict

    async def send(self, msg: Message, progress: Progress) -> None:
        """Send a spooled record; parts already accepted (before a crash) are skipped."""
        chat = base.address_of(msg)
        parts = base.split_text(msg.body, self.port.limit, self.port.measure)
        thread = msg.extra.get("thread")
        for i in range(progress.parts_sent, len(parts)):
            reply_to = str(thread) if thread and i == 0 else None
            await self.port.send_text(chat, parts[i], reply_to)
            progress.part_done()

    def answered(self, msg: Message) -> None:
        for key in base.reply_targets(msg):
            self.working.pop(key, None)

    async def keep_typing(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            for key, (_, until) in list(self.working.items()):
                if until < now:
                    self.working.pop(key, None)
            for chat in {chat for chat, _ in self.working.values()}:
                with contextlib.suppress(base.TransientError, base.PermanentError):
                    await self.port.show_typing(chat)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TYPING_EVERY)

    async def outbound(self, stop: asyncio.Event) -> None:
        await drain(self.spool, self.send, self.cfg.delivery, stop, on_sent=self.answered)
