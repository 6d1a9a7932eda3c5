"""Peer transport: Raft messages between members over persistent, pipelined streams.

Each member keeps one outgoing stream per peer (`GET /raft/stream` on the peer URL) and
writes to it in order; nothing waits for replies (Raft messages are one-way and Raft
tolerates loss). A stream that breaks is reported to Raft (`report_unreachable`, and
`report_snapshot(False)` for a snapshot in flight) and re-dialled with backoff. The handshake
carries the stream format version and the cluster id; strangers are refused.

Stream format 2 (this release) upgrades the HTTP connection itself: the request carries
`v=2` and `Upgrade: corral-raft/2`, the answer is `101 Switching Protocols`, and from then on
the dialling side writes frames of a 5-byte header (big-endian payload length, frame kind)
and a payload; kind 0 is one Raft message (`corral.raft` codec), other kinds are skipped.
`send()` writes straight to the socket; while the socket is backed up (the transport paused
writing) messages queue and go out together when it resumes. The listener parses frames as
bytes arrive and delivers them without a task hop.

Stream format 1 (the previous release) is a websocket whose binary frames are msgpack
`[1, [encoded messages]]`. It is still accepted, and dialled when a peer answers the upgrade
with anything but 101, so members can be updated one at a time.

Fault injection (tests only; enabled by `CORRAL_FAULT_INJECTION=1`): `PUT /debug/faults`
with `{"drop_to": [ids], "drop_from": [ids]}` (hex ids) drops traffic one way or both, which
makes full, partial and one-way partitions between real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import SplitResult, urlencode, urlsplit

import aiohttp
import msgpack
from aiohttp import web

from corral.raft import DecodeError, Message, MessageType, decode_message, encode_message

__all__ = ["STREAM_VERSION", "UPGRADE", "PeerTransport"]

STREAM_VERSION = 2
UPGRADE = "corral-raft/2"
QUEUE_LIMIT = 8192
MAX_FRAME = 512 * 1024 * 1024
MAX_ANSWER_HEAD = 64 * 1024

_HEAD = struct.Struct(">IB")  # payload length, frame kind
_HEAD_SIZE = _HEAD.size
_KIND_MESSAGE = 0


class _Link(asyncio.Protocol):
    """The dialling side of a format-2 stream: sends the upgrade request, reads the answer,
    then only writes (the listener sends nothing after its 101)."""

    def __init__(self, request: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[int] = loop.create_future()  # status; 0: none
        self.lost: asyncio.Future[None] = loop.create_future()
        self.ready = False  # upgraded, writable and not lost
        self.on_resume: Callable[[], None] | None = None
        self._head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        with contextlib.suppress(OSError, AttributeError):
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_ANSWER_HEAD:
                self.answer.set_result(0)
            return
        lines = self._head[:end].decode("latin-1").split("\r\n")
        self._head = b""
        parts = lines[0].split(" ", 2)
        try:
            status = int(parts[1]) if len(parts) > 1 and parts[0].startswith("HTTP/") else 0
        except ValueError:
            status = 0
        if status == 101:
            upgrade = ""
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "upgrade":
                    upgrade = value.strip()
            if upgrade.lower() != UPGRADE:
                status = 0  # switched to something else: not a peer we can talk to
        self.ready = status == 101
        self.answer.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.ready = False
        if not self.answer.done():
            self.answer.set_result(0)
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self.ready = False

    def resume_writing(self) -> None:
        if self.lost.done() or not self.answer.done() or self.answer.result() != 101:
            return
        self.ready = True
        if self.on_resume is not None:
            self.on_resume()

    def close(self) -> None:
        self.ready = False
        if self.transport is not None:
            self.transport.close()


class _Inbound:
    """The listening side of a format-2 stream, set as the parser of aiohttp's connection
    after the 101: frames are parsed as bytes arrive and delivered in one call per read."""

    def __init__(self, owner: PeerTransport, sender: int, transport: asyncio.Transport) -> None:
        self.owner = owner
        self.sender = sender
        self.transport = transport
        self.buf = bytearray()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        buf: bytes | bytearray = data
        if self.buf:
            self.buf += data
            buf = self.buf
        view = memoryview(buf)
        n = len(buf)
        pos = 0
        msgs: list[Message] = []
        try:
            while n - pos >= _HEAD_SIZE:
                size, kind = _HEAD.unpack_from(buf, pos)
                if size > MAX_FRAME:
                    self.transport.close()  # framing is lost; the sender re-dials
                    self.buf = bytearray()
                    return True, b""
                end = pos + _HEAD_SIZE + size
                if end > n:
                    break
                if kind == _KIND_MESSAGE:
                    try:
                        msgs.append(decode_message(view[pos + _HEAD_SIZE : end]))  # type: ignore[arg-type]
                    except DecodeError:
                        pass  # a damaged message is dropped; Raft recovers from loss
                pos = end
        finally:
            view.release()
        if pos < n:
            # Keep the partial frame; a copy only when it arrived in this read.
            if buf is self.buf:
                del self.buf[:pos]
            else:
                self.buf = bytearray(data[pos:])
        elif self.buf:
            self.buf = bytearray()
        if msgs and self.sender not in self.owner.drop_from:
            self.owner.deliver(msgs)
        return False, b""

    def feed_eof(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        self.transport.close()
        self.feed_eof()


@dataclass
class _Stream:
    peer_id: int
    urls: list[str]
    queue: list[bytes] = field(default_factory=list)
    snaps: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    connected: bool = False
    link: _Link | None = None  # the format-2 connection while it is up


class PeerTransport:
    def __init__(
        self,
        member_id: int,
        cluster_id: int,
        deliver: Callable[[list[Message]], None],
        report_unreachable: Callable[[int], None],
        report_snapshot: Callable[[int, bool], None],
        dial_timeout: float = 1.0,
        retry_interval: float = 0.1,
        stream_version: int = STREAM_VERSION,
    ) -> None:
        """`stream_version` 1 speaks only the previous release's format (dialling and
        listening), as a member of that release would."""
        self.id = member_id
        self.cluster_id = cluster_id
        self.deliver = deliver
        self.report_unreachable = report_unreachable
        self.report_snapshot = report_snapshot
        self.dial_timeout = dial_timeout
        self.retry_interval = retry_interval
        self.stream_version = stream_version
        self.streams: dict[int, _Stream] = {}
        self.session: aiohttp.ClientSession | None = None
        self.drop_to: set[int] = set()
        self.drop_from: set[int] = set()
        self.sent_frames = 0
        self.incoming: set[web.WebSocketResponse] = set()
        self.inbound: set[_Inbound] = set()
        self.closed = False
        self.fault_injection = os.environ.get("CORRAL_FAULT_INJECTION") == "1"

    # -- peers -----------------------------------------------------------------------------
    def set_peers(self, peers: dict[int, list[str]]) -> None:
        """Make the set of streams match `peers` (member id → peer URLs); self is skipped."""
        for pid in list(self.streams):
            if pid not in peers:
                self._drop(pid)
        for pid, urls in peers.items():
            if pid == self.id:
                continue
            s = self.streams.get(pid)
            if s is None:
                s = _Stream(pid, list(urls))
                self.streams[pid] = s
                s.task = asyncio.get_running_loop().create_task(self._run(s))
            else:
                s.urls = list(urls)

    def _drop(self, pid: int) -> None:
        s = self.streams.pop(pid)
        if s.task is not None:
            s.task.cancel()

    # -- sending ---------------------------------------------------------------------------
    def send(self, msgs: Sequence[Message]) -> None:
        direct: list[_Stream] = []
        for m in msgs:
            s = self.streams.get(m.to)
            if s is None or m.to in self.drop_to:
                if m.type == MessageType.SNAP:
                    self.report_snapshot(m.to, False)
                continue
            if len(s.queue) >= QUEUE_LIMIT:
                # Raft retries what is lost; a full queue means the peer is not keeping up.
                self.report_unreachable(m.to)
                continue
            if m.type == MessageType.SNAP:
                s.snaps += 1
            s.queue.append(encode_message(m))
            if s.link is None:
                s.wake.set()
            elif s not in direct:
                direct.append(s)
        for s in direct:
            self._flush(s)

    def queued(self) -> bool:
        """Whether a message waits for a stream's writer task (a format-1 stream, a link
        still dialling or paused); format-2 links write inside `send`."""
        return any(s.queue for s in self.streams.values())

    def _flush(self, s: _Stream) -> None:
        """Write what is queued for `s` to its format-2 connection, if it can take it now."""
        link = s.link
        if link is None or not link.ready or not s.queue:
            return
        batch, s.queue = s.queue, []
        if len(batch) == 1:
            b = batch[0]
            data = _HEAD.pack(len(b), _KIND_MESSAGE) + b
        else:
            parts: list[bytes] = []
            for b in batch:
                parts.append(_HEAD.pack(len(b), _KIND_MESSAGE))
                parts.append(b)
            data = b"".join(parts)
        assert link.transport is not None
        link.transport.write(data)
        self.sent_frames += 1
        snaps, s.snaps = s.snaps, 0
        for _ in range(snaps):
            self.report_snapshot(s.peer_id, True)

    async def _run(self, s: _Stream) -> None:
        backoff = self.retry_interval
        while not self.closed:
            conn = await self._dial(s)
            if conn is None:
                self._fail_pending(s)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = self.retry_interval
            s.connected = True
            try:
                if isinstance(conn, _Link):
                    await self._serve_link(s, conn)
                else:
                    await self._serve_websocket(s, conn)
            finally:
                s.connected = False
            self.report_unreachable(s.peer_id)

    async def _serve_link(self, s: _Stream, link: _Link) -> None:
        s.link = link
        link.on_resume = lambda: self._flush(s)
        try:
            self._flush(s)  # what queued while dialling
            await link.lost
        finally:
            s.link = None
            link.on_resume = None
            link.close()

    async def _serve_websocket(self, s: _Stream, ws: aiohttp.ClientWebSocketResponse) -> None:
        reader = asyncio.get_running_loop().create_task(self._drain(ws, s))
        try:
            while not ws.closed and not reader.done():
                if not s.queue:
                    s.wake.clear()
                    await s.wake.wait()
                    continue
                batch, s.queue = s.queue, []
                snaps, s.snaps = s.snaps, 0
                await ws.send_bytes(msgpack.packb([1, batch]))
                self.sent_frames += 1
                for _ in range(snaps):
                    self.report_snapshot(s.peer_id, True)
        except (TimeoutError, aiohttp.ClientError, ConnectionError, RuntimeError):
            pass
        finally:
            reader.cancel()
            with contextlib.suppress(Exception):
                await ws.close()

    @staticmethod
    async def _drain(ws: aiohttp.ClientWebSocketResponse, s: _Stream) -> None:
        """Read (and ignore) until the stream closes, then wake the writer to re-dial."""
        with contextlib.suppress(Exception):
            async for _ in ws:
                pass
        s.wake.set()

    def _fail_pending(self, s: _Stream) -> None:
        if s.queue:
            s.queue.clear()
            self.report_unreachable(s.peer_id)
        for _ in range(s.snaps):
            self.report_snapshot(s.peer_id, False)
        s.snaps = 0

    def _query(self, s: _Stream, version: int) -> dict[str, str]:
        return {
            "from": f"{self.id:x}",
            "to": f"{s.peer_id:x}",
            "cluster": f"{self.cluster_id:x}",
            "v": str(version),
        }

    async def _dial(self, s: _Stream) -> _Link | aiohttp.ClientWebSocketResponse | None:
        for url in s.urls:
            parts = urlsplit(url)
            if self.stream_version >= 2 and parts.scheme == "http" and parts.hostname:
                answered = await self._dial_link(s, parts)
                if isinstance(answered, _Link):
                    return answered
                if not answered or answered == 503:
                    # Nobody answered, or a member that is stopping: try again later, on
                    # format 2 (dialling format 1 at a stopping listener can hang in its
                    # shutdown).
                    continue
                # Answered, but not upgraded: a member of the previous release.
            ws = await self._dial_websocket(s, url)
            if ws is not None:
                return ws
        return None

    async def _dial_link(self, s: _Stream, parts: SplitResult) -> _Link | int:
        """The format-2 connection, or the HTTP status that refused it (0: no answer)."""
        loop = asyncio.get_running_loop()
        target = f"{parts.path.rstrip('/')}/raft/stream?{urlencode(self._query(s, 2))}"
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Connection: Upgrade\r\nUpgrade: {UPGRADE}\r\n\r\n"
        ).encode("latin-1")
        host = parts.hostname or ""
        link: _Link | None = None
        try:
            async with asyncio.timeout(self.dial_timeout):
                _, link = await loop.create_connection(
                    lambda: _Link(request, loop), host, parts.port or 80
                )
                status = await link.answer
        except (TimeoutError, OSError, ValueError):
            if link is not None:
                link.close()
            return 0
        except BaseException:
            if link is not None:
                link.close()
            raise
        if status == 101 and link.ready:
            return link
        link.close()
        return status

    async def _dial_websocket(self, s: _Stream, url: str) -> aiohttp.ClientWebSocketResponse | None:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        try:
            # The handshake is bounded like a format-2 dial: a listener that accepts and
            # never answers must not hold the stream (and Raft's messages) for good.
            async with asyncio.timeout(self.dial_timeout):
                return await self.session.ws_connect(
                    f"{url.rstrip('/')}/raft/stream",
                    params=self._query(s, 1),
                    timeout=aiohttp.ClientWSTimeout(ws_close=self.dial_timeout),
                    max_msg_size=MAX_FRAME,
                    compress=0,
                    autoping=True,
                    heartbeat=None,
                )
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None

    # -- receiving -------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        out = [web.get("/raft/stream", self._handle_stream)]
        if self.fault_injection:
            out.append(web.put("/debug/faults", self._handle_faults))
        return out

    async def _handle_stream(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        try:
            sender = int(q.get("from", ""), 16)
            cluster = int(q.get("cluster", ""), 16)
            version = int(q.get("v", "0"))
        except ValueError:
            return web.json_response({"message": "bad stream handshake"}, status=400)
        if cluster != self.cluster_id:
            return web.json_response(
                {"message": f"cluster ID mismatch: ours {self.cluster_id:x}, yours {cluster:x}"},
                status=412,
            )
        if version > self.stream_version:
            return web.json_response(
                {"message": f"unsupported stream version {version}"}, status=412
            )
        if self.closed:
            return web.json_response({"message": "member is stopping"}, status=503)
        if version >= 2:
            if request.headers.get("Upgrade", "").strip().lower() != UPGRADE:
                return web.json_response(
                    {"message": f"stream version {version} needs Upgrade: {UPGRADE}"},
                    status=426,
                    headers={"Upgrade": UPGRADE, "Connection": "Upgrade"},
                )
            return await self._serve_upgrade(request, sender)
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, compress=False, autoping=True)
        await ws.prepare(request)
        self.incoming.add(ws)
        try:
            await self._read_stream(ws, sender)
        finally:
            self.incoming.discard(ws)
        return ws

    async def _serve_upgrade(self, request: web.Request, sender: int) -> web.StreamResponse:
        transport = request.transport
        if transport is None:
            return web.json_response({"message": "connection lost"}, status=400)
        inbound = _Inbound(self, sender, transport)
        # The parser is in place before the 101 leaves, so no frame can reach aiohttp's.
        protocol: Any = request.protocol
        protocol.set_parser(inbound)
        protocol.keep_alive(False)
        self.inbound.add(inbound)
        resp = web.StreamResponse(status=101, headers={"Upgrade": UPGRADE, "Connection": "Upgrade"})
        try:
            await resp.prepare(request)
            await inbound.done
        finally:
            self.inbound.discard(inbound)
            transport.close()
        return resp

    async def _read_stream(self, ws: web.WebSocketResponse, sender: int) -> None:
        async for frame in ws:
            if frame.type != aiohttp.WSMsgType.BINARY:
                continue
            if sender in self.drop_from:
                continue
            try:
                _v, batch = msgpack.unpackb(frame.data)
                msgs = [decode_message(b) for b in batch]
            except (DecodeError, ValueError, TypeError, msgpack.UnpackException):
                continue  # a damaged frame is dropped; Raft recovers from loss
            self.deliver(msgs)

    async def _handle_faults(self, request: web.Request) -> web.Response:
        try:
            doc = json.loads(await request.text())
            self.drop_to = {int(x, 16) for x in doc.get("drop_to", [])}
            self.drop_from = {int(x, 16) for x in doc.get("drop_from", [])}
        except (ValueError, TypeError, AttributeError):
            return web.json_response({"message": "bad fault spec"}, status=400)
        return web.json_response(
            {
                "drop_to": sorted(f"{x:x}" for x in self.drop_to),
                "drop_from": sorted(f"{x:x}" for x in self.drop_from),
            }
        )

    async def close(self) -> None:
        self.closed = True
        tasks = [s.task for s in self.streams.values() if s.task is not None]
        for pid in list(self.streams):
            self._drop(pid)
        for inbound in list(self.inbound):
            inbound.close()
        for ws in list(self.incoming):
            with contextlib.suppress(Exception):
                await ws.close()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.session is not None:
            await self.session.close()
