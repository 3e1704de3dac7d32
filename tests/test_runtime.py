"""The always-on runtime: a real `anima run` subprocess, the real watch loop, real signals."""

from __future__ import annotations

import datetime as dt
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import git
import pytest

from anima import gitstore
from anima.agent import Agent
from anima.home import Home
from anima.testing import FakeModelServer, Fault, Reply
from anima.testing.fake_model import last_user_text
from tests.conftest import (
    LiveRuntime,
    make_agent,
    replies,
    send,
    wait_for,
    write_global_config,
)


def test_file_dropped_by_hand_is_answered(home: Home, fake: FakeModelServer) -> None:
    agent = make_agent(home)
    fake.add(Reply("hello from the loop"))
    with LiveRuntime(home) as rt:
        with open(agent.inbox / "by-hand.md", "w") as fh:  # written in place, in two parts
            fh.write("---\nfrom: you\n---\nHello, ")
            fh.flush()
            time.sleep(0.05)
            fh.write("are you there?\n")
        wait_for(lambda: replies(agent), what="a reply")
        assert rt.stop() == 0
    (reply,) = replies(agent)
    assert reply.body.strip() == "hello from the loop" and reply.in_reply_to == "by-hand"
    assert "are you there?" in last_user_text("anthropic", fake.requests[0].body)


def test_two_agents_talk_until_the_loop_cap(home: Home, fake: FakeModelServer) -> None:
    write_global_config(home, fake.url, runtime={"max_agent_hops": 3})
    arya = make_agent(home, "arya", provider="offline")
    gendry = make_agent(home, "gendry", provider="offline")
    with LiveRuntime(home) as rt:
        send(arya, "tell gendry: hello")
        wait_for(lambda: any("chain reached 3 hops" in x for x in rt.lines), what="the loop cap")
        time.sleep(0.5)  # nothing else may happen after the cap
        rt.stop()
    turns = lambda a: [e for e in gitstore.log(a.path, limit=None) if e.subject.startswith("turn(")]  # noqa: E731
    # arya: the user's message + replies to hops 2; gendry: replies to hops 1 and 3.
    assert len(turns(arya)) == 2 and len(turns(gendry)) == 2
    assert not list(arya.inbox.glob("*.md")) and not list(gendry.inbox.glob("*.md"))


def test_all_fans_out_and_both_replies_come_back(home: Home) -> None:
    arya = make_agent(home, "arya", provider="offline")
    for name in ("bran", "sansa"):
        make_agent(home, name, provider="offline")
    with LiveRuntime(home) as rt:
        send(arya, "tell all: dinner at eight")
        wait_for(lambda: len(list(arya.archive.rglob("*.md"))) >= 3, what="two replies to arya")
        rt.stop()
    senders = sorted(
        p.read_text().split("from: ")[1].split("\n")[0] for p in arya.archive.rglob("*.md")
    )
    assert senders == ["bran", "sansa", "you"]


def test_new_agent_is_picked_up_without_restart(home: Home) -> None:
    make_agent(home, "arya", provider="offline")
    with LiveRuntime(home) as rt:
        late = make_agent(home, "late", provider="offline")
        time.sleep(0.3)
        send(late, "hello newcomer")
        wait_for(lambda: replies(late), what="the new agent's reply")
        rt.stop()


