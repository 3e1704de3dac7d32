"""Peers end to end: two homes on this machine, each with its own `anima run`, talking over a
real sshd (ssh://), over the other home's webhook (http://, HMAC-signed) and as file:// peers;
`agent@peer` through the router, the spool and the drain; exactly once, a peer down then back,
the hop cap across homes, `anima chat gendry@vps`, and a hostile peer's requests."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from anima import mailbox, peer, peer_ops
from anima.agent import create_agent
from anima.home import Home
from anima.message import Message, render
from anima.spool import Drain, Progress, Spool, TransientError
from tests.conftest import ChannelProcess, LiveRuntime, set_toml, wait_for
from tests.sshd import ANIMA_BIN, Sshd

pytest_plugins = ["tests.sshd"]

FAST = {"backoff": 0.1, "max_backoff": 0.3, "send_timeout": 20.0}


def toml(v: object) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ", ".join(toml(x) for x in v) + "]"
    return json.dumps(v) if isinstance(v, str) else repr(v)


def make_home(
    root: Path,
    host: str,
    agent: str,
    peers: dict[str, dict[str, Any]],
    hops: int = 3,
    extra: str = "",
) -> Home:
    """A home named `host` with one offline agent and `peers` ([peers.NAME] tables)."""
    home = Home(root)
    home.init()
    lines = [
        f'host_name = "{host}"',
        'provider = "offline"',
        "",
        "[runtime]",
        f"max_agent_hops = {hops}",
        "settle_ms = 50",
    ]
    for name, table in peers.items():
        lines += ["", f"[peers.{name}]"] + [f"{k} = {toml(v)}" for k, v in table.items()]
        lines += ["", f"[peers.{name}.delivery]"] + [f"{k} = {toml(v)}" for k, v in FAST.items()]
    home.config_path.write_text("\n".join(lines) + "\n" + extra)
    set_toml(create_agent(home, agent), provider="offline")
    return home


def file_peer(home: Home) -> dict[str, Any]:
    return {"url": f"file://{home.root}", "remote_command": ANIMA_BIN}


def ssh_peer(sshd: Sshd, home: Home) -> dict[str, Any]:
    return {
        "url": sshd.url(home.root),
        "ssh_command": sshd.ssh_command,
        "remote_command": ANIMA_BIN,
    }


def say(home: Home, agent: str, text: str, conversation: str = "cli") -> Message:
    msg = Message.create(
        sender="you", to=agent, body=text, channel="cli", conversation=conversation
    )
    mailbox.deliver(home.agents_dir / agent, msg)
    return msg


def handled(home: Home, agent: str, sender: str) -> list[Message]:
    """Messages from `sender` the agent took (archived), by id."""
    out = []
    for path in sorted((home.agents_dir / agent / "archive").glob("*/*.md")):
        msg = mailbox.read_message(path, agent)
        if msg.sender == sender:
            out.append(msg)
    return out


def run_once(home: Home) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "anima", "--home", str(home.root), "run", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- over a real sshd ----------------------------------------------------------------------------


def test_agents_of_two_homes_talk_over_ssh_both_ways_exactly_once_until_the_hop_cap(
    tmp_path: Path, sshd: Sshd
) -> None:
    """arya@laptop tells gendry@vps something; gendry's reply comes back to arya; arya's answer
    to that is the third hop and max_agent_hops = 2 holds it. Each side took each message once."""
    laptop = Home(tmp_path / "laptop")
    vps = Home(tmp_path / "vps")
    make_home(laptop.root, "laptop", "arya", {"vps": ssh_peer(sshd, vps)}, hops=2)
    make_home(vps.root, "vps", "gendry", {"laptop": ssh_peer(sshd, laptop)}, hops=2)
    with LiveRuntime(laptop) as here, LiveRuntime(vps):
        say(laptop, "arya", "tell gendry@vps: the ship sails at dawn")
        wait_for(lambda: handled(laptop, "arya", "gendry@vps"), 60, "gendry's reply at arya")
        sent = laptop.spool_dir / "peer-vps" / "sent"
        time.sleep(1.0)  # what a runaway chain would send next, it would send now
        assert len(handled(vps, "gendry", "arya@laptop")) == 1
        assert len(handled(laptop, "arya", "gendry@vps")) == 1
        assert len(list(sent.glob("*/*.md"))) == 1  # arya's third hop was held, not sent
        assert not list((laptop.spool_dir / "peer-vps" / "new").glob("*.md"))
        got = handled(vps, "gendry", "arya@laptop")[0]
        assert got.channel == "agent" and got.hops == 1 and "ship sails" in got.body
        wait_for(
            lambda: "agent chain reached 2 hops" in here.output(), 20, "the hop cap's log line"
        )
    log = subprocess.run(
        ["git", "-C", str(vps.agents_dir / "gendry"), "log", "--format=%s"],
        capture_output=True,
        text=True,
    ).stdout
    assert "turn(gendry)" in log


def test_chat_and_send_with_an_agent_of_another_home_over_ssh(tmp_path: Path, sshd: Sshd) -> None:
    laptop = Home(tmp_path / "laptop")
    vps = Home(tmp_path / "vps")
    make_home(laptop.root, "laptop", "arya", {"vps": ssh_peer(sshd, vps)})
    make_home(vps.root, "vps", "gendry", {})
    env = {**os.environ, "ANIMA_HOME": str(laptop.root)}
    with LiveRuntime(vps):
        chat = subprocess.run(
            [sys.executable, "-m", "anima", "chat", "gendry@vps"],
            input="remember that the owl flies at noon\nwhat do you remember?\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=90,
        )
        assert chat.returncode == 0, chat.stderr
        assert "I'll remember that" in chat.stdout
        recalled = chat.stdout.split("From my core memory:")[1]
        assert "the owl flies at noon" in recalled
        sent = subprocess.run(
            [sys.executable, "-m", "anima", "send", "gendry@vps", "hi from afar"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: handled(vps, "gendry", "you@laptop")[2:], 30, "the sent line handled")
    took = handled(vps, "gendry", "you@laptop")
    assert [m.body.strip() for m in took][-1] == "hi from afar"
    assert len({m.id for m in took}) == len(took) == 3
    # a missing agent there is said at once, not waited for
    bad = subprocess.run(
        [sys.executable, "-m", "anima", "send", "nobody@vps", "x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode != 0 and "no agent 'nobody'" in bad.stderr


def test_a_forced_command_pins_who_the_peer_is(tmp_path: Path, sshd: Sshd) -> None:
    """authorized_keys `command="anima serve-peer --peer laptop"`: whatever the caller claims
    to be, and whatever command it asks for, its messages are from arya@laptop."""
    laptop = Home(tmp_path / "laptop")
    vps = Home(tmp_path / "vps")
    make_home(laptop.root, "laptop", "arya", {"vps": ssh_peer(sshd, vps)})
    make_home(vps.root, "vps", "gendry", {})
    sshd.authorize(f'command="{ANIMA_BIN} --home {vps.root} serve-peer --peer laptop",restrict')
    msg = Message.create(sender="arya", to="gendry", body="hello", channel="agent")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(peer, "this_host", lambda home: "somebody-else")
        answer = peer.call(laptop, "vps", "deliver", message=render(msg))
    assert answer["delivered"] is True
    (path,) = (vps.agents_dir / "gendry" / "inbox").glob("*.md")
    assert mailbox.read_message(path, "gendry").sender == "arya@laptop"


# -- over HTTP: the other home's webhook ----------------------------------------------------------


def test_an_http_peer_down_then_back_gets_everything_once_in_order(tmp_path: Path) -> None:
    """Five messages to gendry@vps while vps's webhook is down wait in spool/peer-vps; when it
    comes back they arrive once each, in order; a record sent again is not delivered twice."""
    port = free_port()
    env = {"PEER_SECRET": "s3cret-shared-by-both-homes"}
    laptop = Home(tmp_path / "laptop")
    vps = Home(tmp_path / "vps")
    make_home(
        laptop.root,
        "laptop",
        "arya",
        {"vps": {"url": f"http://127.0.0.1:{port}", "secret_env": "PEER_SECRET"}},
        hops=1,
    )
    make_home(
        vps.root,
        "vps",
        "gendry",
        {"laptop": {"url": "http://127.0.0.1:9", "secret_env": "PEER_SECRET"}},
        extra=f'\n[channels.inbound]\nkind = "webhook"\nport = {port}\n',
    )
    with LiveRuntime(laptop, env=env) as here:
        for n in range(5):  # one turn each (a turn answers its batch's last message)
            say(laptop, "arya", f"tell gendry@vps: part {n}", conversation=f"c{n}")
            wait_for(lambda: len(list((laptop.spool_dir / "peer-vps").glob("*/*.md"))) > n, 30)  # noqa: B023
        spool = laptop.spool_dir / "peer-vps"
        wait_for(lambda: len(list((spool / "new").glob("*.md"))) == 5, 60, "five spooled")
        wait_for(lambda: list((spool / "state").glob("*.json")), 20, "a failed attempt")
        with ChannelProcess(vps, "inbound", env=env, ready="listening on"):
            inbox = vps.agents_dir / "gendry" / "inbox"
            wait_for(lambda: len(list(inbox.glob("*.md"))) == 5, 60, "five delivered")
            wait_for(lambda: not list((spool / "new").glob("*.md")), 20, "spool drained")
            files = list(inbox.glob("*.md"))
            by_arrival = sorted(files, key=lambda p: p.stat().st_mtime_ns)
            bodies = [mailbox.read_message(p, "gendry").body.strip() for p in by_arrival]
            assert bodies == [f"part {n}" for n in range(5)]
            assert all(mailbox.read_message(p, "gendry").sender == "arya@laptop" for p in files)
            # the drain sent a record again (killed before it marked it sent): not doubled
            first = sorted((spool / "sent").glob("*/*.md"))[0]
            os.replace(first, spool / "new" / first.name)
            wait_for(lambda: not list((spool / "new").glob("*.md")), 20, "resent")
            time.sleep(0.3)
            assert len(list(inbox.glob("*.md"))) == 5
    assert "not sent" in here.output() or "retry" in here.output()


def test_the_webhook_refuses_peer_requests_not_signed_by_a_peer(tmp_path: Path) -> None:
    import http.client

    port = free_port()
    env = {"PEER_SECRET": "right-secret", "OTHER": "wrong-secret"}
    vps = make_home(
        tmp_path / "vps",
        "vps",
        "gendry",
        {"laptop": {"url": "http://127.0.0.1:9", "secret_env": "PEER_SECRET"}},
        extra=f'\n[channels.inbound]\nkind = "webhook"\nport = {port}\n',
    )
    laptop = make_home(
        tmp_path / "laptop",
        "laptop",
        "arya",
        {
            "vps": {"url": f"http://127.0.0.1:{port}", "secret_env": "PEER_SECRET"},
            "wrong": {"url": f"http://127.0.0.1:{port}", "secret_env": "OTHER"},
            "nas": {"url": f"http://127.0.0.1:{port}", "secret_env": "PEER_SECRET"},
        },
    )
    with (
        ChannelProcess(vps, "inbound", env=env, ready="listening on"),
        pytest.MonkeyPatch.context() as mp,
    ):
        for k, v in env.items():
            mp.setenv(k, v)
        assert peer.call(laptop, "vps", "hello")["host"] == "vps"
        with pytest.raises(peer.PeerError, match="not signed by a known peer") as err:
            peer.call(laptop, "wrong", "hello")
        assert err.value.permanent
        # the right secret, but signed for another home (nas shares the secret): refused
        with pytest.raises(peer.PeerError, match="this home is 'vps', not 'nas'") as err:
            peer.call(laptop, "nas", "hello")
        assert err.value.permanent
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/v1/peer", body=b'{"op": "hello", "from": "x"}')
        assert conn.getresponse().status == 401
        # a signed request replayed verbatim is refused
        from anima.channels.webhook import SIG_HEADER, TS_HEADER, signature

        body = json.dumps({"op": "hello", "from": "laptop", "to": "vps", "nonce": "n1"}).encode()
        ts = str(int(time.time()))
        headers = {
            TS_HEADER: ts,
            SIG_HEADER: signature("right-secret", ts, "POST", "/v1/peer", body),
        }
        statuses = []
        for _ in range(2):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", "/v1/peer", body=body, headers=headers)
            statuses.append(conn.getresponse().status)
        assert statuses == [200, 401]


# -- file:// peers: another home on this machine, `run --once` ------------------------------------


def test_the_hop_cap_stops_a_chain_that_bounces_between_homes(tmp_path: Path) -> None:
    """Two offline agents that answer everything: with max_agent_hops = 3 the chain across the
    two homes stops after three agent messages, whichever side holds the fourth."""
    a = Home(tmp_path / "a")
    b = Home(tmp_path / "b")
    make_home(a.root, "laptop", "arya", {"vps": file_peer(b)})
    make_home(b.root, "vps", "gendry", {"laptop": file_peer(a)})
    say(a, "arya", "tell gendry@vps: echo this")
    for _ in range(4):
        run_once(a)
        run_once(b)
    hops = sorted(
        m.hops for m in handled(a, "arya", "gendry@vps") + handled(b, "gendry", "arya@laptop")
    )
    assert hops == [1, 2, 3]
    assert not list((a.spool_dir / "peer-vps" / "new").glob("*.md"))
    assert not list((b.spool_dir / "peer-laptop" / "new").glob("*.md"))


def test_a_message_for_an_unknown_agent_there_is_dead_lettered_with_the_reason(
    tmp_path: Path,
) -> None:
    a = Home(tmp_path / "a")
    b = Home(tmp_path / "b")
    make_home(a.root, "laptop", "arya", {"vps": file_peer(b)})
    make_home(b.root, "vps", "gendry", {})
    say(a, "arya", "tell nobody@vps: are you there?")
    run_once(a)
    failed = a.spool_dir / "peer-vps" / "failed"
    (note,) = failed.glob("*.error.md")
    assert "no agent 'nobody' here" in note.read_text()


def test_serve_peer_answers_hostile_requests_with_clear_errors_and_keeps_serving(
    tmp_path: Path,
) -> None:
    vps = make_home(tmp_path / "vps", "vps", "gendry", {})
    good = Message.create(sender="arya", to="gendry", body="hi", channel="agent")
    lines = [
        b"not json",
        b"[1, 2]",
        json.dumps({"op": "hello", "from": "../../etc"}).encode(),
        json.dumps({"op": "rm -rf", "from": "laptop"}).encode(),
        json.dumps({"op": "deliver", "from": "laptop", "message": 5}).encode(),
        json.dumps(
            {"op": "deliver", "from": "laptop", "message": render(good.with_(channel="cli"))}
        ).encode(),
        json.dumps(
            {"op": "deliver", "from": "laptop", "message": render(good.with_(to="../../../tmp/x"))}
        ).encode(),
        json.dumps(
            {"op": "deliver", "from": "laptop", "message": render(good.with_(sender="telegram:1"))}
        ).encode(),
        json.dumps(
            {"op": "chat_events", "from": "laptop", "agent": "gendry", "id": "../x"}
        ).encode(),
        json.dumps(
            {"op": "chat_events", "from": "laptop", "agent": "gendry", "id": "x", "offset": -1}
        ).encode(),
        b"x" * (peer.MAX_LINE + 10),
        json.dumps({"op": "deliver", "from": "laptop", "message": render(good)}).encode(),
        json.dumps({"op": "deliver", "from": "laptop", "message": render(good)}).encode(),
    ]
    out = subprocess.run(
        [ANIMA_BIN, "--home", str(vps.root), "serve-peer"],
        input=b"\n".join(lines) + b"\n",
        capture_output=True,
        timeout=60,
    )
    answers = [json.loads(x) for x in out.stdout.splitlines()]
    assert len(answers) == len(lines)
    assert all(not a["ok"] and a["permanent"] and a["error"] for a in answers[:-2]), answers
    assert "only agent messages" in answers[5]["error"]
    assert "no agent" in answers[6]["error"]
    assert answers[-2] == {"ok": True, "id": good.id, "delivered": True}
    assert answers[-1] == {"ok": True, "id": good.id, "delivered": False}  # exactly once
    (path,) = (vps.agents_dir / "gendry" / "inbox").glob("*.md")
    assert mailbox.read_message(path, "gendry").sender == "arya@laptop"
    assert not list(tmp_path.glob("tmp/x*")) and not Path("/tmp/x.md").exists()


def test_peer_names_and_addresses() -> None:
    assert peer.split_address("gendry@vps") == ("gendry", "vps")
    assert peer.split_address("gendry@my-box.lan") == ("gendry", "my-box.lan")
    for bad in ("gendry", "@vps", "gendry@", "gendry@-x", "Gendry@vps", "a@b@c", "telegram:1"):
        assert peer.split_address(bad) is None, bad


def test_a_peer_url_that_would_be_an_ssh_option_is_refused(tmp_path: Path) -> None:
    home = make_home(
        tmp_path / "h", "laptop", "arya", {"evil": {"url": "ssh://-oProxyCommand=x/y"}}
    )
    with pytest.raises(Exception, match="no usable host"):
        peer.connect(home, "evil")


# -- the drain: order per conversation -----------------------------------------------------------


def test_a_record_waiting_for_its_retry_holds_back_the_later_ones_of_its_conversation(
    tmp_path: Path,
) -> None:
    """Order per conversation: c1's first record fails once; c1's second waits for it, while
    c2's goes at once. (A real Spool and Drain; the send is the test's recorder.)"""
    home = Home(tmp_path / "home")
    home.init()
    spool = Spool(home, "peer-vps")
    msgs = [
        Message.create(
            sender="arya", to="gendry@vps", body=f"{c} {n}", channel="agent", conversation=c
        )
        for c, n in (("c1", 1), ("c1", 2), ("c2", 1))
    ]
    for m in msgs:
        spool.enqueue(m)
        time.sleep(0.002)
    order: list[str] = []
    failed: set[str] = set()

    async def send(msg: Message, progress: Progress) -> None:
        if msg.body.startswith("c1 1") and not failed:
            failed.add(msg.id)
            raise TransientError("down for a moment")
        order.append(msg.body.strip())

    async def main() -> None:
        from anima.config import Delivery

        stop = asyncio.Event()
        drain = Drain(
            spool, send, Delivery(backoff=0.2, max_backoff=0.2), ordered_by=lambda m: m.conversation
        )
        task = asyncio.create_task(drain.run(stop))
        for _ in range(200):
            if len(order) == 3:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await task

    asyncio.run(main())
    assert order == ["c2 1", "c1 1", "c1 2"]
    assert not spool.waiting()
    assert peer_ops.OPS  # the ops registry was filled by importing peer_ops


def test_anima_peers_lists_each_peer_with_its_spool_and_checks_it(tmp_path: Path) -> None:
    a = Home(tmp_path / "a")
    b = Home(tmp_path / "b")
    make_home(
        a.root, "laptop", "arya", {"vps": file_peer(b), "gone": file_peer(Home(tmp_path / "x"))}
    )
    make_home(b.root, "vps", "gendry", {})
    say(a, "arya", "tell gendry@vps: hello")
    run_once(a)
    say(a, "arya", "tell gendry@gone: are you there?")
    run_once(a)
    out = subprocess.run(
        [sys.executable, "-m", "anima", "--home", str(a.root), "peers", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "2000"},
    )
    assert out.returncode == 1, out.stderr  # a peer did not answer
    (vps_row,) = [line for line in out.stdout.splitlines() if "│ vps " in line]
    assert "ok: vps (1 agents)" in vps_row and "│ 1 " in vps_row  # one sent
    (gone_row,) = [line for line in out.stdout.splitlines() if "│ gone " in line]
    assert "error: peer gone: no Anima home at" in gone_row  # the check's answer
    flat = " ".join(out.stdout.replace("│", " ").split())  # cells wrap
    assert flat.count("check url in [peers.gone]") == 2  # also why its message waits
    assert "this home is 'laptop'" in out.stdout


def test_channel_instances_are_named_and_say_their_kind(tmp_path: Path) -> None:
    """Two webhooks side by side: each instance its own name, spool and messages' channel."""
    from anima.channels import config
    from anima.errors import BadConfig
    from anima.tools.messaging import _CHANNEL_ADDR

    home = make_home(
        tmp_path / "h",
        "laptop",
        "arya",
        {},
        extra=(
            '\n[channels.webhook]\ntoken_env = "T"\n'
            '\n[channels.hooks-2]\nkind = "webhook"\nport = 8788\ntoken_env = "T"\n'
            "\n[channels.oops]\nport = 1\n"
        ),
    )
    first, second = config.load(home, "webhook"), config.load(home, "hooks-2")
    assert (first.name, first.kind, second.name, second.kind) == (
        "webhook",
        "webhook",
        "hooks-2",
        "webhook",
    )
    with pytest.raises(BadConfig, match=r"\[channels.oops\] kind must be one of"):
        config.load(home, "oops")
    with pytest.raises(BadConfig, match="no \\[channels.nope\\] table"):
        config.load(home, "nope")
    assert _CHANNEL_ADDR.match("hooks-2:client") and _CHANNEL_ADDR.match("peer-b:x")
    from anima import router

    msg = Message.create(sender="arya", to="hooks-2:client", body="hi", channel="hooks-2")
    routed = router.route(home, [msg])
    assert routed.delivered == [home.spool_dir / "hooks-2" / "new" / f"{msg.id}.md"]
    assert router.route(home, [msg]).delivered == []  # once
    bad = msg.with_(id=msg.id + "b", channel="../../etc")
    assert router.route(home, [bad]).delivered == [] and not (tmp_path / "etc").exists()


