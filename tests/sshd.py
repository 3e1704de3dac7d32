"""A real OpenSSH server on 127.0.0.1 with throwaway keys, for the peer tests.

Pull it in with ``pytest_plugins = ["tests.sshd"]`` at the top of a test module: pytest then
registers this module once, so every file shares one sshd for the session. (``from tests.sshd
import sshd`` also works but starts one sshd per importing module.)

The ``sshd`` fixture resets authorized_keys to the plain client key before each test, so a test
that installs a forced command with ``sshd.authorize('command="...",restrict')`` affects no other.
sshd builds the remote command's environment itself: HOME, USER and a default PATH, nothing from
the test (no ANIMA_HOME); the remote command names the venv's ``anima`` by absolute path
(``ANIMA_BIN``).

PYTEST_DONT_REWRITE: test modules import this file before pytest_plugins registers it, and it
needs no assert rewriting (pytest would otherwise warn that it cannot rewrite it).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ANIMA_BIN = str(Path(sys.executable).parent / "anima")
"""The venv's ``anima``, by absolute path: the remote side's PATH is sshd's default."""

HOST = "127.0.0.1"
_START_TIMEOUT = 10.0


@dataclass(frozen=True)
class Sshd:
    """A running sshd and the client settings that reach it."""

    port: int
    user: str
    host: str
    dir: Path
    client_key: Path
    authorized_keys: Path
    known_hosts: Path
    ssh_config: Path
    ssh_command: list[str]
    log: Path

    def url(self, path: str | os.PathLike[str]) -> str:
        """``ssh://USER@127.0.0.1:PORT/abs/path``: the URL path is the absolute home path."""
        return f"ssh://{self.user}@{self.host}:{self.port}{Path(path).absolute()}"

    def authorize(self, options: str = "") -> None:
        """(Re)write authorized_keys to the client key alone, with ``options`` in front if given.

        sshd reads the file at each connection, so the change applies to the next ``ssh``.
        """
        key = self.client_key.with_suffix(".pub").read_text().strip()
        self.authorized_keys.write_text(f"{options} {key}\n" if options else f"{key}\n")

    def ssh_command_for(self, identity: Path) -> list[str]:
        """An ``ssh`` command like ``ssh_command`` that offers only ``identity`` (e.g. a wrong key).

        ``ssh -i`` would add to the config's IdentityFile rather than replace it, hence a config.
        """
        config = self.dir / f"ssh_config.{identity.name}"
        config.write_text(_client_config(self.port, identity, self.known_hosts))
        return ["ssh", "-F", str(config)]


def _missing_tool() -> str | None:
    for tool in ("sshd", "ssh", "ssh-keygen"):
        if _which(tool) is None:
            return tool
    return None


def _which(tool: str) -> str | None:
    # sshd lives in /usr/sbin, which a non-root PATH often lacks.
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/local/sbin")


def _keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _server_config(port: int, tmp: Path, host_key: Path, authorized_keys: Path) -> str:
    return "\n".join(
        [
            f"ListenAddress {HOST}",
            f"Port {port}",
            f"HostKey {host_key}",
            f"AuthorizedKeysFile {authorized_keys}",
            f"PidFile {tmp / 'sshd.pid'}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",  # CI runs as root; a key is all we offer
            "UsePAM no",
            "StrictModes no",  # the keys sit in pytest's tmp dirs, whatever their modes
            "LogLevel ERROR",
            "",
        ]
    )


def _client_config(port: int, identity: Path, known_hosts: Path) -> str:
    # No ControlMaster/ControlPath/ControlPersist: connection sharing is the product's choice.
    return "\n".join(
        [
            "Host *",
            f"  Port {port}",
            f"  IdentityFile {identity}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {known_hosts}",
            "  GlobalKnownHostsFile /dev/null",
            "  StrictHostKeyChecking yes",
            "  UpdateHostKeys no",
            "  BatchMode yes",
            "  LogLevel ERROR",
            "",
        ]
    )


def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> bool:
    """True once ``port`` accepts connections; False if sshd exited first (e.g. port taken)."""
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"sshd did not listen on {HOST}:{port} within {_START_TIMEOUT}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def running_sshd(tmp: Path) -> Iterator[Sshd]:
    """Start sshd with fresh keys under ``tmp``; stop it (terminate, then kill) on exit."""
    sshd_bin = _which("sshd")
    assert sshd_bin is not None, "check _missing_tool() first"
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # root's privilege separation dir
    host_key = _keygen(tmp / "host_ed25519")
    client_key = _keygen(tmp / "client_ed25519")
    authorized_keys = tmp / "authorized_keys"
    known_hosts = tmp / "known_hosts"
    log = tmp / "sshd.log"
    host_pub = host_key.with_suffix(".pub").read_text().split()[:2]
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = _free_port()
        config = tmp / "sshd_config"
        config.write_text(_server_config(port, tmp, host_key, authorized_keys))
        with log.open("wb") as err:
            # sshd insists on an absolute path (it re-executes itself per connection).
            proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stderr=err)
        try:
            if _wait_listening(proc, port):
                break
        except BaseException:
            _stop(proc)
            raise
    else:
        raise RuntimeError(f"sshd would not start: {log.read_text()}")
    known_hosts.write_text(f"[{HOST}]:{port} {' '.join(host_pub)}\n")
    ssh_config = tmp / "ssh_config"
    ssh_config.write_text(_client_config(port, client_key, known_hosts))
    server = Sshd(
        port=port,
        user=getpass.getuser(),
        host=HOST,
        dir=tmp,
        client_key=client_key,
        authorized_keys=authorized_keys,
        known_hosts=known_hosts,
        ssh_config=ssh_config,
        ssh_command=["ssh", "-F", str(ssh_config)],
        log=log,
    )
    server.authorize()
    try:
        yield server
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def _sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    missing = _missing_tool()
    if missing is not None:
        pytest.skip(f"{missing} not installed: apt-get install openssh-server openssh-client")
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def sshd(_sshd_server: Sshd) -> Sshd:
    """The session's sshd, with authorized_keys reset to the plain client key."""
    _sshd_server.authorize()
    return _sshd_server
