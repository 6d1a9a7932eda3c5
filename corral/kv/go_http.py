"""What Go's net/http server does that etcd's clients can see, shared by the member's client
API and the proxy: no `Server` header, a bare 400 for a path that does not decode, request lines
and headers up to 1 MiB (DefaultMaxHeaderBytes).

It also holds the member's short path for plain requests (`FastConnection`, `FastSite`): a
write costs a whole Raft round on every member, and aiohttp's per-request machinery (request
and response objects, router, signals, a task per request) was about a fifth of the leader's
CPU per write. A `FastConnection` parses the plain keep-alive HTTP/1.1 requests that clients
send in the common case and answers them with prebuilt bytes; the first request it is not
sure about (another protocol version, chunked bodies, ``Expect``, ``Connection`` other than
keep-alive, odd bytes, or whatever the answerer declines) hands the connection, with what it
has buffered, to aiohttp for the rest of its life. Both produce the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import Callable, Coroutine
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web

TEXT_PLAIN = "text/plain; charset=utf-8"

_log = logging.getLogger(__name__)


async def no_server_header(_: web.Request, resp: web.StreamResponse) -> None:
    resp.headers.popall("Server", None)


def bad_request_path() -> web.Response:
    """Go's answer to a request path it cannot unescape: 400 and the connection closed."""
    resp = web.Response(status=400, body=b"400 Bad Request")
    resp.headers["Content-Type"] = TEXT_PLAIN
    resp.force_close()
    return resp


def app_runner(app: web.Application, shutdown_timeout: float) -> web.AppRunner:
    return web.AppRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,
        access_log=None,
        max_line_size=1 << 20,
        max_field_size=1 << 20,
        shutdown_timeout=shutdown_timeout,
    )


# ---------------------------------------------------------------------------- the short path

#: An answer: the whole response as bytes, a coroutine that makes them, or None to decline
#: (the connection then goes to aiohttp, which answers the same request).
Answer = bytes | Coroutine[Any, Any, bytes] | None
#: (method, request target, Content-Type or None, body) -> Answer. It must not have side
#: effects when it declines.
Answerer = Callable[[bytes, bytes, "str | None", bytes], Answer]

# A request head the short path serves: a known method, an ASCII target under `prefix`,
# HTTP/1.1, token header names and printable values (anything else: aiohttp decides).
_HEADER = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e]*\r\n"
_HEADER_RE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[\t ]*([\t\x20-\x7e]*?)[\t ]*\r\n")
#: Heads longer than this go to aiohttp (it enforces Go's limits).
_MAX_HEAD = 16 << 10
#: Bodies longer than this go to aiohttp (it streams them and enforces the form limit).
_MAX_BODY = 1 << 20
#: Buffered bytes beyond this pause reading until the answers in flight are written.
_MAX_BUFFER = 4 << 20
# Headers that change the framing or the connection: the request goes to aiohttp.
_FRAMING = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"te"})


def head_pattern(prefix: bytes) -> re.Pattern[bytes]:
    """The request heads served for targets `prefix`, `prefix/...` and `prefix?...`."""
    return re.compile(
        rb"(GET|PUT|POST|DELETE|HEAD) ("
        + re.escape(prefix)
        + rb"(?:[/?][\x21-\x7e]*)?) HTTP/1\.1\r\n((?:"
        + _HEADER
        + rb")*)\r\n"
    )


class _DateHeader:
    """``Date: ...\\r\\n`` as Go writes it, recomputed once a second."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._line


date_header = _DateHeader()

_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <code> <reason>\\r\\n`` with the reason phrases aiohttp and Go use."""
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason}\r\n".encode()
    return line


_INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 55\r\nConnection: close\r\n\r\n"
    b"500 Internal Server Error\n\nServer got itself in trouble"
)