def test_a_record_enqueued_in_the_drains_own_process_wakes_it_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime routes and drains peers itself: enqueue wakes the drain directly, not at
    the watcher's next step (set here to 10 s, longer than the test waits)."""
    import threading

    from anima import spool as spool_module
    from anima.config import Delivery

    monkeypatch.setattr(spool_module, "WATCH_STEP_MS", 10_000)
    monkeypatch.setattr(spool_module, "RESCAN", 30.0)
    home = Home(tmp_path / "home")
    home.init()
    spool = Spool(home, "peer-vps")
    sent = threading.Event()

    async def send(msg: Message, progress: Progress) -> None:
        sent.set()

    stop = asyncio.Event()
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    def drain() -> None:
        async def main() -> None:
            task = asyncio.create_task(Drain(spool, send, Delivery()).run(stop))
            await asyncio.sleep(0.2)
            ready.set()
            await task

        loop.run_until_complete(main())

    thread = threading.Thread(target=drain)
    thread.start()
    try:
        assert ready.wait(10)
        spool.enqueue(Message.create(sender="arya", to="gendry@vps", body="hi", channel="agent"))
        assert sent.wait(3), "the drain slept through an enqueue in its own process"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)


def test_doctor_checks_each_peer_and_never_mistakes_its_spool_for_a_channel(tmp_path: Path) -> None:
    from anima.doctor import run_checks

    a = Home(tmp_path / "a")
    b = Home(tmp_path / "b")
    make_home(
        a.root,
        "laptop",
        "arya",
        {
            "vps": file_peer(b),
            "nas": {"url": "https://nas.example.org/anima", "secret_env": "NAS_SECRET_UNSET"},
        },
    )
    make_home(b.root, "vps", "gendry", {})
    say(a, "arya", "tell nobody@vps: hello?")
    run_once(a)  # dead-lettered: no such agent there
    checks = {c.name: c for c in run_checks(a)}
    assert not any(name.startswith("channel") for name in checks), checks
    assert not checks["peer vps"].ok and "1 dead-lettered" in checks["peer vps"].detail
    assert not checks["peer nas"].ok and "NAS_SECRET_UNSET" in checks["peer nas"].detail


