"""A chat session that only writes and reads files (DESIGN §6): messages go into inboxes,
replies are followed in run/stream/ and outbox/. `anima chat` is a thin UI over this."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anima import mailbox, status, stream
from anima.agent import Agent
from anima.errors import AnimaError, BadName
from anima.home import Home
from anima.message import Message, utcnow

_MENTION = re.compile(r"^@([a-z0-9][a-z0-9_-]*)\s+(.+)$", re.S)
POLL = 0.02
WATCHDOG_EVERY = 0.5


@dataclass
class Outcome:
    agent: str
    reply: str | None = None
    error: str | None = None
    interrupted: bool = False


@dataclass
class ChatSession:
    home: Home
    agent: str
    sender: str = "you"
    conversation: str = "cli"
    shown: set[str] = field(default_factory=set)
    """Outbox ids already displayed (replies we followed, messages already announced)."""

    def __post_init__(self) -> None:
        Agent.open(self.home, self.agent)
        self.shown.update(p.stem for p in self._outbox_files())

    # -- sending --------------------------------------------------------------------------------
    def route(self, text: str) -> tuple[list[str], str]:
        """`@name text` → that agent, `@all text` → every agent, else the current agent."""
        m = _MENTION.match(text.strip())
        if not m:
            return [self.agent], text
        name, body = m.group(1), m.group(2)
        if name == "all":
            return self.home.agent_names(), body
        if name not in self.home.agent_names():
            raise BadName(f"no agent named {name!r}; agents: {', '.join(self.home.agent_names())}")
        return [name], body

    def send(self, text: str) -> list[Message]:
        targets, body = self.route(text)
        sent = []
        for name in targets:
            msg = Message.create(
                sender=self.sender,
                to=name,
                body=body,
                channel="cli",
                conversation=self.conversation,
            )
            mailbox.deliver(self.home.agents_dir / name, msg)
            sent.append(msg)
        return sent

    # -- following ------------------------------------------------------------------------------
    def follow(
        self,
        msg: Message,
        on_event: Callable[[dict[str, Any]], None],
        *,
        stop: threading.Event | None = None,
        timeout: float | None = None,
        watchdog: Callable[[], None] | None = None,
    ) -> Outcome:
        """Show a reply as it streams, until the turn ends (or `stop` is set: the turn still
        completes and is committed). `watchdog` is called about every WATCHDOG_EVERY seconds
        while nothing arrives (the chat checks that a runtime is still there to answer)."""
        path = stream.stream_path(self.home, msg.to, msg.id)
        offset = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        next_check = time.monotonic() + WATCHDOG_EVERY
        out = Outcome(msg.to)
        while True:
            events, offset = stream.read_events(path, offset)
            for ev in events:
                if ev["t"] == "end":
                    out.error = ev.get("error")
                    if ev.get("reply"):
                        self.shown.add(ev["reply"])
                        out.reply = self._read_outbox(msg.to, ev["reply"])
                    return out
                on_event(ev)
            if not events:
                reply = self._reply_in_outbox(msg)  # a turn run without a stream (run --once)
                if reply is not None:
                    self.shown.add(reply.id)
                    out.reply = reply.body
                    return out
                if (stop is not None and stop.is_set()) or (
                    deadline and time.monotonic() > deadline
                ):
                    out.interrupted = True
                    return out
                if watchdog is not None and time.monotonic() > next_check:
                    watchdog()
                    next_check = time.monotonic() + WATCHDOG_EVERY
                time.sleep(POLL)

    def _read_outbox(self, agent: str, msg_id: str) -> str | None:
        path = mailbox.outbox_path(self.home.agents_dir / agent, msg_id)
        try:
            return mailbox.read_message(path, agent).body
        except (FileNotFoundError, AnimaError):
            return None

    def _outbox_files(self) -> list[Path]:
        month = utcnow().strftime("%Y-%m")
        return [
            p
            for name in self.home.agent_names()
            for p in (self.home.agents_dir / name / "outbox" / month).glob("*.md")
        ]

    def _reply_in_outbox(self, msg: Message) -> Message | None:
        return mailbox.reply_to(self.home.agents_dir / msg.to, msg.to, msg.id, skip=self.shown)

    def incoming(self) -> list[Message]:
        """Messages agents sent to this conversation on their own (not replies we followed)."""
        new = []
        for p in sorted(self._outbox_files(), key=lambda p: p.stem):
            if p.stem in self.shown:
                continue
            self.shown.add(p.stem)
            try:
                m = mailbox.read_message(p, p.parent.parent.parent.name)
            except AnimaError:
                continue
            if m.to == self.sender and m.channel == "cli" and m.conversation == self.conversation:
                new.append(m)
        return new

    def new_conversation(self) -> str:
        self.conversation = "cli-" + utcnow().strftime("%Y%m%d-%H%M%S")
        return self.conversation


class BackgroundRuntime:
    """An in-process `anima run` for a chat session when no runtime is live."""

    def __init__(self, home: Home):
        self.home = home
        self._thread = threading.Thread(target=self._main, name="anima-runtime", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None

    def _main(self) -> None:
        from anima.runtime import Runtime

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            # Its lock says a chat holds it, so `anima run` can say so and how to hand over.
            runtime = Runtime(self.home, holder=status.CHAT_HOST)
            runtime.on_ready = self._ready.set
            await runtime.run(self._stop)

        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported to the session, never silent
            self.error = exc
            self._ready.set()

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        self._ready.wait(timeout)
        if self.error is not None:
            raise AnimaError(f"could not start a runtime for this session: {self.error}")

    def stop(self) -> None:
        """Stop as `anima run` stops on SIGTERM: a turn in flight gets the same grace period
        to finish and commit (the runtime abandons it after that, so this join ends)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(self.home.config().runtime.grace_seconds + 5.0)


def runtime_live(home: Home) -> bool:
    return status.runtime_live(home)
