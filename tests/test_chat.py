"""`anima chat` driven in a real pseudo-terminal (pexpect), replies from the fake model server."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator

import pexpect
import pytest

from anima import gitstore, mailbox
from anima.home import Home
from anima.message import Message
from anima.testing import FakeModelServer, Reply
from anima.testing.fake_model import last_user_text
from tests.conftest import LiveRuntime, make_agent, wait_for


@pytest.fixture
def spawn(home: Home) -> Iterator[object]:
    children: list[pexpect.spawn] = []

    def start(name: str = "arya") -> pexpect.spawn:
        env = {**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm", "NO_COLOR": "1"}
        child = pexpect.spawn(
            sys.executable,
            ["-m", "anima", "chat", name],
            env=env,
            encoding="utf-8",
            timeout=30,
            dimensions=(50, 200),
        )
        children.append(child)
        child.expect(f"{name} ‹")
        return child

    yield start
    for c in children:
        if c.isalive():
            c.sendeof()
            c.expect(pexpect.EOF, timeout=20)
            c.close()


ANSI = r"(?:\x1b\[[0-9;?]*[A-Za-z])*"


def loose(text: str) -> str:
    """A pattern for `text` as a terminal shows it: styling codes may sit between characters."""
    return ANSI.join(re.escape(ch) for ch in text)


def until(child: pexpect.spawn, *texts: str, name: str = "arya") -> str:
    """Wait for each text in order, then for the next prompt; returns everything seen.
    (Waiting for the prompt alone would match prompt_toolkit's redraw of the line just sent.)"""
    seen = ""
    for t in texts:
        child.expect(loose(t))
        seen += child.before + child.after
    child.expect(f"{name} ‹")
    return seen + child.before


def test_streamed_reply_appears_in_pieces_before_the_final_text(
    home: Home, fake: FakeModelServer, spawn
) -> None:
    make_agent(home)
    fake.add(Reply("alpha beta gamma delta epsilon", chunk=6, delay_per_chunk=0.2))
    c = spawn()
    assert "running one inside this chat" in c.before
    c.sendline("hello there")
    c.expect(loose("alpha"))
    assert "epsilon" not in c.before + c.after + c.buffer  # the first piece came alone
    until(c, "epsilon")
    assert "hello there" in last_user_text("anthropic", fake.requests[0].body)


def test_tool_calls_show_as_compact_lines(home: Home, fake: FakeModelServer, spawn) -> None:
    make_agent(home)
    fake.add(
        Reply(
            "Saving.",
            tool_calls=[{"name": "write_file", "input": {"path": "a.txt", "content": "x"}}],
        ),
        Reply("Saved."),
    )
    c = spawn()
    c.sendline("save a file")
    until(c, "Saving.", "⚙ write_file(path='a.txt', content='x') ok", "Saved.")


def test_at_all_reaches_two_agents_and_both_replies_show(
    home: Home, fake: FakeModelServer, spawn
) -> None:
    make_agent(home, "arya")
    make_agent(home, "gendry")
    fake.add(Reply("reply number one"), Reply("reply number two"))
    c = spawn()
    c.sendline("@all good morning")
    first = c.expect([loose("reply number one"), loose("reply number two")])
    second = ["reply number two", "reply number one"][first]
    out = c.before + until(c, second)
    assert "arya ›" in out and "gendry ›" in out
    for name in ("arya", "gendry"):
        assert len(list((home.agents_dir / name / "archive").rglob("*.md"))) == 1


def test_at_name_sends_to_another_agent_without_leaving(
    home: Home, fake: FakeModelServer, spawn
) -> None:
    make_agent(home, "arya")
    make_agent(home, "gendry")
    fake.add(Reply("gendry here"))
    c = spawn()
    c.sendline("@gendry are you there?")
    until(c, "gendry › gendry here")  # and back at arya's prompt
    assert fake.requests[0].body["system"][0]["text"].startswith("# gendry")


def test_undo_reverts_the_last_turn_and_the_next_turn_no_longer_sees_it(
    home: Home, fake: FakeModelServer, spawn
) -> None:
    agent = make_agent(home)
    fake.add(Reply("noted"), Reply("I do not know"))
    c = spawn()
    c.sendline("my secret word is swordfish")
    until(c, "noted")
    turn = gitstore.log(agent.path, limit=1)[0]
    c.sendline("/undo")
    c.expect(r"\[y/N\]")
    c.sendline("y")
    until(c, f"reverted {turn.short}")
    head = gitstore.log(agent.path, limit=1)[0]
    assert head.subject.startswith("Revert") and turn.sha in head.body
    c.sendline("what was the secret word?")
    until(c, "I do not know")
    assert "swordfish" not in str(fake.requests[-1].body["messages"])


def test_load_switches_agent_and_unknown_commands_help(
    home: Home, fake: FakeModelServer, spawn
) -> None:
    make_agent(home, "arya")
    make_agent(home, "gendry")
    fake.add(Reply("hi from gendry"))
    c = spawn()
    c.sendline("/frobnicate")
    until(c, "unknown command /frobnicate")
    c.sendline("/load gendry")
    until(c, "now talking to gendry", name="gendry")
    c.sendline("hello")
    until(c, "gendry › hi from gendry", name="gendry")
    assert list((home.agents_dir / "gendry" / "archive").rglob("*.md"))
    c.sendline("/load nobody")
    until(c, "no agent named 'nobody'", name="gendry")


def test_with_a_live_runtime_chat_only_writes_files(
    home: Home, fake: FakeModelServer, spawn
) -> None:
    make_agent(home)
    fake.add(Reply("answered by the live runtime", chunk=5, delay_per_chunk=0.05))
    with LiveRuntime(home) as rt:
        c = spawn()
        assert "anima run is live" in c.before
        c.sendline("hello")
        until(c, "answered by the live runtime")
        c.sendeof()
        c.expect(pexpect.EOF)
        assert rt.proc.poll() is None  # the runtime is not the chat's to stop
        rt.stop()


def test_messages_agents_send_to_the_conversation_appear(
    home: Home, fake: FakeModelServer, spawn
) -> None:
    agent = make_agent(home)
    fake.add(Reply("Time to stretch!"))
    c = spawn()
    reminder = Message.create(
        sender="timer",
        to="arya",
        body="stretch",
        channel="timer",
        conversation="cli",
        kind="reminder",
    )
    mailbox.deliver(agent.path, reminder)
    c.expect(loose("arya › Time to stretch!"), timeout=20)


def test_history_memory_log_status_commands(home: Home, fake: FakeModelServer, spawn) -> None:
    make_agent(home)
    fake.add(Reply("first answer"))
    c = spawn()
    c.sendline("first question")
    until(c, "first answer")
    c.sendline("/history 3")
    until(c, "you › first question", "arya › first answer")
    c.sendline("/memory")
    until(c, "Core memory (memory/MEMORY.md")
    c.sendline("/log 2")
    until(c, "turn(arya): reply to cli message from you")
    c.sendline("/status")
    until(c, "arya: 0 pending")
    c.sendline("/new")
    until(c, "new conversation: cli-")
    c.sendline("/quit")
    c.expect(pexpect.EOF)


def test_ctrl_c_stops_waiting_but_the_turn_completes_and_commits(
    home: Home, fake: FakeModelServer, spawn
) -> None:
    agent = make_agent(home)
    fake.add(
        Reply("a long and slow answer that keeps going", chunk=4, delay_per_chunk=0.15),
        Reply("next one"),
    )
    c = spawn()
    c.sendline("tell me slowly")
    c.expect(loose("a lo"))
    c.sendintr()
    until(c, "stopped waiting; arya's turn goes on")
    from tests.conftest import replies

    wait_for(
        lambda: gitstore.log(agent.path, limit=1)[0].subject.startswith("turn(arya)"),
        what="the turn to commit anyway",
    )
    assert replies(agent)[0].body.strip() == "a long and slow answer that keeps going"
    c.sendline("still here?")
    until(c, "next one")


def test_tab_completes_commands_and_agent_names(home: Home, fake: FakeModelServer, spawn) -> None:
    make_agent(home, "arya")
    make_agent(home, "gendry")
    fake.add(Reply("gendry answers"))
    c = spawn()
    c.send("/loa\t")
    c.expect(loose("/load"))
    c.send("gen\t")  # the completion ended with a space: no "/loadgen"
    c.expect(loose("gendry"))
    c.send("\r")
    until(c, "now talking to gendry", name="gendry")
    c.send("@ar\t")
    c.expect(loose("@arya"))
    c.send("\x15")  # Ctrl-U clears the line, so Ctrl-D can leave


def test_keys_typed_while_a_reply_streams_are_kept(
    home: Home, fake: FakeModelServer, spawn
) -> None:
    make_agent(home)
    fake.add(
        Reply("a slow answer that takes its time to arrive", chunk=4, delay_per_chunk=0.15),
        Reply("answer to the queued line"),
        Reply("answer to the finished line"),
    )
    c = spawn()
    c.sendline("go slowly")
    c.expect(loose("a sl"))
    c.send("first queued\r")  # a whole line, Enter included, typed during the stream
    c.send("half typ")  # and the start of another
    until(c, "time to arrive", "answer to the queued line")
    c.send("ed\r")  # the prompt came back holding "half typ"
    until(c, "answer to the finished line")
    texts = [last_user_text("anthropic", r.body) for r in fake.requests]
    assert "first queued" in texts[1] and "half typed" in texts[2]


def test_typeahead_applies_backspace_and_drops_control_keys() -> None:
    from anima.cli.chat import split_typeahead

    assert split_typeahead(b"helo\x7flo\x1b[A there\rnext\x7f\x7fw") == (["hello there"], "new")
    assert split_typeahead("caf\u00e9 \U0001f642".encode()) == ([], "caf\u00e9 \U0001f642")
    assert split_typeahead(b"\r\r") == ([], "")


def test_chat_takes_over_when_the_runtime_it_was_attached_to_stops(
    home: Home, fake: FakeModelServer, spawn
) -> None:
    make_agent(home)
    fake.add(Reply("answered from inside the chat"))
    with LiveRuntime(home) as rt:
        c = spawn()
        assert "anima run is live" in c.before
        rt.stop()
    c.sendline("are you there?")
    until(c, "anima run stopped", "answered from inside the chat")


def test_run_while_a_chat_hosts_the_runtime_says_it_is_a_chat(
    home: Home, fake: FakeModelServer, spawn
) -> None:
    from click.testing import CliRunner

    from anima.cli import main

    make_agent(home)
    c = spawn()
    assert "running one inside this chat" in c.before
    result = CliRunner().invoke(main, ["run"])
    out = " ".join(result.output.split())
    assert result.exit_code == 1 and f"`anima chat` session (pid {c.pid})" in out
    assert "leave that chat (/quit or Ctrl-D)" in out


def test_retries_show_in_the_chat_with_their_reason(
    home: Home, fake: FakeModelServer, spawn
) -> None:
    from anima.testing import Fault

    make_agent(home)
    fake.add(Reply(fault=Fault(status=503, message="overloaded")), Reply("after a retry"))
    c = spawn()
    c.sendline("hello")
    seen = until(c, "retrying", "overloaded", "after a retry")
    assert "↻" in seen
