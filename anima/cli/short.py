"""`anima tick` and `anima send`: what they do, and a start without click for the plain cases.

Timers, cron and scripts start these two, so they must start fast (issue #13: within 4x a bare
python), and importing click alone costs about twice a bare python. So `main` runs them straight
from argv when argv has one of their plain shapes; anything else (--help, a typo, another command,
TEXT from standard input) goes to the click group, which owns the command line.
anima.cli.messages declares the same two commands for click, over the same functions;
tests/test_cold_start.py checks that the options here are the options there.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (mypy knows)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from anima.home import Home

SEND_OPTIONS = {"--from": "sender", "--conversation": "conversation", "--channel": "channel"}
"""send's options that take a value: option -> keyword of send()."""
TICK_FLAGS = {"--force": "force"}
"""tick's flags: option -> keyword of tick()."""


def send(
    agent_dir: Path,
    name: str,
    body: str,
    *,
    sender: str = "you",
    conversation: str | None = None,
    channel: str = "cli",
) -> str:
    """Deliver `body` to the inbox at `agent_dir` (agent `name`); the new message's id."""
    from anima import mailbox
    from anima.message import Message

    msg = Message.create(
        sender=sender, to=name, body=body, channel=channel, conversation=conversation
    )
    mailbox.deliver(agent_dir, msg)
    return msg.id


def tick(home: Home, name: str, *, force: bool = False) -> str:
    """Deliver a heartbeat to `name`; the line to print (its id, or why there is none)."""
    from anima.schedule import tick as deliver_tick

    msg = deliver_tick(home.require(), name, force=force)
    return msg.id if msg else f"{name}: outside active hours, no heartbeat"


@dataclass(frozen=True)
class Call:
    """A plain `anima [--home DIR] tick|send ...` command line, parsed."""

    home: str | None
    command: str
    args: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    """Keywords for send() or tick()."""


def parse(argv: list[str]) -> Call | None:
    """The tick or send that `argv` asks for, or None for anything this does not handle plainly
    (click then parses it, and explains any mistake)."""
    home = None
    if argv[:1] == ["--home"]:
        if len(argv) < 2 or argv[1].startswith("-"):
            return None
        home, argv = argv[1], argv[2:]
    if not argv or argv[0] not in ("tick", "send"):
        return None
    command, rest = argv[0], iter(argv[1:])
    takes_value = SEND_OPTIONS if command == "send" else {}
    flags = TICK_FLAGS if command == "tick" else {}
    args: list[str] = []
    options: dict[str, Any] = {}
    for token in rest:
        if token in flags:
            options[flags[token]] = True
        elif token in takes_value:
            value = next(rest, None)
            if value is None or value.startswith("-"):
                return None
            options[takes_value[token]] = value
        elif token.startswith("-"):  # --help, --opt=value, "--", "-" (standard input), a typo
            return None
        else:
            args.append(token)
    if len(args) != (2 if command == "send" else 1):
        return None
    if command == "send" and (not args[1].strip() or "@" in args[0]):
        return None  # click says the message is empty, or sends to another home
    return Call(home, command, args, options)


def run(call: Call) -> str:
    """Do what `call` asks; the line to print."""
    from anima.home import Home

    home = Home.locate(call.home)
    if call.command == "tick":
        return tick(home, call.args[0], **call.options)
    name, text = call.args
    return send(home.agent_dir(name), name, text, **call.options)  # AgentNotFound first


def main() -> None:
    """`anima`: a plain tick or send runs here; everything else goes to the click group."""
    call = parse(sys.argv[1:])
    home = (call.home if call else None) or os.environ.get("ANIMA_HOME")
    if call is None or (home and os.path.isfile(home)):  # click explains a home that is a file
        from anima.cli.app import main as group

        group()
        return
    from anima.errors import AnimaError

    try:
        line = run(call)
    except (AnimaError, OSError) as exc:
        from anima.cli.app import fail

        fail(exc)
    print(line)
