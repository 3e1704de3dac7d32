"""The shell tool for real, inside bubblewrap: only the workspace is writable; the runtime's
processes, $ANIMA_HOME, the agent's .git and every secret are out of sight; no network unless
allowed; a timeout kills everything the command started. Without bwrap, shell is refused unless
`unsafe = true`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from anima import gitstore
from anima.agent import Agent
from anima.errors import BadConfig
from anima.home import Home
from anima.testing import FakeModelServer
from anima.tools import available
from tests.test_tools_hostile import call, configure

SECRET = "sk-ant-shell-must-never-see-this"

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (CI installs it)"
)


@pytest.fixture
def agent(home: Home, monkeypatch: pytest.MonkeyPatch) -> Agent:
    from tests.conftest import make_agent

    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    (home.root / "credentials.env").write_text(f"TELEGRAM_BOT_TOKEN={SECRET}-tg\n")
    return configure(make_agent(home), "tools.shell", enabled=True, timeout=5.0)


def shell(agent: Agent, command: str) -> str:
    out, err = call(agent, "shell", command=command)
    assert not err, out
    return out


@needs_bwrap
def test_only_the_workspace_is_writable(agent: Agent) -> None:
    outside = Path(f"/var/tmp/anima-sandbox-probe-{uuid.uuid4().hex}")  # writable, not hidden
    try:
        out = shell(
            agent, f"echo made > here.txt; touch {outside}; echo x > ../persona.md; true"
        )  # ../ is an empty tmpfs
        assert (agent.workspace / "here.txt").read_text() == "made\n"
        assert "Read-only file system" in out, out
        assert not outside.exists()
        assert (agent.path / "persona.md").read_text().startswith("# arya")
    finally:
        outside.unlink(missing_ok=True)  # a broken sandbox must not leave litter behind


@needs_bwrap
def test_anima_home_git_and_credentials_are_out_of_sight(agent: Agent, home: Home) -> None:
    from tests.conftest import make_agent

    make_agent(home, "bran")
    paths = [
        home.root / "credentials.env",
        home.root / "anima.toml",
        home.agents_dir / "bran",
        agent.path / ".git" / "HEAD",
        agent.path / "persona.md",
    ]
    out = shell(agent, "; ".join(f"test -e {p} && echo VISIBLE {p}" for p in paths) + "; true")
    assert "VISIBLE" not in out
    assert "VISIBLE" in shell(agent, f"test -e {agent.workspace} && echo VISIBLE")
    assert shell(agent, f"ls -A {Path.home()} | wc -l").split()[-1] == "0"  # the user's home


@needs_bwrap
def test_no_secret_in_the_environment_or_the_runtime_processes(agent: Agent) -> None:
    out = shell(
        agent,
        "env; cat /proc/$PPID/environ /proc/1/environ 2>&1 | tr '\\0' '\\n'; "
        "for p in /proc/[0-9]*; do cat $p/environ 2>/dev/null | tr '\\0' '\\n'; done; "
        "ls /proc | grep -c '^[0-9]'",
    )
    assert "ANTHROPIC_API_KEY" not in out and SECRET not in out
    assert "TELEGRAM_BOT_TOKEN" not in out and "ANIMA_HOME" not in out
    assert str(os.getpid()) not in out.split()  # the runtime's process is not there
    assert int(out.strip().splitlines()[-1]) < 10  # only the command's own few processes


@needs_bwrap
def test_network_is_off_unless_allowed(agent: Agent, fake: FakeModelServer) -> None:
    port = fake.url.rsplit(":", 1)[1].strip("/")
    probe = f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected || echo refused"
    assert "refused" in shell(agent, probe)
    agent = configure(agent, "tools.shell", network=True)
    assert "connected" in shell(agent, probe)


@needs_bwrap
def test_timeout_kills_everything_the_command_started(agent: Agent) -> None:
    agent = configure(agent, "tools.shell", timeout=0.5)
    marker = f"sleep 987.{uuid.uuid4().int % 10**6:06d}"  # only this test's processes match
    started = time.monotonic()
    try:
        out, err = call(
            agent, "shell", command=f"({marker} &); setsid {marker} & echo begun; sleep 60"
        )
        assert err and "timed out" in out and "begun" in out
        assert time.monotonic() - started < 4
        time.sleep(0.2)
        assert _pids(marker) == []
    finally:
        for pid in _pids(marker):  # a broken sandbox must not leave them running
            os.kill(pid, signal.SIGKILL)


def _pids(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@needs_bwrap
def test_a_background_child_holding_output_does_not_hang_the_call(agent: Agent) -> None:
    started = time.monotonic()
    out = shell(agent, "sleep 30 & echo quick")
    assert out.startswith("exit code 0") and "quick" in out
    assert time.monotonic() - started < 4


@needs_bwrap
def test_output_is_capped_in_memory(agent: Agent) -> None:
    agent = configure(agent, "tools.shell", output_chars=1000)
    out = shell(agent, "head -c 50000000 /dev/zero | tr '\\0' x")
    assert "[output cut at 1000 characters]" in out and len(out) < 1200


@needs_bwrap
def test_git_names_made_in_the_workspace_are_removed_and_repos_kept_so_the_turn_commits(
    agent: Agent,
) -> None:
    out = shell(
        agent,
        "mkdir -p proj && cd proj && git init -q . && echo x > f && "
        "echo '* filter=lfs' > ../.gitattributes && mkdir -p ../.GIT && echo found",
    )
    assert "found" in out and "removed" in out and ".GIT" in out and "proj/.git" not in out
    assert (agent.workspace / "proj" / "f").exists()
    assert (agent.workspace / "proj" / ".git").is_dir()  # the agent's own repository stays
    assert not (agent.workspace / ".gitattributes").exists()
    assert not (agent.workspace / ".GIT").exists()
    gitstore.commit(agent.path, "turn(arya): shell", paths=["workspace"])  # as the turn does
    staged = subprocess.run(
        ["git", "ls-files", "-s", "workspace"], cwd=agent.path, capture_output=True, text=True
    ).stdout
    assert "workspace/proj/f" in staged and "160000" not in staged  # plain files, no gitlink


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH with bash and git but no bwrap."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for prog in ("bash", "git"):
        os.symlink(shutil.which(prog) or f"/usr/bin/{prog}", bin_dir / prog)
    monkeypatch.setenv("PATH", str(bin_dir))


@pytest.mark.usefixtures("no_bwrap")
def test_shell_without_a_sandbox_is_refused_unless_unsafe(agent: Agent) -> None:
    with pytest.raises(BadConfig, match="unsafe = true"):
        available(agent.config)  # the turn stops with a clear error, before any model call
    from anima.tools import registry, run_tool
    from tests.test_tools_hostile import ctx_for

    out, err = run_tool(registry(), ctx_for(agent), "shell", {"command": "echo hi"})
    assert err and "bubblewrap" in out
    agent = configure(agent, "tools.shell", unsafe=True)
    out = shell(agent, "echo hi; env")
    assert "hi" in out and SECRET not in out and "ANTHROPIC_API_KEY" not in out


@pytest.mark.usefixtures("no_bwrap")
def test_refused_shell_keeps_the_message_pending(agent: Agent) -> None:
    from anima.runtime import run_once
    from tests.conftest import send

    send(agent, "hello")
    (result,) = run_once(agent.home)
    assert result.error is not None and "no sandbox" in result.error
    assert list(agent.inbox.glob("*.md"))


@pytest.mark.usefixtures("no_bwrap")
def test_shell_off_needs_no_sandbox(home: Home) -> None:
    from tests.conftest import make_agent

    assert "shell" not in {t.name for t in available(make_agent(home).config)}


@pytest.mark.usefixtures("no_bwrap")
def test_doctor_says_when_an_agent_with_shell_has_no_sandbox(agent: Agent) -> None:
    from anima.doctor import run_checks

    (shell_check,) = [c for c in run_checks(agent.home) if c.name.endswith("shell")]
    assert not shell_check.ok and "bubblewrap" in shell_check.detail


@needs_bwrap
def test_shutdown_stops_a_running_shell_command_and_undoes_the_turn(
    agent: Agent, fake: FakeModelServer
) -> None:
    """SIGTERM during a long command: the command's whole group is killed at once (not at its
    timeout), the turn is undone and its message stays pending."""
    from anima.testing import Reply
    from tests.conftest import LiveRuntime, send, wait_for, write_global_config

    agent = configure(agent, "tools.shell", timeout=120.0)
    write_global_config(agent.home, fake.url, runtime={"grace_seconds": 0.5})
    marker = f"sleep-{uuid.uuid4().hex[:8]}"
    fake.add(
        Reply(
            "",
            tool_calls=[
                {
                    "name": "shell",
                    "input": {"command": f"echo x > out.txt; exec -a {marker} sleep 100"},
                }
            ],
        ),
        Reply("never reached"),
    )
    msg = send(agent, "run the long thing")

    def running() -> bool:
        for p in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if marker.encode() in p.read_bytes():
                    return True
            except OSError:  # the process ended between the listing and the read
                continue
        return False

    with LiveRuntime(agent.home) as rt:
        wait_for(running, what="the shell command")
        t0 = time.monotonic()
        assert rt.stop(signal.SIGTERM) == 0
        assert time.monotonic() - t0 < 10
    assert not running()
    assert (agent.inbox / f"{msg.id}.md").exists()
    assert not (agent.workspace / "out.txt").exists()  # the turn was undone