def test_second_runtime_refuses_to_start(home: Home) -> None:
    make_agent(home, provider="offline")
    with LiveRuntime(home):
        proc = subprocess.run(
            [sys.executable, "-m", "anima", "run"], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 1 and "another `anima run` is live" in proc.stderr


def test_sigterm_mid_turn_leaves_message_pending_and_restart_answers_once(
    home: Home, fake: FakeModelServer
) -> None:
    write_global_config(home, fake.url, runtime={"grace_seconds": 0.3})
    agent = make_agent(home)
    msg = send(agent, "think hard")
    fake.add(Reply("too slow", fault=Fault(delay=20)))
    with LiveRuntime(home) as rt:
        fake.wait_for_requests(1)
        t0 = time.monotonic()
        assert rt.stop(signal.SIGTERM) == 0
        assert time.monotonic() - t0 < 5
    assert (agent.inbox / f"{msg.id}.md").exists() and not replies(agent)
    status = json.loads((home.run_dir / "status.json").read_text())
    assert status["live"] is False

    fake.add(Reply("answered after restart"))
    with LiveRuntime(home) as rt:
        wait_for(lambda: replies(agent), what="the reply after restart")
        time.sleep(0.3)
        rt.stop()
    (reply,) = replies(agent)
    assert reply.body.strip() == "answered after restart" and reply.in_reply_to == msg.id
    assert not git.Repo(agent.path).is_dirty(untracked_files=True)
    git.Repo(agent.path).git.fsck("--strict")


def test_sigterm_lets_a_short_turn_finish(home: Home, fake: FakeModelServer) -> None:
    agent = make_agent(home)
    send(agent, "quick")
    fake.add(Reply("done in time", fault=Fault(delay=0.8)))
    with LiveRuntime(home) as rt:
        fake.wait_for_requests(1)
        assert rt.stop(signal.SIGINT) == 0
    assert [r.body.strip() for r in replies(agent)] == ["done in time"]


def test_message_that_keeps_failing_is_rejected_with_its_errors(
    home: Home, fake: FakeModelServer
) -> None:
    write_global_config(
        home, fake.url, runtime={"max_attempts": 2, "retry_backoff": 0.1}, retries=0
    )
    agent = make_agent(home)
    fake.add(*[Reply(fault=Fault(status=500))] * 2)
    msg = send(agent, "doomed")
    with LiveRuntime(home) as rt:
        note = agent.inbox / "rejected" / f"{msg.id}.md.error.md"
        wait_for(note.exists, what="the rejection")
        rt.stop()
    text = note.read_text()
    assert "failed 2 times" in text and text.count("Anthropic API error 500") == 2
    assert (agent.inbox / "rejected" / f"{msg.id}.md").exists()
    assert len(fake.requests) == 2


def test_reminder_set_by_the_agent_fires_and_is_retired(home: Home, fake: FakeModelServer) -> None:
    agent = make_agent(home)
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)).isoformat()
    fake.add(
        Reply(
            "", tool_calls=[{"name": "schedule", "input": {"text": "stretch your legs", "at": at}}]
        ),
        Reply("Reminder set."),
        Reply("Time to stretch!"),
    )
    send(agent, "remind me to stretch in a moment")
    with LiveRuntime(home) as rt:
        wait_for(lambda: len(fake.requests) >= 3, timeout=15, what="the reminder turn")
        wait_for(lambda: len(replies(agent)) >= 2, what="the reminder reply")
        rt.stop()
    last = last_user_text("anthropic", fake.requests[2].body)
    assert 'kind="reminder"' in last and "stretch your legs" in last and 'late="true"' not in last
    assert not list((agent.path / "reminders").glob("*.toml"))  # a one-shot reminder is retired
    log = git.Repo(agent.path).git.log("--name-status", "--format=%s", "-n1")
    assert log.startswith("turn(arya): reminder") and "D\treminders/" in log


def test_missed_reminder_is_delivered_once_marked_late(home: Home, fake: FakeModelServer) -> None:
    agent = make_agent(home)
    (agent.path / "reminders").mkdir()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    (agent.path / "reminders/r1.toml").write_text(
        f'text = "water the plants"\ncron = "0 * * * *"\ncreated = "{(past - dt.timedelta(hours=1)).isoformat()}"\n'
    )
    fake.add(Reply("Watering now."))
    with LiveRuntime(home) as rt:
        wait_for(lambda: fake.requests, what="the late reminder")
        time.sleep(1.5)
        rt.stop()
    with LiveRuntime(home) as rt:
        time.sleep(1.5)
        rt.stop()
    assert len(fake.requests) == 1
    text = last_user_text("anthropic", fake.requests[0].body)
    assert 'late="true"' in text and "water the plants" in text


