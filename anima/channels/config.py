"""Typed `[channels.*]` tables of anima.toml: which agent each adapter serves, who may talk to
it, and the names of the environment variables that hold its secrets (never the secrets)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from anima.config import Delivery, build, load_toml
from anima.errors import BadConfig
from anima.home import Home
from anima.message import valid_id


@dataclass(frozen=True)
class ChatChannel:
    """Telegram and Discord: one bot serving one agent."""

    agent: str = ""
    token_env: str = ""
    """Default: TELEGRAM_BOT_TOKEN or DISCORD_BOT_TOKEN (filled in by `load`)."""
    owner: str = ""
    """Your own user id on this service: always admitted, and trusted (not wrapped as outside)."""
    allow: list[str] = field(default_factory=list)
    """User ids admitted without pairing."""
    base_url: str = ""
    """Telegram only: a Bot API server other than api.telegram.org (self-hosted, tests)."""
    poll_timeout: int = 30
    typing_seconds: float = 120.0
    """Show "typing…" for at most this long while the agent works on a message."""
    delivery: Delivery = field(default_factory=Delivery)
    name: str = ""
    """The channel instance: the NAME of its [channels.NAME] table (set by `load`)."""
    kind: str = ""
    """telegram or discord: the table's `kind`, or its name (set by `load`)."""

    def secret_envs(self) -> list[str]:
        return [self.token_env]


@dataclass(frozen=True)
class WebhookChannel:
    host: str = "127.0.0.1"
    port: int = 8787
    agents: list[str] = field(default_factory=list)
    """Agents that may be addressed; empty: every agent."""
    token_env: str = ""
    """Accept `Authorization: Bearer <token>` with the token in this environment variable."""
    secret_env: str = ""
    """Accept HMAC-SHA256 signatures (X-Anima-Timestamp, X-Anima-Signature) with this secret."""
    max_body: int = 64 * 1024
    replay_window: int = 300
    """Signed requests older or newer than this many seconds are refused."""
    outgoing_url: str = ""
    """POST every reply here, signed with `secret_env` (or `outgoing_secret_env`)."""
    outgoing_secret_env: str = ""
    header_timeout: float = 10.0
    """A client must send a whole request head (line and headers) within this many seconds of
    connecting, or of its first byte after an idle pause: a slow drip of headers is cut off."""
    body_timeout: float = 30.0
    """...and the body within this many seconds after its head, else it is answered 408."""
    keepalive_timeout: float = 15.0
    """An idle keep-alive connection is closed after this many seconds."""
    max_connections: int = 256
    """Client connections beyond this (or beyond what the open-file limit leaves room for) are
    answered 503 and closed at once, so the ones already open keep working."""
    delivery: Delivery = field(default_factory=Delivery)
    name: str = "webhook"
    """The channel instance: the NAME of its [channels.NAME] table (set by `load`)."""
    kind: str = "webhook"

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "keepalive_timeout", "max_connections"):
            if getattr(self, name) <= 0:
                raise BadConfig(f"channels.webhook.{name} must be more than 0")

    @property
    def outgoing_key_env(self) -> str:
        """The secret replies POSTed to outgoing_url are signed with ("" when none is sent)."""
        return (self.outgoing_secret_env or self.secret_env) if self.outgoing_url else ""

    def secret_envs(self) -> list[str]:
        envs = (self.token_env, self.secret_env, self.outgoing_key_env)
        return list(dict.fromkeys(e for e in envs if e))


KINDS: dict[str, type] = {
    "telegram": ChatChannel,
    "discord": ChatChannel,
    "webhook": WebhookChannel,
}


def channel_tables(home: Home) -> dict[str, Any]:
    tables = load_toml(home.config_path).get("channels", {})
    if not isinstance(tables, dict):
        raise BadConfig(f"{home.config_path}: [channels] must be a table")
    return tables


def kind_of(name: str, table: Any) -> str:
    """A channel instance's adapter: its table's `kind`, else its name (`[channels.telegram]`)."""
    kind = table.get("kind", name) if isinstance(table, dict) else name
    return kind if isinstance(kind, str) else ""


def load(home: Home, name: str) -> Any:
    """The validated config of channel instance `name` (`[channels.NAME]`, its adapter named by
    `kind`, default NAME); a clear error when it is missing or wrong."""
    tables = channel_tables(home)
    table = tables.get(name)
    if table is None or not valid_id(name):
        configured = ", ".join(sorted(tables)) or "none"
        raise BadConfig(
            f"{home.config_path} has no [channels.{name[:60]}] table (configured: {configured}); "
            "see the README's Channels section"
        )
    kind = kind_of(name, table)
    if kind not in KINDS:
        raise BadConfig(
            f"{home.config_path}: [channels.{name}] kind must be one of {', '.join(KINDS)}"
            + ("" if "kind" in table else " (a channel named otherwise says which: kind = ...)")
        )
    data = {k: v for k, v in table.items() if k not in ("kind", "name")}
    try:
        cfg: Any = build(KINDS[kind], data, f"channels.{name}")
    except BadConfig as exc:
        raise BadConfig(f"{home.config_path}: {exc}") from exc
    cfg = dataclasses.replace(cfg, name=name, kind=kind)
    if isinstance(cfg, ChatChannel) and not cfg.token_env:
        cfg = dataclasses.replace(cfg, token_env=f"{kind.upper()}_BOT_TOKEN")
    return cfg
