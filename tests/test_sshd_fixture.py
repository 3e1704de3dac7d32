"""The real-sshd fixture the peer tests stand on: it runs commands, obeys authorized_keys
options, refuses strangers, and goes away when done."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.sshd import ANIMA_BIN, HOST, Sshd, _keygen, _missing_tool, running_sshd

pytest_plugins = ["tests.sshd"]


def _ssh(command: list[str], *remote: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, HOST, *remote], capture_output=True, text=True, timeout=20, check=False
    )


def test_ssh_runs_the_command_and_returns_its_stdout(sshd: Sshd) -> None:
    done = _ssh(sshd.ssh_command, "echo", "hello", "from", "sshd")
    assert (done.returncode, done.stdout, done.stderr) == (0, "hello from sshd\n", "")


def test_remote_side_has_a_home_but_not_the_tests_anima_home(sshd: Sshd) -> None:
    done = _ssh(sshd.ssh_command, 'test -d "$HOME" && echo "home ok ${ANIMA_HOME-unset}"')
    assert done.stdout == "home ok unset\n", done.stderr


def test_remote_side_runs_the_venvs_anima_by_absolute_path(sshd: Sshd) -> None:
    done = _ssh(sshd.ssh_command, ANIMA_BIN, "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout


def test_forced_command_wins_over_the_requested_one(sshd: Sshd) -> None:
    sshd.authorize('command="echo forced",restrict')
    done = _ssh(sshd.ssh_command, "echo", "requested")
    assert (done.returncode, done.stdout) == (0, "forced\n"), done.stderr


def test_each_test_starts_with_the_plain_key_again(sshd: Sshd) -> None:
    assert sshd.authorized_keys.read_text() == sshd.client_key.with_suffix(".pub").read_text()


def test_a_key_not_in_authorized_keys_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    stranger = _keygen(tmp_path / "stranger_ed25519")
    done = _ssh(sshd.ssh_command_for(stranger), "echo", "in")
    assert done.returncode == 255
    assert "Permission denied" in done.stderr
    assert done.stdout == ""


def test_url_names_user_port_and_absolute_home(sshd: Sshd, tmp_path: Path) -> None:
    url = sshd.url(tmp_path / "home")
    assert url == f"ssh://{sshd.user}@127.0.0.1:{sshd.port}{tmp_path}/home"


def test_sshd_stops_when_its_context_ends(tmp_path: Path) -> None:
    if _missing_tool():
        pytest.skip("openssh not installed")
    with running_sshd(tmp_path) as server:
        socket.create_connection((HOST, server.port), timeout=2).close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, server.port), timeout=2)
