"""What a new user trips over (issue 12), each through the CLI as a person would use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from anima.cli import main
from anima.home import Home
from anima.testing import FakeModelServer, Fault, Reply
from tests.conftest import LiveRuntime, add_channel, make_agent, send, wait_for


def invoke(*args: str, input: str | None = None) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    return r.exit_code, r.output


def test_run_once_shows_each_retry_with_reason_and_wait(home: Home, fake: FakeModelServer) -> None:
    send(make_agent(home), "hello")
    fake.add(Reply(fault=Fault(status=503, message="overloaded")), Reply("hi there"))
    code, out = invoke("run", "--once")
    assert code == 0 and "hi there" in out
    assert "arya:" in out and "overloaded" in out and "retry 1 in 0.0 s" in out


def test_run_logs_retries_and_keeps_http_requests_for_verbose(
    home: Home, fake: FakeModelServer
) -> None:
    agent = make_agent(home)
    fake.add(Reply(fault=Fault(status=503, message="overloaded")), Reply("one"), Reply("two"))
    with LiveRuntime(home) as rt:
        send(agent, "hello")
        wait_for(lambda: len(list(agent.outbox.rglob("*.md"))) == 1, what="the reply")
        rt.stop()
    out = rt.output()
    (retry,) = [line for line in out.splitlines() if "retry 1 of 2 in" in line]
    assert "overloaded" in retry and retry.endswith(" s")
    assert "HTTP Request" not in out, out

    class Verbose(LiveRuntime):
        args = ("run", "-v")

    with Verbose(home) as rt:
        send(agent, "again")
        wait_for(lambda: len(list(agent.outbox.rglob("*.md"))) == 2, what="the reply")
        rt.stop()
    assert "HTTP Request" in rt.output()


def test_missing_extra_is_one_line_with_both_install_commands(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_channel(home, "webhook", token_env="WEBHOOK_TOKEN")
    monkeypatch.setenv("WEBHOOK_TOKEN", "t")
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "aiohttp.web", None)
    code, out = invoke("channel", "webhook")
    assert code == 1 and "Traceback" not in out and len(out.strip().splitlines()) == 1
    assert "pip install 'anima[webhook]'" in out and "pip install '.[webhook]'" in out


def test_doctor_shows_brackets_as_written(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    add_channel(home, "webhook", token_env="WEBHOOK_TOKEN")
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    out = " ".join(invoke("doctor")[1].replace("│", " ").split())
    assert "pip install 'anima[webhook]'" in out


def test_status_shows_names_and_errors_with_brackets_whole(home: Home) -> None:
    make_agent(home)
    error = "[bold]provider[/bold] said: " + "x" * 70 + " THE-USEFUL-END"
    status_file = home.run_dir / "status.json"
    status_file.write_text(json.dumps({"agents": {"arya": {"last_error": {"error": error}}}}))
    result = CliRunner(env={"COLUMNS": "80"}).invoke(main, ["status"])
    cells = "".join(
        line.split("│")[4].strip() for line in result.output.splitlines() if line.count("│") > 4
    )
    assert error.replace(" ", "") in cells.replace(" ", "")


def test_doctor_fix_paths_fold_at_80_columns(tmp_path: Path) -> None:
    root = tmp_path / ("a-rather-long-directory-name-for-a-home-" * 2) / "home"
    invoke("--home", str(root), "init")
    (root / "credentials.env").write_text("X=1\n")
    (root / "credentials.env").chmod(0o644)
    result = CliRunner(env={"COLUMNS": "80"}).invoke(main, ["--home", str(root), "doctor"])
    assert "…" not in result.output
    fix = "".join(
        line.split("│")[4].strip() for line in result.output.splitlines() if line.count("│") > 4
    )
    assert f"chmod 600 {root / 'credentials.env'}".replace(" ", "") in fix.replace(" ", "")


def test_units_dry_run_prints_unit_text_unwrapped(home: Home) -> None:
    from anima import systemd

    env = {**os.environ, "ANIMA_HOME": str(home.root), "COLUMNS": "80"}
    proc = subprocess.run(
        [sys.executable, "-m", "anima", "units", "install", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    for unit in systemd.render_units(home):
        assert f"# {unit.name}\n{unit.text}" in proc.stdout
    assert any(len(line) > 80 for line in proc.stdout.splitlines())  # long lines stay whole


def test_log_keeps_message_ids_whole_at_80_columns(home: Home, fake: FakeModelServer) -> None:
    msg = send(make_agent(home), "hello")
    fake.add(Reply("hi"))
    invoke("run", "--once")
    out = CliRunner(env={"COLUMNS": "80"}).invoke(main, ["log", "arya"]).output
    assert any("tool calls" in line and msg.id in line for line in out.splitlines()), out


def test_fake_model_starts_without_a_runtime_warning() -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "default", "-m", "anima.testing.fake_model", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0 and "usage:" in proc.stdout
    assert "RuntimeWarning" not in proc.stderr, proc.stderr