class FastConnection(asyncio.Protocol):
    """One client connection on the short path; requests are answered one at a time, in
    order (pipelined ones wait in the buffer)."""

    def __init__(
        self,
        answer: Answerer,
        head: re.Pattern[bytes],
        fallback: Callable[[], asyncio.Protocol],
        live: set[FastConnection],
    ) -> None:
        self._answer = answer
        self._head = head
        self._fallback = fallback
        self._live = live
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._write_paused = False
        self._read_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._live.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._live.discard(self)
        self._transport = None
        if self._task is not None:
            self._task.cancel()  # as aiohttp's handler_cancellation: the client went away

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._task is None and not self._write_paused:
            self._serve()
        if len(self._buf) > _MAX_BUFFER and self._transport is not None and not self._read_paused:
            self._read_paused = True  # a client that sends faster than it reads
            self._transport.pause_reading()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._task is None:
            self._serve()

    def close(self) -> None:
        """Server shutdown: close now when idle, else after the answer in flight."""
        self._closing = True
        if self._task is None and self._transport is not None:
            self._transport.close()

    def _serve(self) -> None:
        self._serve_requests()
        transport = self._transport
        if transport is None:
            return
        if self._closing and self._task is None:
            transport.close()
        elif self._read_paused and len(self._buf) <= _MAX_BUFFER:
            self._read_paused = False
            transport.resume_reading()

    def _serve_requests(self) -> None:
        buf = self._buf
        while buf and self._transport is not None and not self._write_paused:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self._handoff()
                return
            m = self._head.match(buf, 0, end + 4)
            if m is None:
                self._handoff()
                return
            length = 0
            ctype: str | None = None
            seen_length = False
            for hm in _HEADER_RE.finditer(m.group(3)):
                name = hm.group(1).lower()
                if name == b"content-length":
                    value = hm.group(2)
                    if seen_length or not value.isdigit():
                        self._handoff()
                        return
                    seen_length = True
                    length = int(value)
                elif name == b"content-type":
                    if ctype is None:
                        ctype = hm.group(2).decode("latin-1")
                elif name == b"connection":
                    if hm.group(2).lower() != b"keep-alive":
                        self._handoff()
                        return
                elif name in _FRAMING:
                    self._handoff()
                    return
            if length > _MAX_BODY:
                self._handoff()
                return
            total = end + 4 + length
            if len(buf) < total:
                return  # the body is still on its way
            answer = self._answer(m.group(1), m.group(2), ctype, bytes(buf[end + 4 : total]))
            if answer is None:
                self._handoff()
                return
            del buf[:total]
            if isinstance(answer, bytes):
                self._transport.write(answer)  # may pause writing, which ends the loop
                continue
            self._task = asyncio.get_running_loop().create_task(self._finish(answer))
            return

    async def _finish(self, answer: Coroutine[Any, Any, bytes]) -> None:
        try:
            data = await answer
        except Exception:
            _log.exception("error handling request")
            if self._transport is not None:
                self._transport.write(_INTERNAL_ERROR)
                self._transport.close()
            return
        finally:
            self._task = None
        if self._transport is not None:
            self._transport.write(data)
            self._serve()

    def _handoff(self) -> None:
        transport = self._transport
        assert transport is not None
        self._live.discard(self)
        self._transport = None
        if self._read_paused:
            transport.resume_reading()
        proto = self._fallback()
        transport.set_protocol(proto)
        proto.connection_made(transport)
        data = bytes(self._buf)
        self._buf.clear()
        if data:
            proto.data_received(data)
        if self._closing:  # shutdown began: aiohttp's handler closes after this request
            closer = getattr(proto, "close", None)
            if closer is not None:
                closer()


class FastSite(web.TCPSite):
    """A TCP site whose connections start on the short path (`FastConnection`); declined
    requests go to the runner's aiohttp server, as with a plain `web.TCPSite`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        answer: Answerer,
        head: re.Pattern[bytes],
        live: set[FastConnection],
        *,
        backlog: int = 128,
        reuse_address: bool | None = None,
    ) -> None:
        super().__init__(runner, host, port, backlog=backlog, reuse_address=reuse_address)
        self._answer = answer
        self._head_re = head
        self._live = live

    async def start(self) -> None:
        self._runner._reg_site(self)
        server = self._runner.server
        assert server is not None
        fallback: Callable[[], asyncio.Protocol] = server

        def factory() -> asyncio.Protocol:
            return FastConnection(self._answer, self._head_re, fallback, self._live)

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            factory,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
        else:
            self._bound_port = self._port
