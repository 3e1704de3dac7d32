"""Secrets for channels: from the environment, or from $ANIMA_HOME/credentials.env (KEY=VALUE
lines, mode 600), which lies outside every agent repository and is the unit's EnvironmentFile."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable

from anima.errors import BadConfig
from anima.home import Home

FILE = "credentials.env"


def _parse(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def secret(home: Home, name: str, what: str) -> str:
    """The value of secret `name`. Refuses a credentials file that others can read."""
    if not name:
        raise BadConfig(f"{what}: no environment variable is named for it in anima.toml")
    value = os.environ.get(name)
    if value:
        return value
    path = home.root / FILE
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None:
        if stat.S_IMODE(mode) & 0o077:
            raise BadConfig(f"{path} is readable by others: run `chmod 600 {path}`")
        value = _parse(path.read_text(encoding="utf-8")).get(name)
        if value:
            return value
    raise BadConfig(f"{what}: set {name} in the environment or in {path} (mode 600)")


_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
MIN_SECRET_CHARS = 8
"""Shorter values are not treated as secrets: redacting them would garble ordinary text."""


def known_secrets(home: Home, also: Iterable[str] = ()) -> dict[str, str]:
    """Every secret value this home is configured with, by variable name: the provider keys,
    what MCP servers are handed, each channel's secret variables, everything in
    credentials.env, environment variables whose names say they hold a key, token, secret or
    password, and the variables named in `also` (an agent's own settings). For redaction, so the
    file is read whatever its mode, and a config that cannot be read only narrows the list."""
    from anima.channels import config as channels

    names = {n for n in os.environ if any(w in n.upper() for w in _SECRET_WORDS)}
    names.update(also)
    with contextlib.suppress(BadConfig):
        from anima.llm.registry import secret_envs

        cfg = home.config()
        names.update(secret_envs(cfg.providers))
        for server in cfg.mcp.values():  # what MCP servers are handed: keys and tokens
            names.update([*server.pass_env, *server.headers_env.values()])
        for kind in channels.channel_tables(home):
            with contextlib.suppress(BadConfig):
                names.update(channels.load(home, kind).secret_envs())
    try:
        stored = _parse((home.root / FILE).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        stored = {}
    found = dict(stored)
    found.update({n: os.environ[n] for n in names if os.environ.get(n)})
    for n, v in stored.items():  # the file's value too when the environment overrides it
        if found[n] != v:
            found[f"{n} (credentials.env)"] = v
    return {n: v for n, v in found.items() if len(v.strip()) >= MIN_SECRET_CHARS}
