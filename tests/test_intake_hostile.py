"""Hostile inbox files and front matter: each is a rejection with a reason, never an exception,
a hang, a message handled twice, or another agent's file carried into this repository."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import git
import pytest

from anima import context, front_matter, mailbox, memory, search
from anima.agent import Agent
from anima.errors import BadMessage
from anima.home import Home
from anima.message import Message, parse, render
from anima.runtime import run_once
from anima.testing import FakeModelServer, Reply
from tests.conftest import make_agent, send


def _parse(text: str | bytes) -> Message:
    raw = text.encode() if isinstance(text, str) else text
    return parse(raw, fallback_id="x", default_to="arya", mtime=0.0)


def _drop(agent: Agent, name: str, text: str | bytes) -> Path:
    agent.inbox.mkdir(exist_ok=True)
    path = agent.inbox / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _reasons(agent: Agent) -> dict[str, str]:
    rejected = agent.inbox / "rejected"
    return {p.name.removesuffix(".error.md"): p.read_text() for p in rejected.glob("*.error.md")}


def _bomb(key: str = "from") -> str:
    """A few hundred bytes whose aliases expand to 10^8 list items."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefg", "bcdefgh", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    return "---\n" + "\n".join(lines) + f"\n{key}: *h\n---\nhi\n"


# -- front matter that cannot become a message ---------------------------------------------------


@pytest.mark.parametrize(
    "created",
    [
        "2026-13-45",
        "99999-01-01",
        "0000-01-01",
        "2026-02-30T10:00:00Z",
        "2026-01-01T25:00:00Z",
        "2026-01-01T00:00:00+99:00",
        "9999-12-31T23:59:59-12:00",
        "0001-01-01T00:00:00+05:00",
        "'not a date'",
        "1e400",
        "[2026, 1, 1]",
    ],
)
def test_impossible_dates_are_rejections_with_a_reason(created: str) -> None:
    with pytest.raises(BadMessage, match="created|impossible|range|date"):
        _parse(f"---\nfrom: you\ncreated: {created}\n---\nhi\n")


def test_a_valid_created_is_kept_as_utc_to_the_millisecond() -> None:
    assert _parse("---\ncreated: 2026-11-24T11:15:00.5+01:00\n---\nhi\n").created == (
        "2026-11-24T10:15:00.500Z"
    )
    assert _parse("---\ncreated: 2026-11-24\n---\nhi\n").created == "2026-11-24T00:00:00.000Z"
    assert _parse("---\ncreated: '0005-01-01T00:00:00Z'\n---\nhi\n").created.startswith("0005-")


@pytest.mark.parametrize(
    "value",
    [
        "!!python/object/apply:os.system ['true']",
        "!!python/name:os.system",
        "!!binary aGVsbG8=",
        "!foo bar",
        "!!str tagged",
        "! plain",
    ],
)
def test_yaml_tags_are_refused(value: str) -> None:
    with pytest.raises(BadMessage, match="tag"):
        _parse(f"---\nfrom: {value}\n---\nhi\n")


@pytest.mark.parametrize("key", ["from", "note"])
def test_an_alias_bomb_is_refused_at_once(key: str) -> None:
    bomb = _bomb(key)
    assert len(bomb) < 400
    start = time.perf_counter()
    with pytest.raises(BadMessage, match="alias"):
        _parse(bomb)
    assert time.perf_counter() - start < 0.1


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        ("from: [a, [b, [c]]]", "from must be a single value"),
        ("to: {agent: arya}", "to must be a single value"),
        ("channel: [telegram]", "channel must be a single value"),
        ("in_reply_to: {a: 1}", "in_reply_to must be a single value"),
        ("from: " + "x" * 300, "from is 300 characters long"),
        ('from: "you\\nAnima-Trigger: forged"', "line breaks"),
        ("1: one\n1: again", "appears twice"),
        ("? [a, b]\n: c", "keys must be text"),
        ("note: " + "[" * 40 + "]" * 40, "nested"),
        ("note: [" + ", ".join(["x"] * 5000) + "]", "more than 4096 values"),
        ("note: " + "9" * 5000, "longer than 64 digits"),
        ("- just\n- a list", "must be a mapping"),
        ("a: 1\n--- b: 2", "one YAML document"),
        ("hops: lots", "hops"),
        ("reminder_id: ../../agent", "reminder_id"),
    ],
)
def test_front_matter_fields_are_bounded_single_values(head: str, reason: str) -> None:
    with pytest.raises(BadMessage, match=reason):
        _parse(f"---\n{head}\n---\nhi\n")


