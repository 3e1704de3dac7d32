"""`anima chat gendry@vps`: a chat session with an agent of another home. Lines are delivered
to its inbox and its reply stream is followed over the peer's transport (one warm SSH session
or keep-alive HTTP connection for the whole chat), with ChatSession's interface."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from anima import peer
from anima.chat import Outcome
from anima.errors import BadName
from anima.home import Home
from anima.message import Message, utcnow

WAIT = 10.0
"""How long one `chat_events` request waits on the other side for something to happen."""


@dataclass
class RemoteSession:
    home: Home
    agent: str
    """`name@peer`."""
    conversation: str = "cli"
    transport: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        address = peer.split_address(self.agent)
        if address is None:
            raise BadName(f"{self.agent!r} is not NAME@PEER")
        self.name, self.peer = address
        self.transport = peer.connect(self.home, self.peer)
        self._call("hello")  # an unreachable peer or a missing agent is said at once

    def _call(self, op: str, timeout: float = peer.CALL_TIMEOUT, **args: Any) -> dict[str, Any]:
        return self.transport.call(peer.request(self.home, op, **args), timeout)

    def send(self, text: str) -> list[Message]:
        answer = self._call(
            "chat_send", agent=self.name, text=text, conversation=self.conversation
        )
        msg = Message(
            id=str(answer["id"]), sender="you", to=self.agent, body=text,
            conversation=self.conversation,
        )
        return [msg]

    def follow(
        self,
        msg: Message,
        on_event: Callable[[dict[str, Any]], None],
        *,
        stop: threading.Event | None = None,
        timeout: float | None = None,
        watchdog: Callable[[], None] | None = None,
    ) -> Outcome:
        """Show the reply as it streams on the other side, until its turn ends."""
        out = Outcome(msg.to)
        offset = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = WAIT if stop is None else 0.5  # short waits: Ctrl-C is noticed soon
            answer = self._call(
                "chat_events", timeout=wait + peer.CALL_TIMEOUT, agent=self.name, id=msg.id,
                offset=offset, wait=wait,
            )
            offset = int(answer.get("offset", offset))
            for ev in answer.get("events", []):
                if isinstance(ev, dict) and ev.get("t") != "end":
                    on_event(ev)
            if answer.get("done"):
                out.reply = answer.get("reply")
                out.error = answer.get("error")
                return out
            if (stop is not None and stop.is_set()) or (deadline and time.monotonic() > deadline):
                out.interrupted = True
                return out

    def incoming(self) -> list[Message]:
        return []  # what the remote agent starts on its own stays in its home's outbox

    def new_conversation(self) -> str:
        self.conversation = "cli-" + utcnow().strftime("%Y%m%d-%H%M%S")
        return self.conversation

    def close(self) -> None:
        self.transport.close()
