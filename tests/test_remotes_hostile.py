"""Git remotes, the lease and `anima move` under attack and on a bad day: garbage lease refs,
damaged local records, racing hosts, hostile repositories to clone or adopt, moves cut short,
moved back, or refused (real homes, real git, file:// peers). The bugs this pass found (moving
back re-routed the other home's messages, a move onto another agent of the same name, symlinks
in a cloned tree, a relative remote URL, damaged lease records, a far-future local lease, the
push backoff overflowing, a late message that is not text) are fixed; their tests stay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from anima import lease, remotes
from anima.agent import Agent, create_agent
from anima.errors import AnimaError
from anima.home import Home
from anima.runtime import run_once
from tests.conftest import send
from tests.test_remotes import anima, make_home


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def peered(tmp_path: Path) -> tuple[Home, Home, str]:
    """host-a (agent arya, and gendry, pushed to a local remote) and host-b (gendry), each the
    other's peer under its host name, each taking agents from the other."""
    shared = f'\n[remotes.backup]\nurl = "{tmp_path}/remotes/{{agent}}.git"\n'
    a = make_home(tmp_path / "a", "host-a", peers={"host-b": tmp_path / "b"}, extra=shared)
    b = make_home(tmp_path / "b", "host-b", peers={"host-a": tmp_path / "a"}, extra=shared)
    create_agent(a, "arya")
    anima(a, "sync", "--agent", "arya")
    return a, b, str(tmp_path / "remotes" / "arya.git")


def one_agent(tmp_path: Path, lease_seconds: float = 300.0) -> tuple[Home, Agent, str]:
    url = str(tmp_path / "remotes" / "arya.git")
    home = make_home(
        tmp_path / "a",
        "host-a",
        extra=f'\n[remotes.backup]\nurl = "{url}"\nagents = ["arya"]\nlease_seconds = {lease_seconds}\n',
    )
    return home, create_agent(home, "arya"), url


def answered_once(home: Home, msg_id: str) -> bool:
    return [r.message_ids for r in run_once(home, ["arya"])] == [[msg_id]]


# -- the lease ref on the remote ----------------------------------------------------------------
def test_racing_hosts_on_an_expired_lease_have_exactly_one_winner(tmp_path: Path) -> None:
    url = str(tmp_path / "arya.git")
    git("init", "-q", "--bare", url)
    repos = []
    for i in range(5):
        repo = tmp_path / f"h{i}"
        git("init", "-q", str(repo))
        repos.append(repo)
    lease.swap(repos[0], url, "", "old-host", -5)  # an expired lease: everyone may take it
    got: dict[str, lease.Lease] = {}

    def take(i: int) -> None:
        got[f"h{i}"] = lease.acquire(repos[i], url, f"h{i}", 60)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [h for h, held in got.items() if held.holder == h]
    assert len(winners) == 1, got
    assert {held.holder for held in got.values()} == set(winners)
    assert lease.read_remote(repos[0], url).holder == winners[0]  # type: ignore[union-attr]