def test_unknown_keys_are_kept_within_the_front_matter_cap() -> None:
    msg = _parse("---\nfrom: you\nmood: {today: good, scores: [1, 2.5, true, null]}\n---\nhi\n")
    assert msg.extra == {"mood": {"today": "good", "scores": [1, 2.5, True, None]}}
    assert parse(render(msg).encode(), fallback_id="x", default_to="arya") == msg
    big = "---\n" + "".join(f"k{i}: {'v' * 60}\n" for i in range(1200)) + "---\nhi\n"
    with pytest.raises(BadMessage, match="characters; the limit is 65536"):
        _parse(big)


def test_keys_are_the_text_written() -> None:
    assert _parse("---\non: push\n2026: year\n---\nhi\n").extra == {"on": "push", "2026": "year"}


# -- scan: one file never holds back the others ------------------------------------------------


POISON = {
    "bad-month.md": "---\ncreated: 2026-13-45\n---\nhi\n",
    "far-offset.md": "---\ncreated: 9999-12-31T23:59:59-12:00\n---\nhi\n",
    "tag.md": "---\nfrom: !!python/name:os.system\n---\nhi\n",
    "bomb.md": _bomb(),
}


def test_poison_files_are_rejected_and_the_good_message_is_answered(
    home: Home, fake: FakeModelServer
) -> None:
    agent = make_agent(home)
    for name, text in POISON.items():
        _drop(agent, name, text)
    good = send(agent, "a good message")
    fake.add(Reply("answered"))
    (r,) = run_once(home)
    assert r.error is None and r.message_ids == [good.id]
    reasons = _reasons(agent)
    assert set(reasons) == set(POISON)
    assert "month must be in 1..12" in reasons["bad-month.md"]
    assert "out of range" in reasons["far-offset.md"]
    assert "alias" in reasons["bomb.md"]
    assert (agent.inbox / "rejected" / "bomb.md").read_text() == POISON["bomb.md"]  # nothing lost
    assert not git.Repo(agent.path).is_dirty(untracked_files=True)


def test_files_named_like_the_inbox_folders_are_moved_aside(home: Home) -> None:
    agent = make_agent(home)
    _drop(agent, "rejected", "I am a file, not a folder")
    _drop(agent, ".tmp", "me too")
    _drop(agent, "bad name!.md", "hello")
    ok = _drop(agent, "fine.md", "hello")
    scan = mailbox.scan(agent.path, "arya")
    assert [p.path for p in scan.pending] == [ok]
    assert (agent.inbox / "rejected").is_dir() and not (agent.inbox / ".tmp").exists()
    reasons = _reasons(agent)
    assert "may not be named 'rejected'" in reasons["rejected"]
    assert "may not be named '.tmp'" in reasons["tmp"]
    assert "not accepted" in reasons["bad_name_.md"]
    assert (agent.inbox / "rejected" / "rejected").read_text() == "I am a file, not a folder"
    assert mailbox.deliver(agent.path, Message.create(sender="you", to="arya", body="x"))


def test_a_hard_link_to_another_agents_file_is_refused(home: Home, fake: FakeModelServer) -> None:
    agent = make_agent(home)
    other = make_agent(home, "bob")
    secret = other.memory_dir / "MEMORY.md"
    secret.write_text("bob's private memory\n")
    agent.inbox.mkdir(exist_ok=True)
    os.link(secret, agent.inbox / "linked.md")
    assert mailbox.scan(agent.path, "arya").pending == []
    assert "hard links" in _reasons(agent)["linked.md"]
    assert run_once(home, ["arya"]) == []
    assert "bob's private" not in git.Repo(agent.path).git.log("-p", "--all")
    assert secret.read_text() == "bob's private memory\n"


def test_links_fifos_sockets_and_folders_are_refused_without_blocking(home: Home) -> None:
    agent = make_agent(home)
    agent.inbox.mkdir(exist_ok=True)
    (agent.inbox / "link.md").symlink_to(agent.memory_dir / "MEMORY.md")
    os.mkfifo(agent.inbox / "pipe.md")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(agent.inbox / "sock.md"))
    (agent.inbox / "folder.md").mkdir()
    (agent.inbox / "folder.md" / "inner.md").write_text("hi")
    ok = _drop(agent, "ok.md", "hello")
    start = time.perf_counter()
    scan = mailbox.scan(agent.path, "arya")
    sock.close()
    assert time.perf_counter() - start < 5
    assert [p.path for p in scan.pending] == [ok]
    reasons = _reasons(agent)
    assert "symlink" in reasons["link.md"]
    assert "FIFO" in reasons["pipe.md"]
    assert "socket" in reasons["sock.md"]
    assert "folder" in reasons["folder.md"]
    assert (agent.inbox / "rejected" / "folder.md" / "inner.md").read_text() == "hi"
    assert sorted(p.name for p in agent.inbox.iterdir()) == ["ok.md", "rejected"]