def test_a_peer_url_fixed_while_the_runtime_runs_is_used_at_once(tmp_path: Path) -> None:
    """A typo in [peers.vps] url: the message waits (its next try a minute away); the table
    fixed, the running drain restarts on it and sends the message now, not a minute later."""
    laptop = Home(tmp_path / "laptop")
    vps = Home(tmp_path / "vps")
    make_home(laptop.root, "laptop", "arya", {"vps": file_peer(Home(tmp_path / "typo"))})
    make_home(vps.root, "vps", "gendry", {})
    text = laptop.config_path.read_text()
    laptop.config_path.write_text(
        text.replace("backoff = 0.1", "backoff = 60.0").replace(
            "max_backoff = 0.3", "max_backoff = 60.0"
        )
    )
    spool = laptop.spool_dir / "peer-vps"
    with LiveRuntime(laptop) as here:
        say(laptop, "arya", "tell gendry@vps: despite the typo")
        wait_for(lambda: list((spool / "state").glob("*.json")), 30, "a failed attempt")
        laptop.config_path.write_text(
            laptop.config_path.read_text().replace(str(tmp_path / "typo"), str(vps.root))
        )
        inbox = vps.agents_dir / "gendry" / "inbox"
        wait_for(lambda: list(inbox.glob("*.md")), 15, "delivery on the fixed table")
        assert "its table changed" in here.output()
    bodies = [mailbox.read_message(p, "gendry").body.strip() for p in inbox.glob("*.md")]
    assert bodies == ["despite the typo"]


def test_ids_made_in_one_millisecond_sort_in_the_order_they_were_made() -> None:
    """Delivery in order per conversation is delivery in id order: two messages a turn makes
    in one millisecond must not swap (their suffixes were random: CI saw 'c1 2' before 'c1 1')."""
    from anima.message import new_id, utcnow

    now = utcnow()
    ids = [new_id(now) for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000
