"""Peer transport: Raft messages between members over persistent, pipelined streams.

Each member keeps one outgoing websocket per peer (`GET /raft/stream` on the peer URL) and
writes to it in order; nothing waits for replies (Raft messages are one-way and Raft
tolerates loss). What queued up while a frame was being written goes out as the next frame,
a msgpack array of encoded messages (`corral.raft` codec), so a busy leader sends few, large
frames and heartbeats are never stuck behind a timer. A stream that breaks is reported to
Raft (`report_unreachable`, and `report_snapshot(False)` for a snapshot in flight) and
re-dialled with backoff. Frames carry the stream format version; the handshake checks the
cluster id and refuses strangers.

Fault injection (tests only; enabled by `CORRAL_FAULT_INJECTION=1`): `PUT /debug/faults`
with `{"drop_to": [ids], "drop_from": [ids]}` (hex ids) drops traffic one way or both, which
makes full, partial and one-way partitions between real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
import msgpack
from aiohttp import web

from corral.raft import DecodeError, Message, MessageType, decode_message, encode_message

__all__ = ["STREAM_VERSION", "PeerTransport"]

STREAM_VERSION = 1
QUEUE_LIMIT = 8192
MAX_FRAME = 512 * 1024 * 1024


@dataclass
class _Stream:
    peer_id: int
    urls: list[str]
    queue: list[bytes] = field(default_factory=list)
    snaps: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    connected: bool = False


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
    ) -> None:
        self.id = member_id
        self.cluster_id = cluster_id
        self.deliver = deliver
        self.report_unreachable = report_unreachable
        self.report_snapshot = report_snapshot
        self.dial_timeout = dial_timeout
        self.retry_interval = retry_interval
        self.streams: dict[int, _Stream] = {}
        self.session: aiohttp.ClientSession | None = None
        self.drop_to: set[int] = set()
        self.drop_from: set[int] = set()
        self.sent_frames = 0
        self.incoming: set[web.WebSocketResponse] = set()
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
            s.wake.set()

    async def _run(self, s: _Stream) -> None:
        backoff = self.retry_interval
        while not self.closed:
            ws = await self._dial(s)
            if ws is None:
                self._fail_pending(s)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = self.retry_interval
            s.connected = True
            reader = asyncio.get_running_loop().create_task(self._drain(ws, s))
            try:
                while not ws.closed and not reader.done():
                    if not s.queue:
                        s.wake.clear()
                        await s.wake.wait()
                        continue
                    batch, s.queue = s.queue, []
                    snaps, s.snaps = s.snaps, 0
                    await ws.send_bytes(msgpack.packb([STREAM_VERSION, batch]))
                    self.sent_frames += 1
                    for _ in range(snaps):
                        self.report_snapshot(s.peer_id, True)
            except (TimeoutError, aiohttp.ClientError, ConnectionError, RuntimeError):
                pass
            finally:
                s.connected = False
                reader.cancel()
                with contextlib.suppress(Exception):
                    await ws.close()
            self.report_unreachable(s.peer_id)

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

    async def _dial(self, s: _Stream) -> aiohttp.ClientWebSocketResponse | None:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        for url in s.urls:
            try:
                return await self.session.ws_connect(
                    f"{url.rstrip('/')}/raft/stream",
                    params={
                        "from": f"{self.id:x}",
                        "to": f"{s.peer_id:x}",
                        "cluster": f"{self.cluster_id:x}",
                        "v": str(STREAM_VERSION),
                    },
                    timeout=aiohttp.ClientWSTimeout(ws_close=self.dial_timeout),
                    max_msg_size=MAX_FRAME,
                    compress=0,
                    autoping=True,
                    heartbeat=None,
                )
            except (TimeoutError, aiohttp.ClientError, OSError):
                continue
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
        if version > STREAM_VERSION:
            return web.json_response(
                {"message": f"unsupported stream version {version}"}, status=412
            )
        if self.closed:
            return web.json_response({"message": "member is stopping"}, status=503)
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, compress=False, autoping=True)
        await ws.prepare(request)
        self.incoming.add(ws)
        try:
            await self._read_stream(ws, sender)
        finally:
            self.incoming.discard(ws)
        return ws

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
        for pid in list(self.streams):
            self._drop(pid)
        for ws in list(self.incoming):
            with contextlib.suppress(Exception):
                await ws.close()
        if self.session is not None:
            await self.session.close()
