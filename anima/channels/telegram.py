"""Telegram adapter (python-telegram-bot, long polling).

Inbound: getUpdates → admit → inbox; the update offset is acknowledged only after the message is
in the inbox (ids derive from Telegram's, so a re-fetched update is not delivered twice).
Outbound: spool/telegram/new → sendMessage, split at 4,096 characters, the first part threaded
under the message it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

from anima.channels import base
from anima.channels.bridge import ChatBridge
from anima.channels.config import ChatChannel
from anima.credentials import secret
from anima.errors import BadConfig, ServiceUnavailable
from anima.fsutil import write_atomic
from anima.home import Home

log = logging.getLogger(__name__)

LIMIT = 4096
API = "https://api.telegram.org"


def _translate(exc: Exception) -> Exception:
    from telegram import error

    if isinstance(exc, error.RetryAfter):
        wait = exc.retry_after  # seconds, or a timedelta when PTB_TIMEDELTA is set
        seconds = wait.total_seconds() if isinstance(wait, dt.timedelta) else float(wait)
        return base.TransientError(str(exc), retry_after=seconds)
    if isinstance(exc, error.BadRequest | error.Forbidden | error.ChatMigrated | error.InvalidToken):
        return base.PermanentError(str(exc))
    if isinstance(exc, error.TelegramError):  # NetworkError, TimedOut, 5xx
        return base.TransientError(str(exc))
    return exc


class TelegramPort:
    limit = LIMIT
    measure = staticmethod(base.utf16_units)

    def __init__(self, bot: Any):
        self.bot = bot

    async def send_text(self, chat: str, text: str, reply_to: str | None) -> None:
        from telegram import ReplyParameters

        params = ReplyParameters(int(reply_to), allow_sending_without_reply=True) if reply_to else None
        try:
            await self.bot.send_message(chat_id=int(chat), text=text, reply_parameters=params)
        except ValueError as exc:
            raise base.PermanentError(f"not a Telegram chat id: {chat!r}") from exc
        except Exception as exc:
            raise _translate(exc) from exc

    async def show_typing(self, chat: str) -> None:
        try:
            await self.bot.send_chat_action(chat_id=int(chat), action="typing")
        except Exception as exc:
            raise _translate(exc) from exc


def incoming(message: Any, bot_id: int, username: str) -> tuple[base.Incoming, str]:
    """A telegram.Message as an Incoming, and its text with the bot's @mention removed."""
    text = message.text or message.caption or ""  # a photo's caption is its text
    mention = f"@{username}".lower()
    replied_to_bot = bool(
        message.reply_to_message
        and message.reply_to_message.from_user
        and message.reply_to_message.from_user.id == bot_id
    )
    user = message.from_user
    inc = base.Incoming(
        channel="telegram",
        user=str(user.id) if user else "",
        name=(user.full_name or user.username or str(user.id)) if user else "",
        chat=str(message.chat.id),
        message_id=str(message.message_id),
        text=text,
        private=message.chat.type == "private",
        mentioned=mention in text.lower() or replied_to_bot,
        from_bot=bool(user is None or user.is_bot),
        sent_at=message.date,
    )
    stripped = text
    if username:
        idx = text.lower().find(mention)
        if idx >= 0:
            stripped = (text[:idx] + text[idx + len(mention) :]).strip() or text
    return inc, stripped


class TelegramAdapter:
    def __init__(self, home: Home, cfg: ChatChannel):
        self.home = home
        self.cfg = cfg
        self.token = secret(home, cfg.token_env, "the Telegram bot token")
        self.offset_path = home.run_dir / "channels" / f"{cfg.name}.offset"

    def _offset(self) -> int | None:
        try:
            return int(self.offset_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    async def run(self, stop: asyncio.Event) -> None:
        telegram = base.require("telegram", "telegram")
        api = (self.cfg.base_url or API).rstrip("/")
        bot = telegram.Bot(self.token, base_url=f"{api}/bot")
        try:
            await bot.initialize()  # getMe: who we are, for mentions
            # A webhook set on the bot (by another tool) makes every getUpdates fail with 409.
            await bot.delete_webhook(drop_pending_updates=False)
        except telegram.error.InvalidToken as exc:
            raise BadConfig(f"Telegram refused the bot token: {exc}") from exc
        except telegram.error.TelegramError as exc:
            raise ServiceUnavailable(f"cannot reach the Telegram Bot API at {api}: {exc}") from exc
        bridge = ChatBridge(self.home, self.cfg.name, self.cfg, TelegramPort(bot))
        log.info("telegram: @%s serving %s", bot.username, self.cfg.agent)
        try:  # a long poll cut short leaves its updates unacknowledged: fetched again next start
            await base.supervise(
                stop,
                [bridge.outbound(stop), bridge.keep_typing(stop)],
                [self._poll(bot, bridge, stop)],
                grace=self.cfg.delivery.send_timeout + 5,
            )
        finally:
            with contextlib.suppress(Exception):
                await bot.shutdown()

    async def _poll(self, bot: Any, bridge: ChatBridge, stop: asyncio.Event) -> None:
        from telegram import error

        offset = self._offset()
        delay = 1.0
        while not stop.is_set():
            try:
                updates = await bot.get_updates(
                    offset=offset,
                    timeout=self.cfg.poll_timeout,
                    allowed_updates=["message"],
                    read_timeout=self.cfg.poll_timeout + 10,
                )
            except error.InvalidToken:
                log.error("telegram: the bot token was refused; stopping")
                stop.set()
                return
            except error.TelegramError as exc:
                log.warning("telegram: getUpdates failed (%s); retrying in %.0fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 60.0)
                continue
            delay = 1.0
            for update in updates:
                message = update.message
                if message is not None:
                    inc, text = incoming(message, bot.id, bot.username or "")
                    await bridge.receive(inc, text)
                offset = update.update_id + 1
                write_atomic(self.offset_path, f"{offset}\n", durable=False)
