"""The units under a real systemd: a throwaway container (systemd-nspawn, booting in ~0.5 s)
starts anima.service, a message is answered, the heartbeat timer fires, the webhook channel
adapter answers over HTTP with its token from credentials.env, SIGTERM stops it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import anima
from anima import gitstore, systemd
from anima.home import Home
from tests.conftest import add_channel, make_agent

TOKEN = "e2e-" + "t" * 28

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-nspawn") is None or os.geteuid() != 0,
    reason="needs root and systemd-nspawn (apt-get install systemd-container)",
)

DRIVER = """#!/bin/bash
# Runs as the container's boot unit; everything it sees goes to $OUT.
export ANIMA_HOME={home} HOME=/root
OUT={out}
exec > $OUT/driver.log 2>&1
set -x
systemctl start anima.service          # Type=notify: returns once the runtime said READY=1
systemctl is-active anima.service > $OUT/active
{anima} send arya "hello from systemd"
for i in $(seq 100); do ls {home}/agents/arya/outbox/*/*.md >/dev/null 2>&1 && break; sleep 0.1; done
systemctl start anima-channel@webhook.service
{python} - > $OUT/webhook <<'PY'
import json, time, urllib.request
auth = {{"Authorization": "Bearer {token}", "Content-Type": "application/json"}}
for _ in range(100):  # the adapter is Type=simple: wait for it to listen
    try:
        urllib.request.urlopen("http://127.0.0.1:8787/v1/health", timeout=2)
        break
    except OSError:
        time.sleep(0.1)
req = urllib.request.Request("http://127.0.0.1:8787/v1/agents/arya/messages", method="POST",
                             data=json.dumps({{"text": "hello over the webhook"}}).encode(), headers=auth)
url = "http://127.0.0.1:8787" + json.load(urllib.request.urlopen(req, timeout=5))["reply_url"]
for _ in range(100):
    record = json.load(urllib.request.urlopen(urllib.request.Request(url, headers=auth), timeout=5))
    if record["status"] == "answered":
        break
    time.sleep(0.1)
print(json.dumps(record))
PY
systemctl show anima.service -p Type -p NotifyAccess -p WatchdogUSec -p StatusText -p MainPID > $OUT/show
systemctl start anima-tick@arya.timer
for i in $(seq 150); do git -C {home}/agents/arya log --format=%s | grep -q heartbeat && break; sleep 0.1; done
systemctl show anima-tick@arya.timer -p NextElapseUSecRealtime -p Persistent > $OUT/timer
systemctl stop anima.service
systemctl show anima.service -p Result -p ExecMainStatus -p ActiveState > $OUT/stopped
journalctl -u anima.service --no-pager > $OUT/journal 2>&1
touch $OUT/done
systemctl poweroff
"""


def _roots(paths: list[Path]) -> list[Path]:
    """The fewest directories that cover `paths` (nested bind mounts are not needed)."""
    out: list[Path] = []
    for p in sorted({p.resolve() for p in paths}, key=lambda p: len(p.parts)):
        if not any(p.is_relative_to(r) for r in out):
            out.append(p)
    return out


@pytest.mark.timeout(180)
def test_units_run_under_real_systemd(home: Home, tmp_path: Path) -> None:
    agent = make_agent(home, "arya", provider="offline")
    cfg = agent.path / "agent.toml"
    cfg.write_text(cfg.read_text().replace('every = ""', 'every = "30m"'))
    add_channel(home, "webhook", agents=["arya"], token_env="HOOK_TOKEN")
    credentials = home.root / "credentials.env"  # the unit's EnvironmentFile, outside any repo
    credentials.write_text(f"HOOK_TOKEN={TOKEN}\n")
    credentials.chmod(0o600)
    units = tmp_path / "units"
    systemd.install_units(home, units, enable=False)
    # A test-speed heartbeat: every 2 s, no random delay.
    (units / "anima-tick@arya.timer.d/zz-test.conf").write_text(
        "[Timer]\nOnCalendar=\nOnCalendar=*:*:0/2\nAccuracySec=1s\nRandomizedDelaySec=0\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    driver = tmp_path / "driver.sh"
    driver.write_text(
        DRIVER.format(
            home=home.root, out=out, anima=systemd.anima_command(), python=sys.executable, token=TOKEN
        )
    )
    driver.chmod(0o755)
    (units / "e2e.service").write_text(
        f"[Unit]\nDescription=anima e2e driver\n[Service]\nType=oneshot\nExecStart={driver}\n"
    )

    ro = _roots([Path(sys.prefix), Path(sys.base_prefix), Path(anima.__file__).parent.parent])
    ro = [r for r in ro if not tmp_path.resolve().is_relative_to(r)]
    cmd = [
        "systemd-nspawn",
        "-q",
        "-D",
        "/",
        "--volatile=yes",
        "--register=no",
        "--keep-unit",
        "--private-network",
        f"--bind={tmp_path}",
        f"--bind-ro={units}:/etc/systemd/system",
        *[f"--bind-ro={r}" for r in ro],
        "-b",
        "--",
        "systemd.unit=e2e.service",
        "systemd.firstboot=off",
    ]
    boot = subprocess.run(
        cmd, capture_output=True, text=True, timeout=150, stdin=subprocess.DEVNULL
    )
    log = (out / "driver.log").read_text() if (out / "driver.log").exists() else boot.stdout[-3000:]
    assert (out / "done").exists(), log

    assert (out / "active").read_text().strip() == "active"
    show = (out / "show").read_text()
    assert "Type=notify" in show and "WatchdogUSec=1min" in show
    assert "StatusText=1 agents" in show, show  # our sd_notify STATUS= line
    outbox = [p.read_text() for p in agent.outbox.rglob("*.md")]
    assert any("hello from systemd" in r and "[offline model]" in r for r in outbox), outbox
    subjects = [e.subject for e in gitstore.log(agent.path, limit=None)]
    assert any(s.startswith("turn(arya): heartbeat") for s in subjects), subjects
    assert "Persistent=yes" in (out / "timer").read_text()
    journal = (out / "journal").read_text()
    assert "anima run: watching 1 agents" in journal and "changes detected" not in journal
    webhook = json.loads((out / "webhook").read_text())
    assert webhook["status"] == "answered", webhook
    assert "hello over the webhook" in webhook["replies"][0]["text"]
    stopped = (out / "stopped").read_text()
    assert "Result=success" in stopped and "ExecMainStatus=0" in stopped, stopped
