"""Secrets for channels: from the environment, or from $ANIMA_HOME/credentials.env (KEY=VALUE
lines, mode 600), which lies outside every agent repository and is the unit's EnvironmentFile."""

from __future__ import annotations

import os
import stat

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
