"""The Discord adapter at its boundary: real discord.py Message objects (built from gateway
payloads) go into the adapter's on_message; outgoing records go through the adapter's port to a
recording channel that answers like discord.py (sends, or raises its HTTP exceptions)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import discord
import pytest

from anima import router
from anima.channels import access
from anima.channels.config import load
from anima.channels.discord import DiscordAdapter, DiscordPort
from anima.home import Home
from anima.mailbox import read_message
from anima.message import Message
from anima.spool import attempt
from tests.conftest import add_channel, make_agent

OWNER = 4242
ME = {"id": "999", "username": "arya", "discriminator": "0", "avatar": None, "bot": True}


def user(uid: int, name: str, bot: bool = False) -> dict[str, Any]:
    return {"id": str(uid), "username": name, "discriminator": "0", "avatar": None, "global_name": name.title(), "bot": bot}


class Response:  # what discord.HTTPException reads from an aiohttp response
    def __init__(self, status: int, reason: str = "error"):
        self.status = status
        self.reason = reason


class RecordingChannel:
    def __init__(self, cid: int, failures: list[Exception]):
        self.id = cid
        self.failures = failures
        self.sent: list[tuple[str, int | None]] = []
        self.typing_count = 0

    async def send(self, content: str, *, reference: Any = None, allowed_mentions: Any = None) -> None:
        if self.failures:
            raise self.failures.pop(0)
        assert allowed_mentions is not None  # replies never ping @everyone
        self.sent.append((content, reference.message_id if reference else None))

    async def typing(self) -> None:
        self.typing_count += 1


class RecordingPort(DiscordPort):
    def __init__(self, client: Any, failures: list[Exception] | None = None):
        super().__init__(client)
        self.channels: dict[int, RecordingChannel] = {}
        self.failures = failures or []

    async def channel(self, chat: str) -> Any:
        return self.channels.setdefault(int(chat), RecordingChannel(int(chat), self.failures))


class Gateway:
    """Builds discord.py objects the way the gateway's MESSAGE_CREATE does."""

    def __init__(self, adapter: DiscordAdapter):
        self.state = adapter.client._connection
        self.state.user = discord.ClientUser(state=self.state, data=ME)  # as after READY
        self.guild = discord.Guild(data={"id": "777", "name": "home"}, state=self.state)

    def message(self, text: str, author: dict[str, Any], *, dm: bool = True, mentions: bool = False) -> discord.Message:
        mid = discord.utils.time_snowflake(dt.datetime.now(dt.UTC))
        if dm:
            channel: Any = discord.DMChannel(me=self.state.user, state=self.state, data={"id": str(5000 + int(author["id"]) % 1000), "type": 1, "recipients": [author]})
        else:
            channel = discord.TextChannel(state=self.state, guild=self.guild, data={"id": "888", "type": 0, "name": "general", "position": 0, "guild_id": "777"})
        data = {
            "id": str(mid), "type": 0, "content": text, "author": author, "channel_id": str(channel.id),
            "mentions": [ME] if mentions else [], "attachments": [], "embeds": [], "pinned": False,
            "timestamp": dt.datetime.now(dt.UTC).isoformat(), "edited_timestamp": None,
            "mention_everyone": False, "tts": False,
        }
        return discord.Message(state=self.state, channel=channel, data=data)


@pytest.fixture
def adapter(home: Home, monkeypatch: pytest.MonkeyPatch) -> DiscordAdapter:
    make_agent(home, "arya")
    add_channel(home, "discord", agent="arya", token_env="DISCORD_BOT_TOKEN", owner=str(OWNER),
                delivery={"backoff": 0.01, "max_attempts": 3, "send_timeout": 2.0})
    monkeypatch.setenv("DISCORD_BOT_TOKEN", "test-token")
    a = DiscordAdapter(home, load(home, "discord"))
    a.bridge.port = RecordingPort(a.client)
    return a


def inbox(home: Home) -> list[Message]:
    return [read_message(p, "arya") for p in sorted((home.agents_dir / "arya" / "inbox").glob("*.md"))]