def test_status_json_and_status_command_while_live(home: Home) -> None:
    make_agent(home, provider="offline")
    with LiveRuntime(home) as rt:
        path = home.run_dir / "status.json"
        data = wait_for(lambda: path.exists() and json.loads(path.read_text()), what="status.json")
        assert data["live"] is True and data["pid"] == rt.proc.pid and "arya" in data["agents"]
        out = subprocess.run(
            [sys.executable, "-m", "anima", "status", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        shown = json.loads(out.stdout)
        assert shown["live"] is True and shown["pid"] == rt.proc.pid
        assert shown["agents"]["arya"]["pending"] == 0
        rt.stop()
    out = subprocess.run(
        [sys.executable, "-m", "anima", "status"], capture_output=True, text=True, timeout=30
    )
    assert "not running" in out.stdout


def test_sd_notify_ready_watchdog_stopping(home: Home, tmp_path: Path) -> None:
    make_agent(home, provider="offline")
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(20)
    got: list[str] = []
    rt = LiveRuntime(home, env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "1000000"})
    rt.lines = []
    with rt:
        while not any(x.startswith("WATCHDOG=1") for x in got):
            got.append(sock.recv(4096).decode())
        rt.stop()
    while "STOPPING=1" not in got:
        got.append(sock.recv(4096).decode())
    assert got[0] == "READY=1" or "READY=1" in got
    assert any(x.startswith("STATUS=") for x in got)


def test_tick_delivers_heartbeat_and_ok_reply_is_committed_not_sent(home: Home) -> None:
    agent = make_agent(home, provider="offline")
    out = subprocess.run(
        [sys.executable, "-m", "anima", "tick", "arya"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0 and out.stdout.startswith("hb-")
    from anima.runtime import run_once

    (r,) = run_once(home)
    assert r.error is None and r.reply is None and not replies(agent)
    head = gitstore.log(agent.path, limit=1)[0]
    assert head.subject == "turn(arya): heartbeat (ok, nothing to say)"
    assert head.trailers["Anima-Trigger"] == "heartbeat:timer:timer"


def test_tick_respects_active_hours(home: Home) -> None:
    agent = make_agent(home, provider="offline")
    now = dt.datetime.now().astimezone()
    start = (now + dt.timedelta(hours=1)).strftime("%H:00")
    end = (now + dt.timedelta(hours=2)).strftime("%H:00")
    cfg = agent.path / "agent.toml"
    cfg.write_text(cfg.read_text().replace('active_hours = ""', f'active_hours = "{start}-{end}"'))
    out = subprocess.run(
        [sys.executable, "-m", "anima", "tick", "arya"], capture_output=True, text=True, timeout=30
    )
    assert "outside active hours" in out.stdout and not list(agent.inbox.glob("*.md"))
    out = subprocess.run(
        [sys.executable, "-m", "anima", "tick", "arya", "--force"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert len(list(agent.inbox.glob("*.md"))) == 1


def _heartbeat_agent(home: Home, every: str = "1m") -> Agent:
    agent = make_agent(home, provider="offline")
    text = (agent.path / "agent.toml").read_text()
    text = text.replace("[heartbeat]\n", f'[heartbeat]\nevery = "{every}"\n', 1)
    text = text.replace('\nevery = ""', "\n# every unset here", 1)
    (agent.path / "agent.toml").write_text(text)
    return agent


def test_runtime_drives_heartbeats_without_timers_and_status_names_the_driver(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No systemd timer, no cron: `anima run` alone delivers the heartbeat of a missed slot."""
    from anima import schedule, status

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # no timers installed here
    agent = _heartbeat_agent(home)
    assert status.agent_status(home, "arya")["heartbeat_driver"].startswith("none")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    schedule._mark_heartbeat(home, "arya", long_ago)  # the runtime was down for an hour
    with LiveRuntime(home) as rt:
        head = wait_for(
            lambda: [e for e in gitstore.log(agent.path, limit=5) if "heartbeat" in e.subject],
            what="a heartbeat turn",
        )
        info = status.agent_status(home, "arya")
        assert info["heartbeat_driver"] == "anima run" and info["next_heartbeat"]
        rt.stop()
    (turn,) = head  # type: ignore[misc]
    assert turn.trailers["Anima-Trigger"] == "heartbeat:timer:timer"
    assert "arya: heartbeat" in rt.output()


def test_a_timer_and_the_runtime_firing_the_same_slot_deliver_one_heartbeat(home: Home) -> None:
    from anima import schedule

    agent = _heartbeat_agent(home, "30m")
    slot_time = dt.datetime(2026, 11, 30, 10, 30, 20, tzinfo=dt.UTC)
    schedule._mark_heartbeat(home, "arya", slot_time - dt.timedelta(hours=2))
    by_runtime = schedule.fire_heartbeat(home, "arya", slot_time)
    by_timer = schedule.tick(home, "arya", slot_time + dt.timedelta(seconds=40))  # randomized
    assert by_runtime is not None and by_timer is not None and by_runtime.id == by_timer.id
    assert len(list(agent.inbox.glob("hb-*.md"))) == 1
    assert schedule.fire_heartbeat(home, "arya", slot_time + dt.timedelta(minutes=5)) is None
    nxt = schedule.fire_heartbeat(home, "arya", slot_time + dt.timedelta(minutes=30))
    assert nxt is not None and nxt.id != by_runtime.id  # the next slot is a new heartbeat


def test_no_reply_ends_an_agent_exchange_committed_not_sent(
    home: Home, fake: FakeModelServer
) -> None:
    from anima import mailbox
    from anima.message import Message
    from anima.runtime import run_once

    arya, b2 = make_agent(home), make_agent(home, "b2")
    mailbox.deliver(
        arya.path, Message.create(sender="b2", to="arya", body="thanks!", channel="agent")
    )
    fake.add(Reply("NO_REPLY"))
    (r,) = [x for x in run_once(home) if x.agent == "arya"]
    assert r.error is None and r.reply is None and r.outgoing == []
    assert gitstore.log(arya.path, limit=1)[0].subject == (
        "turn(arya): read agent message from b2 (no reply)"
    )
    assert not list(b2.inbox.glob("*.md")) and not replies(arya)
    assert "NO_REPLY" in fake.requests[-1].body["system"][0]["text"]


def test_two_agents_told_to_talk_stop_within_the_hop_cap(home: Home) -> None:
    """'tell b2: …' once made 7 turns at the old cap of 6; the cap is 3 now."""
    from anima.runtime import run_once

    arya = make_agent(home, provider="offline")
    b2 = make_agent(home, "b2", provider="offline")
    send(arya, "tell b2: what is the plan?")
    turns = 0
    for _ in range(10):
        done = [r for r in run_once(home) if r.commit]
        if not done:
            break
        turns += len(done)
    assert 2 <= turns <= 4, turns
    assert not list(arya.inbox.glob("*.md")) and not list(b2.inbox.glob("*.md"))


def _arya_status(home: Home) -> dict[str, object]:
    try:
        data = json.loads((home.run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data.get("agents", {}).get("arya", {})


def test_status_forgets_an_error_once_a_later_turn_succeeds(
    home: Home, fake: FakeModelServer
) -> None:
    write_global_config(home, fake.url, runtime={"retry_backoff": 0.2}, retries=0)
    agent = make_agent(home)
    fake.add(Reply("", fault=Fault(status=400)), Reply("fine now"))
    with LiveRuntime(home) as rt:
        send(agent, "first")
        wait_for(lambda: replies(agent), what="the reply after the retry")
        wait_for(lambda: "last_turn" in _arya_status(home), what="the turn in status")
        rt.stop()
    assert "turn failed" in rt.output()  # there was an error, and then a turn succeeded
    assert "last_error" not in _arya_status(home)


def test_a_file_renamed_in_by_any_program_is_taken_at_once(
    home: Home, fake: FakeModelServer
) -> None:
    """The Maildir contract: a file renamed into inbox/ is complete. It is not held back for
    the settle time (here a minute), whoever renamed it."""
    write_global_config(home, fake.url, runtime={"settle_ms": 60000})
    agent = make_agent(home, provider="offline")
    staging = home.root / "staging"
    staging.mkdir()
    with LiveRuntime(home) as rt:
        (staging / "hello.md").write_text("---\nfrom: you\n---\nhello there\n")
        (staging / "hello.md").rename(agent.inbox / "hello.md")
        wait_for(lambda: replies(agent), what="the reply (a fixed settle time would take 60 s)")
        rt.stop()


def test_a_file_still_open_for_writing_waits_for_its_writer(
    home: Home, fake: FakeModelServer
) -> None:
    """Written in place, slowly: taken when its writer closes it, not after a fixed time."""
    write_global_config(home, fake.url, runtime={"settle_ms": 100})
    agent = make_agent(home, provider="offline")
    target = agent.inbox / "slow.md"
    script = (
        f"import time; f = open({str(target)!r}, 'w'); "
        "f.write('---\\nfrom: you\\n---\\nfirst part\\n'); f.flush(); time.sleep(1.5); "
        "f.write('second part\\n'); f.close()"
    )
    with LiveRuntime(home) as rt:
        writer = subprocess.Popen([sys.executable, "-c", script])
        time.sleep(1.0)  # ten settle times, the writer still at work
        assert not replies(agent), "taken while its writer still had it open"
        writer.wait(10)
        wait_for(lambda: replies(agent), what="the reply once the writer closed the file")
        rt.stop()
    archived = next(agent.path.glob("archive/*/slow.md")).read_text()
    assert "first part" in archived and "second part" in archived


def test_the_runtime_log_says_when_it_rejects_a_file(home: Home) -> None:
    agent = make_agent(home, provider="offline")
    with LiveRuntime(home) as rt:
        (agent.inbox / "bad.md").write_bytes(b"---\nfrom: you\n---\n\x00binary\n")
        wait_for(lambda: (agent.inbox / "rejected" / "bad.md").exists(), what="the rejection")
        wait_for(lambda: "rejected inbox/bad.md" in rt.output(), what="the log line")
        rt.stop()


def test_the_runtime_loads_its_providers_before_the_first_message(
    home: Home, fake: FakeModelServer
) -> None:
    """Warm before the first message: the provider SDK is imported and run once in the
    background at start, without a request to the model."""
    make_agent(home)
    with LiveRuntime(home) as rt:
        wait_for(lambda: "anima run: warm (anthropic)" in rt.output(), what="the warm-up line")
        assert fake.requests == []
        rt.stop()
