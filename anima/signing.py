"""The HMAC-SHA256 request signature the webhook checks and peers send: over the timestamp,
the method, the path and the raw body, so a signature cannot be moved to another request."""

from __future__ import annotations

import hashlib
import hmac

TS_HEADER = "X-Anima-Timestamp"
SIG_HEADER = "X-Anima-Signature"


def raw(text: str) -> bytes:
    """A header or path as bytes, whatever it holds (aiohttp keeps undecodable bytes as
    surrogates, which a plain `.encode()` would choke on)."""
    return text.encode("utf-8", "surrogateescape")


def signature(key: str, timestamp: str, method: str, path: str, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 of "<timestamp>.<METHOD> <path>." followed by the raw body."""
    mac = hmac.new(key.encode(), raw(f"{timestamp}.{method.upper()} {path}.") + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()
