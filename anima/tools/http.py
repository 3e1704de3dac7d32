"""http_fetch: GET or POST a URL, text only, with a timeout, a size cap and no private addresses
unless the agent allows them."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Literal

from anima.config import AgentConfig
from anima.errors import ToolError
from anima.tools.base import ToolContext, tool

TEXT_TYPES = (
    "text/",
    "application/json",
    "application/xml",
    "application/xhtml",
    "application/javascript",
    "application/rss",
    "application/atom",
)


def _check_host(host: str, allow_private: bool) -> None:
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError, ValueError) as exc:  # gaierror; a label too long; a NUL
        raise ToolError(f"cannot resolve {host!r}: {exc}") from exc
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        if not allow_private and (
            addr.is_private
            or addr.is_loopback
            or addr.is_link_local
            or addr.is_reserved
            or addr.is_multicast
        ):
            raise ToolError(
                f"{host!r} resolves to a private address ({addr}); refused. "
                "Set [tools.http] allow_private = true in agent.toml to allow it."
            )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a redirect could lead to a private address: return it to the model instead


def _enabled(config: AgentConfig) -> bool:
    return config.tools.http.enabled


def _read(resp: Any, limit: int, deadline: float) -> bytes:
    """Up to `limit` bytes of the body, and no longer than until `deadline`: the socket timeout
    bounds each read, so a server dripping a byte at a time would otherwise hold the turn."""
    out = bytearray()
    while len(out) < limit:
        if time.monotonic() > deadline:
            raise TimeoutError("the response took longer than the timeout to arrive")
        chunk = getattr(resp, "read1", resp.read)(min(65536, limit - len(out)))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _codec(charset: str | None) -> str:
    """The response's charset when Python can decode text with it, else UTF-8."""
    try:
        b"a".decode(charset or "utf-8", "replace")
    except (LookupError, ValueError):  # unknown, or not a text encoding (base64)
        return "utf-8"
    return charset or "utf-8"


@tool(enabled=_enabled)
def http_fetch(
    ctx: ToolContext,
    url: str,
    method: Literal["GET", "POST"] = "GET",
    body: str = "",
    content_type: str = "application/json",
) -> str:
    """Fetch a URL over HTTP(S) and return its text (responses that are not text are refused).

    Args:
        url: http:// or https:// URL
        method: GET or POST
        body: request body for POST
        content_type: Content-Type of the POST body
    """
    policy = ctx.config.tools.http
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ToolError(f"{url!r} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolError(f"{url!r}: only http:// and https:// URLs are fetched")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise ToolError(f"{url!r}: spaces and control characters must be percent-encoded")
    _check_host(parts.hostname, policy.allow_private)
    data = body.encode("utf-8") if method == "POST" else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"User-Agent": "anima-agent/0.1"}
    )
    if data is not None:
        req.add_header("Content-Type", content_type)
    opener = urllib.request.build_opener(_NoRedirect)
    deadline = time.monotonic() + policy.timeout
    try:
        try:
            with opener.open(req, timeout=policy.timeout) as resp:
                status, headers = resp.status, resp.headers
                raw = _read(resp, policy.max_bytes + 1, deadline)
        except urllib.error.HTTPError as exc:  # a 4xx/5xx answer is still an answer
            status, headers = exc.code, exc.headers
            raw = _read(exc, policy.max_bytes + 1, deadline)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError, a bad header
        raise ToolError(f"fetch failed: {getattr(exc, 'reason', exc)}") from exc
    ctype = headers.get("Content-Type", "")
    if ctype and not ctype.startswith(TEXT_TYPES):
        raise ToolError(f"{url!r} returned {ctype!r}; only text responses are returned")
    cut = len(raw) > policy.max_bytes
    text = raw[: policy.max_bytes].decode(_codec(headers.get_content_charset()), "replace")
    note = f"\n[cut at {policy.max_bytes} bytes]" if cut else ""
    location = headers.get("Location")
    head = f"HTTP {status}" + (f" (redirect to {location})" if location else "")
    return f"{head}\n\n{text}{note}"
