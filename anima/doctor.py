"""`anima doctor`: what could stop Anima from working here, each with how to fix it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from anima import budget, gitstore, status, turnlog
from anima.config import load_agent_config
from anima.errors import AnimaError, BadConfig
from anima.home import Home

STUCK_AFTER = 600.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    level: str = "error"
    """error (Anima cannot work), warn (something to look at), info."""


def _git() -> Check:
    path = shutil.which("git")
    if not path:
        return Check("git", False, "git is not installed", "install git (apt-get install git)")
    out = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    return Check("git", True, out)


def _home(home: Home) -> Check:
    if home.exists():
        return Check("home", True, str(home.root))
    return Check("home", False, f"no home at {home.root}", "anima init")


def _providers(home: Home) -> list[Check]:
    """Each endpoint's own readiness: keys set, local servers answering (info, not failures:
    an agent uses only the endpoints it names)."""
    from anima.llm.ollama_provider import reachable
    from anima.llm.registry import endpoints

    checks = []
    for name, ep in sorted(endpoints(home.config().providers).items()):
        env = getattr(ep.settings, "api_key_env", "")
        if env:
            key = bool(os.environ.get(env))
            checks.append(
                Check(
                    f"{name} key",
                    key,
                    f"{env} is {'set' if key else 'not set'}",
                    f"export {env}=... (or put it in {home.root / 'credentials.env'}, mode 600)",
                    level="info",
                )
            )
        base_url = getattr(ep.settings, "base_url", "")
        if base_url and ep.kind.name != "ollama":  # a named endpoint's own server: is it there?
            up = _answers(base_url)
            checks.append(
                Check(
                    f"{name} server",
                    up,
                    f"{base_url} {'accepts connections' if up else 'does not answer'}",
                    f"start the server, or fix base_url in [providers.{name}] of {home.config_path}",
                    level="info",
                )
            )
        if ep.kind.name == "ollama" and not env:
            up = reachable(ep.settings.url)
            checks.append(
                Check(
                    name,
                    up,
                    f"{ep.settings.url} {'answers' if up else 'does not answer'}",
                    "start Ollama (ollama serve) if you want local models",
                    level="info",
                )
            )
    return checks


def _answers(url: str, timeout: float = 2.0) -> bool:
    """Does something accept a connection at `url`'s host and port (no request is sent: no key
    is needed to ask)?"""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    if not parts.hostname:
        return False
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _agents(home: Home) -> list[Check]:
    checks = [
        Check(
            f"agents/{d.name}", False, home.invalid_agent_problem(d), f"anima rename '{d.name}' NEW"
        )
        for d in home.invalid_agent_dirs()
    ]
    live = status.runtime_live(home)
    now = time.time()
    for name in home.agent_names():
        d = home.agents_dir / name
        try:
            cfg = load_agent_config(d / "agent.toml")
        except AnimaError as exc:
            checks.append(Check(f"agent {name}", False, str(exc), f"fix {d / 'agent.toml'}"))
            continue
        if cfg.tools.shell.enabled:
            from anima.tools.sandbox import refusal

            why = refusal(cfg.tools.shell.unsafe)
            ok = "runs sandboxed (bubblewrap)" if not cfg.tools.shell.unsafe else "runs UNSANDBOXED"
            checks.append(
                Check(f"agent {name} shell", why is None, why or ok, "apt-get install bubblewrap")
            )
        if not (d / ".git").is_dir():
            checks.append(
                Check(
                    f"agent {name}",
                    False,
                    "not a git repository",
                    f"git -C {d} init (or recreate the agent)",
                )
            )
            continue
        checks += _repository(name, d)
        pending = list((d / "inbox").glob("*.md"))
        stuck = [p for p in pending if now - p.stat().st_mtime > STUCK_AFTER]
        rejected = list((d / "inbox" / "rejected").glob("*.error.md"))
        pause = budget.paused(home, name)
        if pause:
            checks.append(
                Check(
                    f"agent {name}",
                    False,
                    f"self-started work paused since {pause['since']}: {pause['reason']}",
                    f"anima resume {name}",
                    level="warn",
                )
            )
        if stuck and not pause:
            checks.append(
                Check(
                    f"agent {name}",
                    False,
                    f"{len(stuck)} message(s) pending > 10 min",
                    "anima status; check the runtime's log (journalctl --user -u anima)"
                    if live
                    else "start the runtime: anima run (or anima units install)",
                    level="warn",
                )
            )
        elif rejected:
            checks.append(
                Check(
                    f"agent {name}",
                    False,
                    f"{len(rejected)} rejected message(s)",
                    f"read {d / 'inbox/rejected'}/*.error.md",
                    level="warn",
                )
            )
        else:
            checks.append(Check(f"agent {name}", True, f"{len(pending)} pending"))
    return checks


def _repository(name: str, d: Path) -> list[Check]:
    """The agent's git repository: fsck, index, stale locks, and turns set aside."""
    checks = [
        Check(f"agent {name} repository", False, problem, f"git -C {d} fsck", level="warn")
        for problem in gitstore.health(d)
    ]
    for rec in turnlog.set_aside(d):
        checks.append(
            Check(
                f"agent {name}",
                False,
                f"a turn was set aside at {rec['at']} ({rec['why']}); its messages were "
                "put back in inbox/",
                f"read {rec['file']}; delete it once understood",
                level="warn",
            )
        )
    return checks


