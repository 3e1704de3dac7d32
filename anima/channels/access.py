"""Who may talk to an agent through a channel: the owner, the configured allow-list, and the
people the owner admitted by pairing. Unknown senders get a short code instead of the agent;
`anima pairing approve CHANNEL CODE` admits them. State: $ANIMA_HOME/access/<channel>.json,
changed under a file lock by the adapter and the CLI alike."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anima.errors import AnimaError
from anima.fsutil import write_atomic
from anima.home import Home
from anima.message import iso, utcnow

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud, typed on a phone
CODE_LENGTH = 6
CODE_TTL = dt.timedelta(hours=1)
MAX_PENDING = 5
"""Open pairing requests per channel; beyond this, new strangers are ignored (no code spam)."""


class UnknownCode(AnimaError):
    """No open pairing request has that code."""


@dataclass(frozen=True)
class Request:
    channel: str
    code: str
    user: str
    name: str
    created: str


def _dir(home: Home) -> Path:
    return home.root / "access"


@contextlib.contextmanager
def _state(home: Home, channel: str, write: bool = True) -> Iterator[dict[str, Any]]:
    path = _dir(home) / f"{channel}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            state = {}
        for key in ("allowed", "pending", "denied"):
            state.setdefault(key, {})
        before = json.dumps(state, sort_keys=True)
        yield state
        if write and json.dumps(state, sort_keys=True) != before:
            write_atomic(path, json.dumps(state, indent=2, sort_keys=True) + "\n")


def _expire(state: dict[str, Any], now: dt.datetime) -> None:
    for code, req in list(state["pending"].items()):
        created = dt.datetime.fromisoformat(req["created"].replace("Z", "+00:00"))
        if now - created > CODE_TTL:
            del state["pending"][code]


class Access:
    """The admission decision for one channel."""

    def __init__(self, home: Home, channel: str, *, owner: str = "", allow: Iterable[str] = ()):
        self.home = home
        self.channel = channel
        self.owner = owner
        self.static = {str(a) for a in allow} | ({owner} if owner else set())

    def allowed(self, user: str) -> bool:
        if user in self.static:
            return True
        with _state(self.home, self.channel, write=False) as state:
            return user in state["allowed"]

    def is_owner(self, user: str) -> bool:
        return bool(self.owner) and user == self.owner

    def request(self, user: str, name: str) -> tuple[str | None, bool]:
        """The pairing code for a stranger and whether it is new (send it only then).
        (None, False) when the sender was denied or too many requests are open."""
        now = utcnow()
        with _state(self.home, self.channel) as state:
            _expire(state, now)
            if user in state["denied"]:
                return None, False
            for code, req in state["pending"].items():
                if req["user"] == user:
                    return code, False
            if len(state["pending"]) >= MAX_PENDING:
                return None, False
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            state["pending"][code] = {"user": user, "name": name, "created": iso(now)}
            return code, True


def _find(state: dict[str, Any], code: str) -> tuple[str, dict[str, Any]]:
    code = code.strip().upper()
    if code not in state["pending"]:
        raise UnknownCode(f"no open pairing request with code {code!r} (codes last {CODE_TTL})")
    return code, state["pending"][code]


def approve(home: Home, channel: str, code: str) -> Request:
    with _state(home, channel) as state:
        _expire(state, utcnow())
        code, req = _find(state, code)
        del state["pending"][code]
        state["denied"].pop(req["user"], None)
        state["allowed"][req["user"]] = {"name": req["name"], "approved": iso(utcnow())}
    return Request(channel, code, req["user"], req["name"], req["created"])


def deny(home: Home, channel: str, code: str) -> Request:
    """Drop the request and ignore that sender from now on (until approved another way)."""
    with _state(home, channel) as state:
        _expire(state, utcnow())
        code, req = _find(state, code)
        del state["pending"][code]
        state["denied"][req["user"]] = iso(utcnow())
    return Request(channel, code, req["user"], req["name"], req["created"])


def revoke(home: Home, channel: str, user: str) -> bool:
    with _state(home, channel) as state:
        return state["allowed"].pop(user, None) is not None


def _channels(home: Home) -> list[str]:
    d = _dir(home)
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def pending(home: Home) -> list[Request]:
    out = []
    now = utcnow()
    for channel in _channels(home):
        with _state(home, channel) as state:
            _expire(state, now)
            out += [Request(channel, c, r["user"], r["name"], r["created"]) for c, r in state["pending"].items()]
    return out


def allowed(home: Home) -> list[tuple[str, str, str]]:
    """(channel, user, name) of everyone admitted by pairing."""
    out = []
    for channel in _channels(home):
        with _state(home, channel, write=False) as state:
            out += [(channel, u, v.get("name", "")) for u, v in sorted(state["allowed"].items())]
    return out
