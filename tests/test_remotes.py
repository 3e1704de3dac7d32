"""Git remotes: agents pushed after each turn, a push failure never failing a turn, `anima
clone`, and the lease that lets one host at a time run an agent (real git, real homes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anima import lease, remotes
from anima.agent import Agent, create_agent
from anima.errors import AnimaError
from anima.home import Home
from anima.runtime import run_once
from tests.conftest import AnimaProcess, replies, send, wait_for


class Runtime(AnimaProcess):
    args = ("run",)
    ready = "anima run: watching"


def make_home(root: Path, host: str, *, peers: dict[str, Path] | None = None, extra: str = "") -> Home:
    """A home named `host` on the offline model, with file:// peers."""
    home = Home(root)
    home.init()
    text = f'host_name = "{host}"\nprovider = "offline"\n{extra}\n'
    for name, path in (peers or {}).items():
        text += f'\n[peers.{name}]\nurl = "file://{path}"\nremote_command = "{sys.executable} -m anima"\n'
        text += "accept_agents = true\n"  # the homes move agents to each other
    home.config_path.write_text(text)
    return home


def anima(home: Home, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANIMA_HOME": str(home.root)}
    proc = subprocess.run([sys.executable, "-m", "anima", *args], env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def remote_head(bare: Path) -> str:
    out = subprocess.run(["git", "-C", str(bare), "rev-parse", "-q", "--verify", "refs/heads/main"],
                         capture_output=True, text=True)
    return out.stdout.strip()


def head(agent: Agent) -> str:
    return subprocess.run(["git", "-C", str(agent.path), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def home_a(tmp_path: Path) -> Home:
    return make_home(tmp_path / "a", "host-a")


def test_turn_is_pushed_soon_after_it_commits(home_a: Home, tmp_path: Path) -> None:
    agent = create_agent(home_a, "arya")
    bare = tmp_path / "remotes" / "arya.git"
    anima(home_a, "remote", "add", "backup", str(tmp_path / "remotes" / "{agent}.git"))
    with Runtime(home_a).start():
        send(agent, "remember that tea is green")
        wait_for(lambda: replies(agent), what="a reply")
        wait_for(lambda: remote_head(bare) == head(agent), what="the turn pushed")
    listed = anima(home_a, "remote", "list", "--json").stdout
    assert '"behind": false' in listed and "held by host-a" in listed


def test_run_once_pushes_what_it_committed(home_a: Home, tmp_path: Path) -> None:
    """Under cron no pusher runs: `anima run --once` pushes the agents it ran itself."""
    agent = create_agent(home_a, "arya")
    bare = tmp_path / "remotes" / "arya.git"
    anima(home_a, "remote", "add", "backup", str(tmp_path / "remotes" / "{agent}.git"))
    send(agent, "remember that the backup runs from cron")
    anima(home_a, "run", "--once")
    assert replies(agent) and remote_head(bare) == head(agent)


def test_a_push_failure_never_fails_a_turn_and_is_retried(home_a: Home, tmp_path: Path) -> None:
    agent = create_agent(home_a, "arya")
    bare = tmp_path / "remotes" / "arya.git"
    anima(home_a, "remote", "add", "backup", str(bare), "--agent", "arya")
    anima(home_a, "sync")  # the lease is taken, the history pushed
    shutil.rmtree(bare)
    bare.write_text("the disk that held the remote is gone\n")  # a path, not a repository
    with Runtime(home_a).start() as rt:
        send(agent, "remember that the remote is down")
        wait_for(lambda: replies(agent), what="a reply while the remote is down")
        wait_for(lambda: remotes.push_state(home_a, "arya").error, what="the failed push recorded")
        assert "behind" in anima(home_a, "remote", "list").stdout
        bare.unlink()
        subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
        wait_for(lambda: remote_head(bare) == head(agent), timeout=20, what="the retried push")
    assert "turn failed" not in rt.output()


def test_remote_add_refuses_urls_git_would_read_as_options(home_a: Home) -> None:
    create_agent(home_a, "arya")
    bad = anima(home_a, "remote", "add", "evil", "--upload-pack=touch /tmp/x", "--agent", "arya", check=False)
    assert bad.returncode != 0
    one = anima(home_a, "remote", "add", "one", "/srv/backup.git", check=False)
    assert one.returncode != 0 and "{agent}" in one.stderr
    assert "remotes" not in home_a.config_path.read_text()


def test_clone_runs_there_only_once_the_first_home_lease_ends(
    home_a: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two homes never both run turns: the clone is refused while the first home's lease is
    valid, takes it when it ends, and from then the first home is refused."""
    home_a.config_path.write_text(home_a.config_path.read_text().replace(
        "\n\n", f'\n[remotes.backup]\nurl = "{tmp_path}/remotes/{{agent}}.git"\nlease_seconds = 3.0\n', 1))
    agent_a = create_agent(home_a, "arya")
    create_agent(home_a, "gendry")
    send(agent_a, "remember that the clone must wait")
    assert run_once(home_a, ["arya"])[0].commit
    send(agent_a, "tell gendry: said once, on host-a")  # an agent message in arya's outbox
    assert run_once(home_a, ["arya"])[0].commit
    anima(home_a, "sync")  # a no-op after run_once's own push: sync is what a person types
    home_b = make_home(tmp_path / "b", "host-b")
    gendry_b = create_agent(home_b, "gendry")
    anima(home_b, "clone", str(tmp_path / "remotes" / "arya.git"))
    agent_b = Agent(home_b, "arya")
    assert "0 pending" in anima(home_b, "doctor", check=False).stdout
    msg = send(agent_b, "hello from the second home")
    assert run_once(home_b) == []  # refused: host-a holds the lease
    # what arya's outbox held was routed on host-a: the clone never routes it again here
    assert not list(gendry_b.inbox.glob("*.md")) and not list(gendry_b.path.glob("archive/*/*.md"))
    assert (agent_b.inbox / f"{msg.id}.md").exists()
    assert not [r for r in replies(agent_b) if r.in_reply_to == msg.id]
    assert "held by host-a" in anima(home_b, "remote", "list").stdout

    url = str(tmp_path / "remotes" / "arya.git")
    wait_for(lambda: lease.read_remote(agent_b.path, url).expires < time.time(), timeout=10,
             what="host-a's lease to end")
    monkeypatch.setattr(lease, "RECHECK", 0.0)  # ask the remote again at once
    results = run_once(home_b)
    assert [r.message_ids for r in results] == [[msg.id]] and results[0].commit
    send(agent_a, "am I still running here?")
    assert run_once(home_a, ["arya"]) == []  # host-b holds it now


def test_lease_compare_and_swap_has_one_winner(home_a: Home, tmp_path: Path) -> None:
    agent = create_agent(home_a, "arya")
    url = str(tmp_path / "arya.git")
    subprocess.run(["git", "init", "-q", "--bare", url], check=True)
    first = lease.swap(agent.path, url, "", "host-a", 60)
    with pytest.raises(lease.LeaseRefused):
        lease.swap(agent.path, url, "", "host-b", 60)  # it exists now: not what host-b saw
    assert lease.acquire(agent.path, url, "host-b", 60).holder == "host-a"
    assert lease.swap(agent.path, url, first.sha, "host-b", 60).holder == "host-b"
    with pytest.raises(lease.LeaseRefused):
        lease.swap(agent.path, url, first.sha, "host-a", 60)
    with pytest.raises(AnimaError):
        lease.read_remote(agent.path, "--upload-pack=touch x")