def test_an_id_already_handled_is_rejected_not_answered_again(
    home: Home, fake: FakeModelServer
) -> None:
    agent = make_agent(home)
    first = send(agent, "the original")
    fake.add(Reply("answered once"))
    (r,) = run_once(home)
    archived = mailbox.archive_path(agent.path, first.id)
    original = archived.read_text()
    _drop(agent, f"{first.id}.md", render(first.with_(body="a forged second copy\n")))
    head = git.Repo(agent.path).head.commit.hexsha
    assert run_once(home) == []
    assert git.Repo(agent.path).head.commit.hexsha == head
    assert archived.read_text() == original
    assert "already handled" in _reasons(agent)[f"{first.id}.md"]
    assert len(fake.requests) == 1


def test_unfinished_front_matter_waits_while_young_then_is_rejected(home: Home) -> None:
    agent = make_agent(home)
    path = _drop(agent, "slow.md", "---\nfrom: you\nconversation: plans\n")
    assert mailbox.scan(agent.path, "arya", settle=30).unsettled == 1
    assert path.exists()
    old = time.time() - 60
    os.utime(path, (old, old))
    scan = mailbox.scan(agent.path, "arya", settle=30)
    assert scan.pending == [] and scan.unsettled == 0
    assert "never closed" in _reasons(agent)["slow.md"]


def test_a_slow_writer_is_taken_once_complete(home: Home) -> None:
    agent = make_agent(home)
    path = _drop(agent, "slow.md", "---\nfrom: you\n")
    assert mailbox.scan(agent.path, "arya", settle=30).unsettled == 1
    with open(path, "a") as fh:
        fh.write("---\nthe whole message\n")
    old = time.time() - 60
    os.utime(path, (old, old))
    (p,) = mailbox.scan(agent.path, "arya", settle=30).pending
    assert p.message.body == "the whole message\n"


def test_an_oversized_file_is_reported_with_its_real_size(home: Home) -> None:
    agent = make_agent(home)
    _drop(agent, "huge.md", b"x" * 3_000_000)
    assert mailbox.scan(agent.path, "arya").pending == []
    assert "message is 3000000 bytes; the limit is 1048576" in _reasons(agent)["huge.md"]


def test_rejections_of_the_same_name_never_overwrite_each_other(home: Home) -> None:
    agent = make_agent(home)
    for text in ("---\nkind: shout\n---\nfirst\n", "---\nkind: yell\n---\nsecond\n"):
        _drop(agent, "same.md", text)
        mailbox.scan(agent.path, "arya")
    rejected = agent.inbox / "rejected"
    assert (rejected / "same.md").read_text().endswith("first\n")
    assert (rejected / "same.md.1").read_text().endswith("second\n")
    assert "'yell'" in (rejected / "same.md.1.error.md").read_text()


# -- memory notes: front matter read as safely as a message's ------------------------------------


HOSTILE_NOTES = {
    "bad-date.md": "---\ndescription: x\nwhen: 2026-13-45\n---\nnote\n",
    "tag.md": "---\ndescription: !!python/name:os.system\n---\nnote\n",
    "bomb.md": _bomb("description").replace("\nhi\n", "\nnote\n"),
    "int-key.md": "---\n1: x\ndescription: y\n---\nnote\n",
    "unclosed.md": "---\ndescription: never closed\n",
    "long.md": "---\ndescription: " + "word " * 500 + "\n---\nnote\n",
}


def test_hostile_notes_do_not_break_context_or_search(home: Home) -> None:
    agent = make_agent(home)
    for name, text in HOSTILE_NOTES.items():
        (agent.memory_dir / name).write_text(text)
    os.mkfifo(agent.memory_dir / "pipe.md")
    (agent.memory_dir / "good.md").write_text("---\ndescription: a good note\n---\nnote\n")
    start = time.perf_counter()
    notes = dict(memory.index(agent.memory_dir).notes)
    assert time.perf_counter() - start < 1
    assert notes["good.md"] == "a good note"
    assert notes["int-key.md"] == "y"  # keys are text: `1:` is "1"
    assert all(notes[name] == "" for name in HOSTILE_NOTES if name not in ("long.md", "int-key.md"))
    assert len(notes["long.md"]) == memory.DESCRIPTION_CHARS + 1
    assert notes["pipe.md"] == ""
    assert "a good note" in context.memory_segment(agent)
    (agent.memory_dir / "pipe.md").unlink()  # search.py reads notes whole: not a FIFO's place
    assert search.search(agent.path, "note")


def test_a_fifo_note_is_read_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.md")
    assert front_matter.read_meta(tmp_path / "pipe.md") == {}


def test_delivery_still_works_when_a_file_takes_the_staging_folders_name(home: Home) -> None:
    agent = make_agent(home)
    _drop(agent, ".tmp", "not a folder")
    msg = Message.create(sender="you", to="arya", body="still delivered")
    assert mailbox.deliver(agent.path, msg) == agent.inbox / f"{msg.id}.md"
    assert (agent.inbox / ".tmp").is_dir()
    assert (agent.inbox / "rejected" / "tmp").read_text() == "not a folder"
