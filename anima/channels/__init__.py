"""Channel adapters: separate processes that turn outside messages into inbox files and spooled
outbox records into outside messages (DESIGN §6). Chosen by name from a registry; each adapter's
SDK is imported only when that adapter runs."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from pathlib import Path
from typing import Any

from anima.channels import config
from anima.errors import BadConfig
from anima.home import Home
from anima.status import ProcessLock, held

log = logging.getLogger(__name__)

ADAPTERS = {
    "telegram": "anima.channels.telegram:TelegramAdapter",
    "discord": "anima.channels.discord:DiscordAdapter",
    "webhook": "anima.channels.webhook:WebhookAdapter",
}
SDKS = {"telegram": "telegram", "discord": "discord", "webhook": "aiohttp"}
"""The module each adapter kind needs, installed by the extra of the same name (anima[telegram])."""


def adapter(home: Home, name: str) -> Any:
    """The configured adapter for channel `name` (BadConfig when it is not configured)."""
    cfg = config.load(home, name)
    served = cfg.agents if isinstance(cfg, config.WebhookChannel) else [cfg.agent]
    if not all(served):
        raise BadConfig(f"[channels.{name}] needs agent = \"NAME\": the agent this bot serves")
    for agent in served:
        home.agent_dir(agent)  # AgentNotFound names the agents there are
    module, _, cls = ADAPTERS[cfg.kind].partition(":")
    return getattr(importlib.import_module(module), cls)(home, cfg)


def lock_path(home: Home, name: str) -> Path:
    return home.run_dir / "channels" / f"{name}.lock"


def live(home: Home, name: str) -> bool:
    return held(lock_path(home, name))


def run(home: Home, name: str) -> None:
    """Run channel `name` until SIGTERM or Ctrl-C; both stop it the same way. One adapter per
    channel and home: two would poll the same bot and send each spooled record twice."""
    lock = ProcessLock(lock_path(home, name), f"`anima channel {name}`", home)
    lock.acquire()
    try:
        _serve(home, name)
    finally:
        lock.release()


def _serve(home: Home, name: str) -> None:
    instance = adapter(home, name)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await instance.run(stop)

    asyncio.run(main())


def spool_counts(home: Home) -> dict[str, dict[str, int]]:
    """Per channel or peer (configured or with a spool): records waiting, dead-lettered, sent.
    A peer's spool is `peer-NAME`."""
    configured = {**config.channel_tables(home), **{f"peer-{p}": {} for p in home.config().peers}}
    names = set(configured) | (
        {p.name for p in home.spool_dir.iterdir() if p.is_dir()} if home.spool_dir.is_dir() else set()
    )
    out = {}
    for name in sorted(names):
        root = home.spool_dir / name
        out[name] = {
            "configured": int(name in configured),
            "waiting": len(list((root / "new").glob("*.md"))),
            "failed": len([p for p in (root / "failed").glob("*.md") if not p.name.endswith(".error.md")]),
            "sent": len(list((root / "sent").glob("*/*.md"))),
        }
    return out
