"""systemd units and cron lines, checked by systemd's own tools where they are installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from croniter import croniter

from anima import systemd
from anima.cli import main
from anima.home import Home
from tests.conftest import add_channel, make_agent

needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _with_heartbeat(home: Home, name: str, every: str) -> None:
    agent = make_agent(home, name, provider="offline")
    cfg = agent.path / "agent.toml"
    cfg.write_text(cfg.read_text().replace('every = ""', f'every = "{every}"'))


def test_rendered_units_carry_this_machines_paths(home: Home) -> None:
    _with_heartbeat(home, "arya", "30m")
    files = {f.name: f.text for f in systemd.render_units(home)}
    service = files["anima.service"]
    assert (
        "Type=notify" in service and "WatchdogSec=60" in service and "Restart=on-failure" in service
    )
    assert f"Environment=ANIMA_HOME={home.root}" in service
    assert f"ExecStart={systemd.anima_command()} run" in service
    assert "{{" not in "".join(files.values())
    assert files["anima-tick@arya.timer.d/schedule.conf"].endswith("OnCalendar=*-*-* *:00/30:00\n")
    assert (
        "Persistent=true" in files["anima-tick@.timer"]
        and "RandomizedDelaySec=" in files["anima-tick@.timer"]
    )


@needs_systemd
def test_units_pass_systemd_analyze_verify_with_no_warnings(home: Home, tmp_path: Path) -> None:
    _with_heartbeat(home, "arya", "2h")
    out = tmp_path / "units"
    systemd.install_units(home, out, enable=False)
    # Templates are verified through an instance, as systemd would load them.
    for template, instance in [
        ("anima-tick@.service", "anima-tick@arya.service"),
        ("anima-tick@.timer", "anima-tick@arya.timer"),
        ("anima-channel@.service", "anima-channel@webhook.service"),
    ]:
        shutil.copy(out / template, out / instance)
    names = [
        "anima.service",
        "anima-tick@arya.service",
        "anima-tick@arya.timer",
        "anima-channel@webhook.service",
    ]
    proc = subprocess.run(
        ["systemd-analyze", "verify", *[str(out / n) for n in names]],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


@needs_systemd
@pytest.mark.parametrize("every", ["5m", "30m", "1h", "6h", "1d", "2d"])
def test_heartbeat_calendar_expressions_are_valid(home: Home, every: str) -> None:
    from anima.config import Heartbeat
    from anima.schedule import on_calendar

    expr = on_calendar(Heartbeat(every=every))
    assert expr is not None
    proc = subprocess.run(["systemd-analyze", "calendar", expr], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_units_install_writes_files_and_dry_run_writes_nothing(home: Home, tmp_path: Path) -> None:
    _with_heartbeat(home, "arya", "1h")
    target = tmp_path / "systemd-user"
    result = CliRunner().invoke(main, ["units", "install", "--dry-run"])
    assert result.exit_code == 0 and "# anima.service" in result.output and not target.exists()
    result = CliRunner().invoke(main, ["units", "install", "--dir", str(target), "--no-enable"])
    assert result.exit_code == 0
    assert (target / "anima.service").is_file()
    assert (target / "anima-tick@arya.timer.d/schedule.conf").is_file()


def test_cron_lines_are_valid_crontab_entries(home: Home) -> None:
    _with_heartbeat(home, "arya", "15m")
    _with_heartbeat(home, "bran", "3h")
    add_channel(home, "telegram", agent="arya", token_env="TELEGRAM_BOT_TOKEN")
    result = CliRunner().invoke(main, ["cron"])
    lines = [x for x in result.output.splitlines() if x and not x.startswith("#")]
    assert lines[0].startswith("@reboot ") and "run --exit-if-live" in lines[0]
    ticks = [x for x in lines if " tick " in x]
    assert (
        len(ticks) == 2
        and ticks[0].startswith("*/15 * * * * ")
        and ticks[1].startswith("0 */3 * * * ")
    )
    adapters = [x for x in lines if " channel telegram --exit-if-live" in x]
    assert [x.split()[0] for x in adapters] == ["@reboot", "*/5"]
    for line in lines[1:]:
        if not line.startswith("@reboot"):
            assert croniter.is_valid(" ".join(line.split()[:5]))


def test_exit_if_live_is_quiet_when_nothing_runs_elsewhere(home: Home) -> None:
    from tests.conftest import LiveRuntime

    make_agent(home, provider="offline")
    rt = LiveRuntime(home)
    rt.lines = []
    with rt:
        result = CliRunner().invoke(main, ["run", "--exit-if-live"])
        assert result.exit_code == 0 and result.output == ""
        rt.stop()


def test_install_enables_an_adapter_per_configured_channel(home: Home) -> None:
    _with_heartbeat(home, "arya", "2h")
    add_channel(home, "telegram", agent="arya", token_env="TELEGRAM_BOT_TOKEN")
    add_channel(home, "webhook", token_env="HOOK_TOKEN")
    enabled = systemd.units_to_enable(home, systemd.render_units(home))
    assert enabled == [
        "anima.service",
        "anima-tick@arya.timer",
        "anima-channel@telegram.service",
        "anima-channel@webhook.service",
    ]