def _runtime(home: Home) -> list[Check]:
    from anima.systemd import user_unit_dir

    live = status.runtime_live(home)
    checks = [
        Check(
            "runtime",
            live,
            "anima run is live" if live else "no anima run is live",
            "anima units install (systemd) or anima cron (cron)",
            level="warn",
        )
    ]
    has_systemd = shutil.which("systemctl") is not None
    installed = (user_unit_dir() / "anima.service").is_file()
    checks.append(
        Check(
            "systemd units",
            installed,
            "installed"
            if installed
            else ("not installed" if has_systemd else "systemd not available"),
            "anima units install" if has_systemd else "use anima cron",
            level="info",
        )
    )
    return checks


def _secrets(home: Home) -> list[Check]:
    path = home.root / "credentials.env"
    if not path.exists():
        return []
    mode = stat.S_IMODE(path.stat().st_mode)
    ok = mode & 0o077 == 0
    return [Check("credentials.env", ok, f"mode {mode:o}", f"chmod 600 {path}")]


def _channel(home: Home, name: str, failed: int) -> Check:
    import importlib.util

    from anima.channels import SDKS, config
    from anima.channels.base import install_hint
    from anima.credentials import secret

    where = f"{home.config_path} [channels.{name}]"
    try:
        cfg = config.load(home, name)
        if importlib.util.find_spec(SDKS[cfg.kind]) is None:
            return Check(
                f"channel {name}",
                False,
                f"{SDKS[cfg.kind]} is not installed",
                install_hint(cfg.kind),
            )
        for env in cfg.secret_envs():
            secret(home, env, f"channel {name}")
    except AnimaError as exc:
        return Check(
            f"channel {name}", False, str(exc), f"fix {where} or {home.root / 'credentials.env'}"
        )
    if failed:
        return Check(
            f"channel {name}",
            False,
            f"{failed} dead-lettered message(s)",
            f"read {home.spool_dir / name / 'failed'}/*.error.md",
            level="warn",
        )
    return Check(f"channel {name}", True, "configured; its secret is available")


def _channels(home: Home) -> list[Check]:
    from anima.channels import spool_counts

    try:
        counts = spool_counts(home)
    except AnimaError as exc:
        return [Check("channels", False, str(exc), f"fix {home.config_path}")]
    return [
        _channel(home, name, c["failed"])
        for name, c in counts.items()
        if c["configured"] and not name.startswith("peer-")
    ] + _peers(home, counts)


def _peers(home: Home, counts: dict[str, dict[str, int]]) -> list[Check]:
    """Each [peers.NAME]: its table and secret, and its dead letters (no network: that is
    `anima peers --check`)."""
    from anima import peer
    from anima.credentials import secret

    checks = []
    for name, cfg in home.config().peers.items():
        try:
            peer.config(home, name)
            if cfg.secret_env:
                secret(home, cfg.secret_env, f"peer {name}")
        except AnimaError as exc:
            checks.append(Check(f"peer {name}", False, str(exc), f"fix {home.config_path}"))
            continue
        failed = counts.get(peer.spool_name(name), {}).get("failed", 0)
        if failed:
            checks.append(
                Check(
                    f"peer {name}",
                    False,
                    f"{failed} dead-lettered message(s)",
                    f"read {home.spool_dir / peer.spool_name(name) / 'failed'}/*.error.md; "
                    "retry or drop them in anima web",
                    level="warn",
                )
            )
        else:
            checks.append(Check(f"peer {name}", True, cfg.url))
    return checks


def _skills(home: Home) -> list[Check]:
    """Invalid skills are skipped by every turn; say which, once, with the reason."""
    from anima import skills

    seen: set[Path] = set()
    bad = []
    for agent in [None, *home.agent_names()]:
        for s in skills.discover(home, agent):
            if not s.valid and s.folder not in seen:
                seen.add(s.folder)
                bad.append(f"{s.folder}: {s.problem}")
    if not bad:
        return []
    return [
        Check(
            "skills",
            False,
            f"{len(bad)} invalid, skipped: " + "; ".join(bad[:3]) + (" …" if len(bad) > 3 else ""),
            "anima skills check [--agent NAME]",
            level="warn",
        )
    ]


def _mcp(home: Home) -> list[Check]:
    try:
        if not home.config().mcp and not any(
            load_agent_config(home.agent_dir(n) / "agent.toml").mcp for n in home.agent_names()
        ):
            return []  # no servers: nothing to start, and no SDK to import
    except BadConfig:
        pass  # mcp_client names the file to fix
    from anima.mcp_client import doctor_checks

    return doctor_checks(home)


def run_checks(home: Home) -> list[Check]:
    checks = [_git(), _home(home)]
    if home.exists():
        checks += _secrets(home) + _providers(home) + _runtime(home) + _agents(home)
        checks += _channels(home) + _skills(home) + _mcp(home)
    return checks
