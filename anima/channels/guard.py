"""The webhook's defences below HTTP: every client connection is bounded in time and in number,
so slow, idle or numerous strangers cannot hold the adapter's sockets or file descriptors.

aiohttp closes idle keep-alive connections itself (`keepalive_timeout`) and drains an unread
body for a bounded `lingering_time`; what it has no knob for is done here: a watchdog on each
connection that cuts off a request head not complete within `header_timeout` (slowloris), and
a cap on open connections that also leaves `FD_RESERVE` descriptors for everything else the
adapter opens (spool and request files, outgoing sends, the file watcher) under RLIMIT_NOFILE.
The body read is bounded by the request handler (`WebhookAdapter._authentic`).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import resource
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

FD_RESERVE = 128
"""Descriptors never given to client connections: a burst of up to BACKLOG accepts that are
about to be refused, plus the adapter's own files, sockets and watcher."""
BACKLOG = 64
"""Listen backlog, and the most connections asyncio accepts in one go."""
_BUSY_BODY = json.dumps({"error": "too many connections; retry shortly"}).encode()
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class ClientErrors(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, except that a malformed request (a 4xx from its HTTP parser)
    is one warning line: it is a stranger's mistake, not a traceback-worthy server error, and
    a flood of them must not bury the log."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        from aiohttp.http_exceptions import HttpProcessingError

        if isinstance(exc_info, HttpProcessingError) and exc_info.code < 500:
            why = "".join(str(exc_info.message).strip().splitlines()[:1]).rstrip(":")
            peer = args[0] if args else "?"  # aiohttp: "Error handling request from %s", remote
            self.logger.warning("webhook: refused a malformed request from %s: %d %s", peer, exc_info.code, why)
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


def quiet_fd_exhaustion(loop: asyncio.AbstractEventLoop) -> None:
    """asyncio stops accepting for a second when accept() runs out of file descriptors, and
    reports it with a traceback per attempt; that is load, not a bug: one warning line instead.
    (The connection cap keeps this rare, but a burst accepted in one loop turn can still reach
    the limit before the surplus connections are closed.)"""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS):
            log.warning("webhook: out of file descriptors; not accepting for a moment (%s)", exc)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class ConnectionGuard:
    """Makes the protocol for each accepted connection: aiohttp's request handler behind a
    header watchdog, or a one-shot 503 once the cap is reached."""

    def __init__(self, header_timeout: float, max_connections: int):
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.open: weakref.WeakValueDictionary[Any, _Watched] = weakref.WeakValueDictionary()
        """aiohttp handler → its watched connection. Counted from the moment the protocol is
        made (a burst of accepts is made before any connects); weak, so a protocol whose
        connection failed to set up does not hold a slot for ever."""
        self.full = False

    def capacity(self) -> int:
        """The connection cap: max_connections, or less when the open-file limit (read each
        time: it can be lowered while running) would not leave FD_RESERVE descriptors free."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft - FD_RESERVE))

    def factory(self, make_handler: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """The protocol factory for `loop.create_server`, wrapping aiohttp's (`runner.server`)."""

        def protocol() -> asyncio.Protocol:
            cap = self.capacity()
            if len(self.open) >= cap:
                if not self.full:
                    log.warning("webhook: %d connections open, refusing more until some close", cap)
                self.full = True
                return _Busy()
            self.full = False
            handler = make_handler()
            watched = _Watched(handler, self.header_timeout, self)
            self.open[handler] = watched
            return watched

        return protocol

    def middleware(self) -> Any:
        """aiohttp middleware: a request reaching a handler has a complete head, so its
        connection's watchdog stands down until the client starts the next request."""
        from aiohttp import web

        @web.middleware
        async def watch(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
            watched = self.open.get(request.protocol)
            if watched is not None:
                watched.head_done()
            try:
                return await handler(request)
            finally:
                if watched is not None:
                    watched.between_requests = True

        return watch


class _Watched(asyncio.Protocol):
    """One client connection, forwarded to aiohttp's handler, aborted if a request head takes
    longer than `header_timeout` from the connection's start or the request's first byte."""

    def __init__(self, inner: asyncio.Protocol, header_timeout: float, guard: ConnectionGuard):
        self.inner = inner
        self.header_timeout = header_timeout
        self.guard = guard
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.between_requests = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.between_requests:  # the first byte of the next request head
            self.between_requests = False
            self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.head_done()
        self.guard.open.pop(self.inner, None)
        self.inner.connection_lost(exc)

    def head_done(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _arm(self) -> None:
        self.head_done()
        self.timer = asyncio.get_running_loop().call_later(self.header_timeout, self._expire)

    def _expire(self) -> None:
        self.timer = None
        if self.transport is not None:
            peer = self.transport.get_extra_info("peername")
            log.info("webhook: closed a connection from %s: no request head within %gs", peer, self.header_timeout)
            self.transport.abort()


class _Busy(asyncio.Protocol):
    """A connection over the cap: answered 503 and closed before anything is read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(BUSY)
        transport.close()
