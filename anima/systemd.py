"""systemd integration: sd_notify (READY, WATCHDOG, STATUS, STOPPING) and the user units."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from anima import schedule
from anima.config import load_agent_config
from anima.home import Home
from anima.packaged import data_dir


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1") to systemd's notify socket; False when not under systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(addr)
            sock.sendall(state.encode())
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.5, int(usec) / 2_000_000)
    except ValueError:
        return None


# -- units ----------------------------------------------------------------------------------
UNIT_FILES = ("anima.service", "anima-tick@.service", "anima-tick@.timer", "anima-channel@.service")


def units_dir() -> Path:
    return data_dir("units")


def anima_command() -> str:
    """How systemd and cron start this Anima: this interpreter, so the same venv is used."""
    return f"{sys.executable} -m anima"


@dataclass(frozen=True)
class UnitFile:
    name: str
    text: str


def render_units(home: Home) -> list[UnitFile]:
    """The units with this machine's paths, plus a timer drop-in per agent with a heartbeat."""
    values = {
        "home": str(home.root),
        "anima": anima_command(),
        "stop_timeout": str(int(home.config().runtime.grace_seconds) + 15),
    }
    files = []
    for name in UNIT_FILES:
        text = (units_dir() / name).read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        files.append(UnitFile(name, text))
    for agent in home.agent_names():
        hb = load_agent_config(home.agents_dir / agent / "agent.toml").heartbeat
        calendar = schedule.on_calendar(hb)
        if calendar:
            files.append(
                UnitFile(
                    f"anima-tick@{agent}.timer.d/schedule.conf",
                    f"# from agents/{agent}/agent.toml [heartbeat]\n[Timer]\nOnCalendar=\nOnCalendar={calendar}\n",
                )
            )
    return files


def user_unit_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def timer_enabled(agent: str) -> bool:
    """Is the agent's heartbeat timer installed and enabled (`anima units install`)?"""
    return (user_unit_dir() / "timers.target.wants" / f"anima-tick@{agent}.timer").exists()


def heartbeat_agents(files: list[UnitFile]) -> list[str]:
    return [f.name.split("@", 1)[1].split(".timer.d")[0] for f in files if ".timer.d/" in f.name]


def units_to_enable(home: Home, files: list[UnitFile]) -> list[str]:
    """The runtime, a heartbeat timer per agent that has one, an adapter per configured channel."""
    from anima.channels.config import channel_tables

    return [
        "anima.service",
        *[f"anima-tick@{a}.timer" for a in heartbeat_agents(files)],
        *[f"anima-channel@{c}.service" for c in sorted(channel_tables(home))],
    ]


def install_units(home: Home, target: Path, *, enable: bool = True) -> list[str]:
    """Write the units into `target`; with systemctl, reload and enable them. Returns what was
    done, one line each."""
    done = []
    files = render_units(home)
    for stale in target.glob("anima-tick@*.timer.d/schedule.conf"):
        stale.unlink()  # agents whose heartbeat was removed
    for f in files:
        path = target / f.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f.text, encoding="utf-8")
        done.append(f"wrote {path}")
    if enable and shutil.which("systemctl"):
        units = units_to_enable(home, files)
        for cmd in (["daemon-reload"], ["enable", "--now", *units]):
            proc = subprocess.run(["systemctl", "--user", *cmd], capture_output=True, text=True)
            if proc.returncode != 0:
                done.append(
                    f"systemctl --user {' '.join(cmd)} failed: {proc.stderr.strip()} "
                    "(is a user session running? try `loginctl enable-linger $USER`)"
                )
                break
            done.append(f"systemctl --user {' '.join(cmd)}")
    return done


def cron_lines(home: Home) -> list[str]:
    """The crontab equivalent of the units: the runtime at boot, a heartbeat line per agent."""
    env = f"ANIMA_HOME={home.root}"
    log = home.run_dir / "anima.log"
    lines = [
        "# Anima: paste into `crontab -e`. Cron does not supervise: the runtime starts at boot and",
        "# is restarted within 5 minutes if it is not live.",
        f"@reboot {env} {anima_command()} run --exit-if-live >> {log} 2>&1",
        f"*/5 * * * * {env} {anima_command()} run --exit-if-live >> {log} 2>&1",
    ]
    for agent in home.agent_names():
        hb = load_agent_config(home.agents_dir / agent / "agent.toml").heartbeat
        when = schedule.cron_schedule(hb)
        if when:
            lines.append(f"{when} {env} {anima_command()} tick {agent} >/dev/null 2>&1")
    from anima.channels.config import channel_tables

    for name in sorted(channel_tables(home)):
        keep = f"{env} {anima_command()} channel {name} --exit-if-live >> {home.run_dir / name}.log 2>&1"
        lines += [f"@reboot {keep}", f"*/5 * * * * {keep}"]
    return lines
