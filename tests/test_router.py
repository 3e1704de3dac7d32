"""Routing outbox records after the commit: to other agents' inboxes and channel spools."""

from __future__ import annotations

from anima import router
from anima.home import Home
from anima.message import Message
from anima.runtime import run_once
from tests.conftest import make_agent, send


def test_agent_to_agent_message_and_reply(home: Home) -> None:
    arya = make_agent(home, "arya", provider="offline")
    make_agent(home, "gendry", provider="offline")
    send(arya, "tell gendry: the forge is hot")
    (r,) = run_once(home, ["arya"])
    assert r.tool_calls == 1 and r.outgoing[-1].to == "gendry"
    pending = list((home.agents_dir / "gendry/inbox").glob("*.md"))
    assert len(pending) == 1 and "the forge is hot" in pending[0].read_text()
    (g,) = run_once(home, ["gendry"])
    assert g.reply is not None and g.reply.to == "arya" and g.reply.channel == "agent"
    assert len(list(arya.inbox.glob("*.md"))) == 1


def test_all_fans_out_to_every_other_agent_and_is_idempotent(home: Home) -> None:
    for name in ("arya", "bran", "sansa"):
        make_agent(home, name, provider="offline")
    msg = Message.create(sender="arya", to="all", body="hello all", channel="agent")
    written = router.route(home, [msg]).delivered
    assert sorted(p.parent.parent.name for p in written) == ["bran", "sansa"]
    assert router.route(home, [msg]).delivered == []


def test_channel_messages_go_to_the_spool(home: Home) -> None:
    msg = Message.create(sender="arya", to="telegram:42", body="hi", channel="telegram")
    (path,) = router.route(home, [msg]).delivered
    assert path == home.spool_dir / "telegram/new" / f"{msg.id}.md"
    assert router.route(home, [msg]).delivered == []
