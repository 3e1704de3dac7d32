"""Delivery, parsing and rejection of message files."""

from __future__ import annotations

from pathlib import Path

import git

from anima import mailbox
from anima.home import Home
from anima.message import Message, parse, render
from anima.runtime import run_once
from anima.testing import FakeModelServer, Reply
from anima.testing.fake_model import last_user_text
from tests.conftest import make_agent, send


def test_render_parse_round_trip_keeps_unknown_keys() -> None:
    msg = Message.create(sender="you", to="arya", body="hi *there*\n", extra={"mood": "good"})
    back = parse(render(msg).encode(), fallback_id="x", default_to="arya")
    assert back == msg


def test_deliver_is_atomic_and_idempotent(home: Home) -> None:
    agent = make_agent(home)
    msg = Message.create(sender="you", to="arya", body="once")
    assert mailbox.deliver(agent.path, msg) == agent.inbox / f"{msg.id}.md"
    assert mailbox.deliver(agent.path, msg) is None
    assert list((agent.inbox / ".tmp").iterdir()) == []


def test_hand_dropped_plain_markdown_is_a_message(home: Home, fake: FakeModelServer) -> None:
    agent = make_agent(home)
    agent.inbox.mkdir(exist_ok=True)
    (agent.inbox / "note-from-me.md").write_text("Just plain text, no front matter.\n")
    fake.add(Reply("got it"))
    (r,) = run_once(home)
    assert r.error is None and r.message_ids == ["note-from-me"]
    assert "Just plain text" in last_user_text("anthropic", fake.requests[0].body)


def test_bad_files_are_rejected_with_reasons_and_good_ones_still_answered(
    home: Home, fake: FakeModelServer
) -> None:
    agent = make_agent(home)
    agent.inbox.mkdir(exist_ok=True)
    (agent.inbox / "badyaml.md").write_text("---\nfrom: [unclosed\n---\nbody\n")
    (agent.inbox / "binary.md").write_bytes(b"\x00\x01\x02binary")
    (agent.inbox / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    (agent.inbox / "huge.md").write_text("x" * (1024 * 1024 + 10))
    (agent.inbox / "bad name!.md").write_text("hello")
    (agent.inbox / "notes.txt").write_text("hello")
    (agent.inbox / "empty.md").write_text("---\nfrom: you\n---\n")
    (agent.inbox / "kind.md").write_text("---\nkind: shout\n---\nhi\n")
    (agent.inbox / "conv.md").write_text("---\nconversation: ../../x\n---\nhi\n")
    good = send(agent, "a good message")
    fake.add(Reply("answered"))
    (r,) = run_once(home)
    assert r.error is None and r.message_ids == [good.id]
    rejected = agent.inbox / "rejected"
    reasons = {p.name.removesuffix(".error.md"): p.read_text() for p in rejected.glob("*.error.md")}
    assert "not valid YAML" in reasons["badyaml.md"]
    assert "binary" in reasons["binary.md"]
    assert "not UTF-8" in reasons["latin1.md"]
    assert "limit is 1048576" in reasons["huge.md"]
    assert "not accepted" in reasons["bad_name_.md"]
    assert "not accepted" in reasons["notes.txt"]
    assert "empty" in reasons["empty.md"]
    assert "unknown" in reasons["kind.md"]
    assert "not safe" in reasons["conv.md"]
    assert (rejected / "badyaml.md").read_text().startswith("---\nfrom: [unclosed")  # nothing lost
    assert not [p for p in agent.inbox.iterdir() if p.is_file()]
    assert not git.Repo(agent.path).is_dirty(untracked_files=True)


def test_batch_of_pending_messages_is_one_turn_per_conversation(
    home: Home, fake: FakeModelServer
) -> None:
    agent = make_agent(home)
    a = send(agent, "one")
    b = send(agent, "two")
    c = send(agent, "elsewhere", conversation="work")
    fake.add(Reply("first"), Reply("second"))
    results = run_once(home)
    assert sorted(r.message_ids for r in results) == sorted([[a.id, b.id], [c.id]])
    assert {r.conversation for r in results} == {"cli", "work"}
    batch = next(r for r in results if r.conversation == "cli")
    log = git.Repo(agent.path).git.log("--format=%s", "-n2").splitlines()
    assert "turn(arya): reply to 2 cli messages from you" in log
    assert batch.reply is not None


def test_a_reply_made_in_the_same_millisecond_is_found_whichever_way_its_id_sorts(
    tmp_path: Path,
) -> None:
    """With a pinned clock every id has the same time; the reply's random part may sort before
    the message's. `anima chat` (here and across homes) must still find it."""
    agent_dir = tmp_path / "arya"
    asked = "20260101T000000000Z-ffffff"
    rid = "20260101T000000000Z-000001"
    path = mailbox.outbox_path(agent_dir, rid)
    path.parent.mkdir(parents=True)
    reply = Message(
        rid, "arya", "you", "the answer\n", in_reply_to=asked, created="2026-01-01T00:00:00.000Z"
    )
    path.write_text(render(reply))
    found = mailbox.reply_to(agent_dir, "arya", asked)
    assert found is not None and found.id == rid
    assert mailbox.reply_to(agent_dir, "arya", asked, skip={rid}) is None