@pytest.mark.parametrize("garbage", ["blob", "tree"])
def test_a_lease_ref_forced_to_garbage_runs_no_turn_and_crashes_nothing(
    tmp_path: Path, garbage: str
) -> None:
    """Someone force-pushes refs/anima/lease to a non-commit: no host can know who holds the
    lease, so none runs the agent (fail closed), and the message waits."""
    home, agent, url = one_agent(tmp_path)
    anima(home, "sync")
    (home.run_dir / "leases" / "arya.json").unlink()  # forgotten here: the check asks the remote
    obj = subprocess.run(
        ["git", "-C", url, "hash-object", "-w", "--stdin"],
        input="holder: host-a\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if garbage == "tree":
        obj = subprocess.run(
            ["git", "-C", url, "mktree"],
            input=f"100644 blob {obj}\tx\n",
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    git("-C", url, "update-ref", lease.REF, obj)
    msg = send(agent, "who runs me?")
    assert run_once(home, ["arya"]) == []
    assert (agent.inbox / f"{msg.id}.md").exists()
    assert anima(home, "remote", "list").returncode == 0


@pytest.mark.parametrize(
    ("expires", "taken"),
    [
        ("nan", True),
        ("-1e18", True),
        ("1e999", False),
        ("not a number", True),
        ("253402300799", False),
    ],
)
def test_a_lease_commit_with_an_odd_expiry_from_another_host(
    tmp_path: Path, expires: str, taken: bool
) -> None:
    """A lease another host wrote with NaN, a negative, an infinite, a non-number or a year-9999
    expiry: expired ones are taken over, the rest hold (the remote is the authority)."""
    home, agent, url = one_agent(tmp_path)
    anima(home, "sync")
    (home.run_dir / "leases" / "arya.json").unlink()
    text = f"anima lease\n\nholder: host-z\nexpires-epoch: {expires}\n"
    sha = subprocess.run(
        ["git", "-C", url, "commit-tree", lease.EMPTY_TREE, "-F", "-"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **_who()},
    ).stdout.strip()
    git("-C", url, "update-ref", lease.REF, sha)
    msg = send(agent, "am I mine?")
    assert answered_once(home, msg.id) is taken
    assert lease.read_remote(agent.path, url).holder == ("host-a" if taken else "host-z")  # type: ignore[union-attr]


def _who() -> dict[str, str]:
    return {
        "GIT_AUTHOR_NAME": "x",
        "GIT_AUTHOR_EMAIL": "x@x",
        "GIT_COMMITTER_NAME": "x",
        "GIT_COMMITTER_EMAIL": "x@x",
    }


# -- the local record, run/leases/NAME.json --------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        '{"expires": NaN, "holder": "host-a", "state": "held"}',
        "null",
        "[]",
        '"held"',
        '{"holder": 3, "expires": "soon"}',
    ],
)
def test_a_damaged_lease_record_neither_wedges_the_agent_nor_breaks_status(
    tmp_path: Path, text: str
) -> None:
    """A record cut short by a full disk or edited by hand is as good as none: the remote is
    asked again, and the agent (whose lease this host holds there) answers."""
    home, agent, url = one_agent(tmp_path)
    anima(home, "sync")
    (home.run_dir / "leases" / "arya.json").write_text(text)
    assert anima(home, "status", "--json", check=False).returncode == 0
    assert anima(home, "remote", "list", check=False).returncode == 0
    msg = send(agent, "still running?")
    assert answered_once(home, msg.id)


def test_a_local_record_claiming_more_than_one_lease_period_is_checked_with_the_remote(
    tmp_path: Path,
) -> None:
    home, agent, url = one_agent(tmp_path, lease_seconds=60)
    anima(home, "sync")
    mine = lease.load(home, "arya")
    assert mine is not None
    lease.swap(agent.path, url, mine.sha, "host-b", 60)  # host-b took it (our lease ended)
    lease.save(
        home, "arya", mine.__class__(**{**mine.__dict__, "expires": time.time() + 86400 * 365})
    )
    msg = send(agent, "two hosts at once?")
    assert run_once(home, ["arya"]) == []
    assert (agent.inbox / f"{msg.id}.md").exists()


