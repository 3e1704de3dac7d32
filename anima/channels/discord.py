"""Discord adapter (discord.py, gateway): direct messages, and mentions in guild channels.

Inbound: on_message → admit → inbox. Outbound: spool/discord/new → channel.send, split at
2,000 characters, the first part a reply to the message it answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from anima.channels import base
from anima.channels.bridge import ChatBridge
from anima.channels.config import ChatChannel
from anima.credentials import secret
from anima.errors import BadConfig, ServiceUnavailable
from anima.home import Home

log = logging.getLogger(__name__)

LIMIT = 2000


def _translate(exc: Exception) -> Exception:
    import aiohttp
    import discord

    if isinstance(exc, discord.Forbidden | discord.NotFound):
        return base.PermanentError(f"{exc.status} {exc.text}")
    if isinstance(exc, discord.HTTPException):
        if exc.status == 429 or exc.status >= 500:
            return base.TransientError(f"{exc.status} {exc.text}")
        return base.PermanentError(f"{exc.status} {exc.text}")
    if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError | discord.GatewayNotFound):
        return base.TransientError(f"{type(exc).__name__}: {exc}")
    return exc


def incoming(message: Any, me: Any) -> tuple[base.Incoming, str]:
    """A discord.Message as an Incoming, and its text with the bot's mention removed."""
    discord = base.require("discord", "discord")
    text = message.content or ""
    mentioned = me is not None and any(u.id == me.id for u in message.mentions)
    author = message.author
    inc = base.Incoming(
        channel="discord",
        user=str(author.id),
        name=getattr(author, "display_name", None) or author.name,
        chat=str(message.channel.id),
        message_id=str(message.id),
        text=text,
        private=isinstance(message.channel, discord.DMChannel),
        mentioned=mentioned,
        from_bot=bool(author.bot) or (me is not None and author.id == me.id),
        sent_at=message.created_at,
    )
    if mentioned and not text:
        log.warning(
            "discord: a mention arrived without its text: switch on Message Content Intent "
            "for the bot in the Discord developer portal"
        )
    stripped = text
    if me is not None:
        for form in (f"<@{me.id}>", f"<@!{me.id}>"):
            stripped = stripped.replace(form, "")
    return inc, stripped.strip() or text


class DiscordPort:
    limit = LIMIT
    measure = staticmethod(len)

    def __init__(self, client: Any):
        self.client = client

    async def channel(self, chat: str) -> Any:
        try:
            cid = int(chat)
        except ValueError as exc:
            raise base.PermanentError(f"not a Discord channel id: {chat!r}") from exc
        found = self.client.get_channel(cid)
        if found is not None:
            return found
        try:
            return await self.client.fetch_channel(cid)
        except Exception as exc:
            raise _translate(exc) from exc

    async def send_text(self, chat: str, text: str, reply_to: str | None) -> None:
        discord = base.require("discord", "discord")
        target = await self.channel(chat)
        ref = (
            discord.MessageReference(message_id=int(reply_to), channel_id=int(chat), fail_if_not_exists=False)
            if reply_to
            else None
        )
        try:
            await target.send(text, reference=ref, allowed_mentions=discord.AllowedMentions.none())
        except Exception as exc:
            raise _translate(exc) from exc

    async def show_typing(self, chat: str) -> None:
        target = await self.channel(chat)
        try:
            await target.typing()
        except Exception as exc:
            raise _translate(exc) from exc


class DiscordAdapter:
    def __init__(self, home: Home, cfg: ChatChannel):
        self.home = home
        self.cfg = cfg
        self.token = secret(home, cfg.token_env, "the Discord bot token")
        discord = base.require("discord", "discord")
        intents = discord.Intents.default()
        intents.message_content = True
        self.client = discord.Client(intents=intents)
        self.bridge = ChatBridge(home, cfg.name, cfg, DiscordPort(self.client))
        self.client.event(self.on_message)

    async def on_message(self, message: Any) -> None:
        inc, text = incoming(message, self.client.user)
        await self.bridge.receive(inc, text)

    async def run(self, stop: asyncio.Event) -> None:
        discord = base.require("discord", "discord")

        async def connect() -> None:
            try:
                await self.client.start(self.token)
            except discord.LoginFailure as exc:
                raise BadConfig(f"Discord refused the bot token: {exc}") from exc
            except Exception as exc:
                if isinstance(_translate(exc), base.TransientError):
                    raise ServiceUnavailable(f"cannot reach Discord: {exc}") from exc
                raise

        async def outbound() -> None:  # channels can be looked up only once connected
            while not self.client.is_ready() and not stop.is_set():
                await asyncio.sleep(0.5)
            await self.bridge.outbound(stop)

        try:
            await base.supervise(
                stop,
                [outbound(), self.bridge.keep_typing(stop)],
                [connect()],
                grace=self.cfg.delivery.send_timeout + 5,
            )
        finally:
            with contextlib.suppress(Exception):
                await self.client.close()