def test_owner_dm_and_guild_mention_reach_the_agent(home: Home, adapter: DiscordAdapter) -> None:
    gw = Gateway(adapter)
    owner = user(OWNER, "me")

    async def scenario() -> list[str]:
        return [
            await adapter.on_message(gw.message("hi from my DM", owner)) or "",
            await adapter.on_message(gw.message("people talking", owner, dm=False)) or "",
            await adapter.on_message(gw.message("<@999> a question", owner, dm=False, mentions=True)) or "",
        ]

    asyncio.run(scenario())
    msgs = inbox(home)
    assert [m.body.strip() for m in msgs] == ["hi from my DM", "a question"]
    dm, guild = msgs
    assert dm.sender == f"discord:{OWNER}" and guild.extra["chat"] == "discord:888"
    assert guild.conversation == "discord-888" and dm.conversation != guild.conversation
    port = adapter.bridge.port
    assert isinstance(port, RecordingPort) and port.channels[888].typing_count >= 1


def test_bots_are_ignored_and_strangers_get_a_pairing_code(home: Home, adapter: DiscordAdapter) -> None:
    gw = Gateway(adapter)

    async def scenario() -> None:
        await adapter.on_message(gw.message("<@999> loop?", user(31, "otherbot", bot=True), mentions=True))
        await adapter.on_message(gw.message("echo", ME))  # our own message
        await adapter.on_message(gw.message("hello", user(77, "grace")))
        await adapter.on_message(gw.message("hello??", user(77, "grace")))

    asyncio.run(scenario())
    assert inbox(home) == []
    port = adapter.bridge.port
    assert isinstance(port, RecordingPort)
    ((text, _),) = [s for c in port.channels.values() for s in c.sent]
    (req,) = access.pending(home)
    assert req.user == "77" and req.code in text
    access.approve(home, "discord", req.code)
    asyncio.run(adapter.on_message(gw.message("hello now", user(77, "grace"))))
    assert [m.body.strip() for m in inbox(home)] == ["hello now"]


def spooled(home: Home, text: str, thread: str | None = "1234") -> Path:
    msg = Message.create(sender="arya", to="discord:888", body=text, channel="discord",
                         extra={"thread": thread} if thread else {})
    (path,) = router.route(home, [msg]).delivered
    return path


def test_long_reply_is_split_at_2000_and_threaded(home: Home, adapter: DiscordAdapter) -> None:
    text = " ".join(f"word{i}" for i in range(900))  # ~6,000 characters
    path = spooled(home, text)
    outcome = asyncio.run(attempt(adapter.bridge.spool, path, adapter.bridge.send, adapter.cfg.delivery))
    assert outcome == "sent"
    port = adapter.bridge.port
    assert isinstance(port, RecordingPort)
    sent = port.channels[888].sent
    assert len(sent) == 4 and all(len(t) <= 2000 for t, _ in sent)
    assert " ".join(t for t, _ in sent) == text
    assert [ref for _, ref in sent] == [1234, None, None, None]


def test_discord_errors_are_retried_or_dead_lettered(home: Home, adapter: DiscordAdapter) -> None:
    port = adapter.bridge.port
    assert isinstance(port, RecordingPort)
    port.failures += [discord.HTTPException(Response(503), "unavailable")]
    path = spooled(home, "try again")
    spool = adapter.bridge.spool
    assert asyncio.run(attempt(spool, path, adapter.bridge.send, adapter.cfg.delivery)) == "retry"
    assert asyncio.run(attempt(spool, path, adapter.bridge.send, adapter.cfg.delivery)) == "sent"
    port.failures += [discord.Forbidden(Response(403), "Missing Access")]
    path = spooled(home, "not allowed here")
    assert asyncio.run(attempt(spool, path, adapter.bridge.send, adapter.cfg.delivery)) == "failed"
    (note,) = (home.spool_dir / "discord" / "failed").glob("*.error.md")
    assert "Missing Access" in note.read_text()