# -- pushing ------------------------------------------------------------------------------------
def test_a_rejected_push_backs_off_and_shows_behind(tmp_path: Path) -> None:
    """Someone pushed to the remote: our push is refused (not a fast-forward). The turn still
    commits, the pusher does not hammer the remote, and `remote list` / `status` say behind."""
    home, agent, url = one_agent(tmp_path)
    anima(home, "sync")
    other = tmp_path / "other"
    git("clone", "-q", url, str(other))
    (other / "x.txt").write_text("someone else\n")
    git("-C", str(other), "add", "x.txt")
    git("-C", str(other), "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "theirs")
    git("-C", str(other), "push", "-q", "origin", "HEAD:main")
    msg = send(agent, "remember that the remote moved on")
    assert answered_once(home, msg.id)  # run --once tried to push it: refused, once
    target = remotes.agent_remote(home, "arya")
    assert target is not None
    for _ in range(20):  # within the backoff: no new try
        remotes._tend(home, "arya", target)
    st = remotes.push_state(home, "arya")
    assert st.attempts == 1 and st.next_try > time.time()
    assert "rejected" in st.error or "fetch first" in st.error or "non-fast-forward" in st.error
    listed = json.loads(anima(home, "remote", "list", "--json").stdout)
    assert listed[0]["behind"] is True and listed[0]["error"]
    shown = json.loads(anima(home, "status", "--json").stdout)["agents"]["arya"]["remote"]
    assert shown["behind"] is True


def test_a_push_failing_for_days_keeps_its_backoff(tmp_path: Path) -> None:
    home, agent, url = one_agent(tmp_path)
    anima(home, "sync")
    st = remotes.push_state(home, "arya")
    remotes.save_push(
        home, "arya", st.__class__(**{**st.__dict__, "attempts": 1100, "error": "down"})
    )
    subprocess.run(["rm", "-rf", url], check=True)
    Path(url).write_text("gone\n")
    send(agent, "a turn to push")
    assert run_once(home, ["arya"])
    target = remotes.agent_remote(home, "arya")
    assert target is not None
    with pytest.raises(AnimaError):
        remotes.push(home, "arya", target)
    assert remotes.push_state(home, "arya").next_try > time.time()


@pytest.mark.parametrize(
    "url",
    [
        "--upload-pack=touch pwned",
        "ext::sh -c touch% pwned",
        "a\nb/{agent}",
        "fd::17",
        "file::x/{agent}",
        "-oProxyCommand=x/{agent}",
    ],
)
def test_remote_add_refuses_option_and_transport_helper_urls(tmp_path: Path, url: str) -> None:
    home = make_home(tmp_path / "a", "host-a")
    create_agent(home, "arya")
    added = anima(home, "remote", "add", "evil", url, "--agent", "arya", check=False)
    assert added.returncode != 0 and "Traceback" not in added.stderr
    assert "remotes" not in home.config_path.read_text()
    assert not list(tmp_path.rglob("pwned"))


def test_a_hostile_url_written_into_anima_toml_runs_nothing(tmp_path: Path) -> None:
    """The table edited by hand, past `remote add`'s checks: git is never handed an option."""
    home = make_home(
        tmp_path / "a",
        "host-a",
        extra='\n[remotes.evil]\nurl = "ext::sh -c touch% pwned"\nagents = ["arya"]\n',
    )
    agent = create_agent(home, "arya")
    send(agent, "hello")
    proc = subprocess.run(
        [sys.executable, "-m", "anima", "run", "--once"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ANIMA_HOME": str(home.root)},
    )
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("pwned"))


def test_a_relative_remote_url_does_not_stop_the_agent(tmp_path: Path) -> None:
    home = make_home(tmp_path / "a", "host-a")
    agent = create_agent(home, "arya")
    added = subprocess.run(  # typed in tmp_path: the path is taken from there
        [sys.executable, "-m", "anima", "remote", "add", "backup", "backups/{agent}.git"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ANIMA_HOME": str(home.root)},
    )
    assert added.returncode == 0, added.stderr
    assert f'url = "{tmp_path}/backups/{{agent}}.git"' in home.config_path.read_text()
    msg = send(agent, "do I still run?")
    (tmp_path / "elsewhere").mkdir()
    subprocess.run(
        [sys.executable, "-m", "anima", "run", "--once"],
        cwd=tmp_path / "elsewhere",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ANIMA_HOME": str(home.root)},
    )
    assert not (agent.inbox / f"{msg.id}.md").exists()


# -- cloning a hostile repository ------------------------------------------------------------------
def hostile_repo(tmp_path: Path, links: dict[str, str]) -> str:
    """A bare repository of an agent whose tree holds symlinks `links` (path: target)."""
    work = tmp_path / "evil-src"
    git("init", "-q", "-b", "main", str(work))
    (work / "agent.toml").write_text('provider = "offline"\n')
    (work / "persona.md").write_text("I am evil.\n")
    (work / "memory").mkdir()
    for path, target in links.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, work / path)
    git("-C", str(work), "add", "-A")
    git("-C", str(work), "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "evil")
    bare = tmp_path / "evil.git"
    git("clone", "-q", "--bare", str(work), str(bare))
    return str(bare)


def test_clone_refuses_symlinks_that_lead_out_of_the_agent(tmp_path: Path) -> None:
    home = make_home(tmp_path / "a", "host-a")
    gendry = create_agent(home, "gendry")
    secret = tmp_path / "secret.txt"
    secret.write_text("the owner's secret\n")
    url = hostile_repo(tmp_path, {"inbox": "../gendry/inbox", "memory/MEMORY.md": str(secret)})
    cloned = anima(home, "clone", url, "evil", check=False)
    if cloned.returncode != 0:
        assert not (home.agents_dir / "evil").exists()
        return
    evil = Agent(home, "evil")
    anima(home, "send", "evil", "for evil only", check=False)
    assert not list(gendry.inbox.glob("*.md")), "a message for evil landed in gendry's inbox"
    assert not (evil.path / "memory" / "MEMORY.md").is_symlink()


def test_clone_runs_no_hook_and_no_filter_from_the_repository(tmp_path: Path) -> None:
    """Hooks and filters come from config, never from the tree: a repository carrying a
    `.gitattributes` filter and files named like hooks runs nothing when cloned."""
    work = tmp_path / "src"
    git("init", "-q", "-b", "main", str(work))
    (work / "agent.toml").write_text('provider = "offline"\n')
    (work / "persona.md").write_text("hi\n")
    (work / ".gitattributes").write_text("* filter=pwn\n")
    (work / "hooks").mkdir()
    (work / "hooks" / "post-checkout").write_text(f"#!/bin/sh\ntouch {tmp_path}/pwned\n")
    (work / "hooks" / "post-checkout").chmod(0o755)
    (work / ".gitmodules").write_text(
        f'[submodule "x"]\n\tpath = x\n\turl = ext::sh -c touch% {tmp_path}/pwned\n'
    )
    git("-C", str(work), "add", "-A")
    git("-C", str(work), "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "t")
    home = make_home(tmp_path / "a", "host-a")
    anima(home, "clone", str(work), "tmpl")
    assert not (tmp_path / "pwned").exists()
    assert not (home.agents_dir / "tmpl" / ".git" / "hooks").exists() or not list(
        (home.agents_dir / "tmpl" / ".git" / "hooks").iterdir()
    )


@pytest.mark.parametrize("name", ["..", "../b", "arya", ".clone-x", "A"])
def test_clone_refuses_bad_or_taken_names_and_leaves_nothing(tmp_path: Path, name: str) -> None:
    home = make_home(tmp_path / "a", "host-a")
    create_agent(home, "arya")
    src = make_home(
        tmp_path / "s", "host-s", extra=f'\n[remotes.r]\nurl = "{tmp_path}/r/{{agent}}.git"\n'
    )
    create_agent(src, "arya")
    anima(src, "sync")
    before = sorted(p.name for p in home.agents_dir.iterdir())
    cloned = anima(home, "clone", str(tmp_path / "r" / "arya.git"), name, check=False)
    assert cloned.returncode != 0 and "Traceback" not in cloned.stderr
    assert sorted(p.name for p in home.agents_dir.iterdir()) == before


# -- anima move -------------------------------------------------------------------------------------
@pytest.mark.parametrize("step", ["locked", "adopted"])
def test_move_killed_at_the_untested_steps_leaves_one_host(tmp_path: Path, step: str) -> None:
    a, b, url = peered(tmp_path)
    env = {**os.environ, "ANIMA_HOME": str(a.root), remotes.KILL_AT_ENV: step}
    killed = subprocess.run(
        [sys.executable, "-m", "anima", "move", "arya", "--to", "host-b"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.returncode == -9, killed.stdout + killed.stderr
    holder = lease.read_remote(Agent(a, "arya").path, url)
    assert holder is not None and holder.holder == ("host-a" if step == "locked" else "host-b")
    assert remotes.may_run(a, "arya") == (step == "locked")
    if step == "adopted":
        assert remotes.may_run(b, "arya")
    anima(a, "move", "arya", "--to", "host-b")
    msg = send(Agent(b, "arya"), "here?")
    assert [r.message_ids for r in run_once(b)] == [[msg.id]]
    assert remotes.may_run(a, "arya") is False


def test_a_half_done_adopt_on_the_receiving_side_is_finished_by_the_next_move(
    tmp_path: Path,
) -> None:
    """The receiving home died mid-adopt: a staging folder and a lease record without the agent.
    Nothing runs there, and running the move again finishes it."""
    a, b, url = peered(tmp_path)
    staging = b.agents_dir / ".adopt-arya"
    staging.mkdir(parents=True)
    (staging / "junk").write_text("half a clone\n")
    lease.save(b, "arya", lease.Lease(holder="host-b", expires=time.time() + 300, url=url))
    assert "arya" not in b.agent_names()
    anima(a, "move", "arya", "--to", "host-b")
    assert not staging.exists() and "arya" in b.agent_names()
    msg = send(Agent(b, "arya"), "whole?")
    assert [r.message_ids for r in run_once(b)] == [[msg.id]]


def test_move_to_a_peer_that_is_down_changes_nothing(tmp_path: Path) -> None:
    a, _, _ = peered(tmp_path)
    a.config_path.write_text(
        a.config_path.read_text().replace(str(tmp_path / "b"), str(tmp_path / "nowhere"))
    )
    moved = anima(a, "move", "arya", "--to", "host-b", check=False)
    assert moved.returncode != 0 and "Traceback" not in moved.stderr
    assert (lease.load(a, "arya") or lease.Lease()).state == "held"
    msg = send(Agent(a, "arya"), "still here?")
    assert answered_once(a, msg.id)


def test_move_to_itself_changes_nothing(tmp_path: Path) -> None:
    a, _, _ = peered(tmp_path)
    a.config_path.write_text(
        a.config_path.read_text() + f'\n[peers.me]\nurl = "file://{a.root}"\n'
        f'remote_command = "{sys.executable} -m anima"\naccept_agents = true\n'
        '\n[peers.host-a]\nurl = "file:///nowhere"\naccept_agents = true\n'
    )
    moved = anima(a, "move", "arya", "--to", "me", check=False)
    assert moved.returncode != 0 and "Traceback" not in moved.stderr
    assert (lease.load(a, "arya") or lease.Lease()).state == "held"
    msg = send(Agent(a, "arya"), "still here?")
    assert answered_once(a, msg.id)


def test_move_of_an_agent_without_a_remote_is_refused_clearly(tmp_path: Path) -> None:
    a, _, _ = peered(tmp_path)
    create_agent(a, "loner")
    a.config_path.write_text(
        a.config_path.read_text().replace(
            'url = "' + str(tmp_path) + '/remotes/{agent}.git"',
            'url = "' + str(tmp_path) + '/remotes/{agent}.git"\nagents = ["arya"]',
        )
    )
    moved = anima(a, "move", "loner", "--to", "host-b", check=False)
    assert moved.returncode != 0 and "no remote" in moved.stderr and "Traceback" not in moved.stderr


def test_a_move_onto_a_different_agent_of_the_same_name_is_refused_first(tmp_path: Path) -> None:
    a, b, _ = peered(tmp_path)
    shared = f'[remotes.backup]\nurl = "{tmp_path}/remotes/{{agent}}.git"\n'
    b.config_path.write_text(b.config_path.read_text().replace(shared, ""))  # b: no remotes
    other = create_agent(b, "arya")  # another agent that happens to be called arya
    send(other, "remember that I am host-b's own arya")
    assert run_once(b, ["arya"])[0].commit
    send(Agent(a, "arya"), "remember that I am the arya of host-a")
    assert run_once(a, ["arya"])[0].commit
    moved = anima(a, "move", "arya", "--to", "host-b", check=False)
    assert moved.returncode != 0, "host-b's own arya would have been taken for this one"
    msg = send(Agent(a, "arya"), "still here?")
    assert answered_once(a, msg.id)


def test_moving_back_does_not_route_the_other_homes_messages_again(tmp_path: Path) -> None:
    a, b, _ = peered(tmp_path)
    gendry_a, gendry_b = create_agent(a, "gendry"), create_agent(b, "gendry")
    anima(a, "move", "arya", "--to", "host-b")
    send(Agent(b, "arya"), "tell gendry: said once, on host-b")
    assert run_once(b, ["arya"])[0].commit
    assert len(list(gendry_b.inbox.glob("*.md"))) == 1
    anima(b, "sync", "--agent", "arya")
    anima(b, "move", "arya", "--to", "host-a")
    msg = send(Agent(a, "arya"), "back home?")
    assert [r.message_ids for r in run_once(a, ["arya"])] == [[msg.id]]
    assert not list(gendry_a.inbox.glob("*.md")), "host-b's message delivered again on host-a"


def test_a_late_message_the_new_home_refuses_is_rejected_with_a_reason(tmp_path: Path) -> None:
    a, b, _ = peered(tmp_path)
    anima(a, "move", "arya", "--to", "host-b")
    (b.run_dir / "adopted" / "arya").unlink()  # host-b no longer takes host-a's hand-ons
    here = Agent(a, "arya")
    late = send(here, "for the old address")
    anima(a, "sync", "--agent", "arya", check=False)
    assert not (here.inbox / f"{late.id}.md").exists()
    rejected = here.inbox / "rejected"
    assert (rejected / f"{late.id}.md").exists()
    assert "host-b" in "".join(p.read_text() for p in rejected.glob("*.error.md"))


def test_late_messages_are_handed_on_once_and_in_order(tmp_path: Path) -> None:
    a, b, _ = peered(tmp_path)
    anima(a, "move", "arya", "--to", "host-b")
    here, there = Agent(a, "arya"), Agent(b, "arya")
    sent = [send(here, f"late {i}", conversation="c1") for i in range(4)]
    anima(a, "sync", "--agent", "arya")
    anima(a, "sync", "--agent", "arya")  # again: nothing twice
    got = sorted(p.stem for p in there.inbox.glob("*.md"))
    assert got == sorted(m.id for m in sent)
    results = run_once(b, ["arya"])
    assert [i for r in results for i in r.message_ids] == [m.id for m in sent]


def test_a_late_message_that_cannot_be_handed_on_is_not_left_silently(tmp_path: Path) -> None:
    a, _, _ = peered(tmp_path)
    anima(a, "move", "arya", "--to", "host-b")
    here = Agent(a, "arya")
    bad = here.inbox / "20990101T000000000Z-bad.md"
    bad.write_bytes(b"---\nfrom: x\n---\n\xff\xfe not text\n")
    anima(a, "sync", "--agent", "arya", check=False)
    assert not bad.exists() and (here.inbox / "rejected" / bad.name).exists()


def test_two_moves_at_once_leave_one_whole_agent_on_one_host(tmp_path: Path) -> None:
    a, b, url = peered(tmp_path)
    env = {**os.environ, "ANIMA_HOME": str(a.root)}
    argv = [sys.executable, "-m", "anima", "move", "arya", "--to", "host-b"]
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert any(p.returncode == 0 for p in procs), outs
    assert all("Traceback" not in err for _, err in outs), outs
    anima(a, "move", "arya", "--to", "host-b")  # whatever was cut short is finished
    assert remotes.may_run(a, "arya") is False and remotes.may_run(b, "arya") is True
    assert not list(b.agents_dir.glob(".adopt-*"))
    msg = send(Agent(b, "arya"), "whole?")
    assert [r.message_ids for r in run_once(b)] == [[msg.id]]
