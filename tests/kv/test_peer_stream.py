"""Stream format 2 (raw frames after an HTTP upgrade) and its compatibility with format 1
(websocket) members: both directions, fallback, handshake checks, framing, clean close."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import aiohttp
import msgpack
import pytest
import uvloop
from aiohttp import web

from corral.kv import peer
from corral.kv.peer import UPGRADE, PeerTransport
from corral.raft import Entry, Message, MessageType, encode_message
from corral.testing.ports import free_port

from .conftest import Node, eventually

_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Members run on uvloop, whose transports differ from asyncio's; test on both."""
    global _loop_factory
    _loop_factory = uvloop.new_event_loop if request.param == "uvloop" else None
    yield
    _loop_factory = None


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=_loop_factory) as runner:
        runner.run(coro())


def app_msg(i: int, to: int = 2, from_: int = 1, size: int = 10) -> Message:
    return Message(
        MessageType.APP,
        to=to,
        from_=from_,
        term=1,
        index=i,
        entries=(Entry(1, i + 1, data=b"x" * size),),
    )


def old_node(member_id: int, cluster: int = 0xC1) -> Node:
    """A member of the previous release: dials and accepts websocket streams only."""
    return Node(member_id, cluster, stream_version=1)


async def stop(*nodes: Node) -> None:
    for n in nodes:
        await n.t.close()
    for n in nodes:
        if n.runner is not None:
            await n.stop_listening()


async def raw_handshake(url: str, query: str, upgrade: str | None = UPGRADE) -> bytes:
    """Send a stream request by hand and return the head of the answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = f"GET /raft/stream?{query} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if upgrade is not None:
        head += f"Connection: Upgrade\r\nUpgrade: {upgrade}\r\n"
    writer.write((head + "\r\n").encode())
    try:
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()


def test_new_members_use_the_upgraded_stream() -> None:
    async def go() -> None:
        a, b = Node(1), Node(2)
        await a.listen()
        await b.listen()
        a.t.set_peers({1: [a.url], 2: [b.url]})
        b.t.set_peers({1: [a.url], 2: [b.url]})
        a.t.send([app_msg(i) for i in range(300)])
        b.t.send([app_msg(i, to=1, from_=2) for i in range(5)])
        await eventually(lambda: len(b.got) == 300 and len(a.got) == 5)
        assert [m.index for m in b.got] == list(range(300))
        assert [m.index for m in a.got] == list(range(5))
        assert a.t.streams[2].link is not None and b.t.streams[1].link is not None
        assert len(a.t.inbound) == 1 and len(b.t.inbound) == 1
        assert not a.t.incoming and not b.t.incoming  # no websocket involved
        assert a.t.sent_frames <= 2  # one send() is one write
        await stop(a, b)

    run(go)


def test_old_member_dials_a_new_one() -> None:
    async def go() -> None:
        old, new = old_node(1), Node(2)
        await new.listen()
        old.t.set_peers({2: [new.url]})
        old.t.send([app_msg(i) for i in range(50)])
        await eventually(lambda: len(new.got) == 50)
        assert [m.index for m in new.got] == list(range(50))
        assert len(new.t.incoming) == 1 and not new.t.inbound
        await stop(old, new)

    run(go)


def test_new_member_falls_back_to_websocket_for_an_old_one() -> None:
    async def go() -> None:
        new, old = Node(1), old_node(2)
        await old.listen()
        new.t.set_peers({2: [old.url]})
        new.t.send([app_msg(i) for i in range(50)])
        await eventually(lambda: len(old.got) == 50)
        assert [m.index for m in old.got] == list(range(50))
        assert new.t.streams[2].link is None and new.t.streams[2].connected
        assert len(old.t.incoming) == 1
        new.t.send([Message(MessageType.SNAP, to=2, from_=1, term=1)])
        await eventually(lambda: (2, True) in new.snap_reports)
        await stop(new, old)

    run(go)


def test_fallback_to_a_listener_that_only_knows_websockets() -> None:
    """A peer that answers the upgrade with 400 (aiohttp refusing a non-websocket upgrade),
    reading what the previous release wrote: websocket frames of msgpack [1, [messages]]."""

    async def go() -> None:
        frames: list[list[object]] = []

        async def handler(request: web.Request) -> web.StreamResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)  # 400 for anything but a websocket upgrade
            async for f in ws:
                frames.append(msgpack.unpackb(f.data))
            return ws

        app = web.Application()
        app.add_routes([web.get("/raft/stream", handler)])
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        a = Node(1)
        a.t.set_peers({2: [f"http://127.0.0.1:{port}"]})
        m = app_msg(7)
        a.t.send([m])
        await eventually(lambda: len(frames) == 1)
        assert frames[0] == [1, [encode_message(m)]]
        await a.t.close()
        await runner.cleanup()

    run(go)


def test_peer_without_the_stream_route_falls_back_and_reports_unreachable() -> None:
    async def go() -> None:
        app = web.Application()  # 404 for everything
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        a = Node(1)
        a.t.set_peers({2: [f"http://127.0.0.1:{port}"]})
        a.t.send([Message(MessageType.SNAP, to=2, from_=1, term=1)])
        await eventually(lambda: 2 in a.unreachable and (2, False) in a.snap_reports)
        assert not a.t.streams[2].connected
        await a.t.close()
        await runner.cleanup()

    run(go)


def test_a_stopping_peer_is_not_taken_for_an_old_one() -> None:
    """A 503 (the member is stopping) is retried on format 2, never answered by dialling a
    websocket: that dial would go to a listener in the middle of its shutdown."""

    async def go() -> None:
        seen: list[str] = []

        async def stopping(request: web.Request) -> web.Response:
            seen.append(request.headers.get("Upgrade", ""))
            return web.json_response({"message": "member is stopping"}, status=503)

        app = web.Application()
        app.add_routes([web.get("/raft/stream", stopping)])
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        a = Node(1)
        a.t.set_peers({2: [f"http://127.0.0.1:{port}"]})
        a.t.send([Message(MessageType.HEARTBEAT, to=2, from_=1, term=1)])
        await eventually(lambda: len(seen) >= 2)  # dialled again after a backoff
        assert seen and all(u.lower() == UPGRADE for u in seen), seen
        assert not a.t.streams[2].connected
        await a.t.close()
        await runner.cleanup()

    run(go)


def test_upgrade_handshake_checks() -> None:
    async def go() -> None:
        b = Node(2, cluster=0xBBB)
        await b.listen()
        head = await raw_handshake(b.url, "from=1&to=2&cluster=aaa&v=2")
        assert head.startswith(b"HTTP/1.1 412")
        async with aiohttp.ClientSession() as s:
            params = {"from": "1", "to": "2", "cluster": "aaa", "v": "2"}
            async with s.get(b.url + "/raft/stream", params=params) as r:
                assert r.status == 412
                assert "cluster ID mismatch" in (await r.json())["message"]
        head = await raw_handshake(b.url, "from=1&to=2&cluster=bbb&v=3")
        assert head.startswith(b"HTTP/1.1 412")
        head = await raw_handshake(b.url, "from=1&to=2&cluster=bbb&v=2", upgrade=None)
        assert head.startswith(b"HTTP/1.1 426")
        head = await raw_handshake(b.url, "from=zz&cluster=bbb&v=2")
        assert head.startswith(b"HTTP/1.1 400")
        head = await raw_handshake(b.url, "from=1&to=2&cluster=bbb&v=2")
        assert head.startswith(b"HTTP/1.1 101")
        assert f"upgrade: {UPGRADE}".encode() in head.lower()
        await b.t.close()
        head = await raw_handshake(b.url, "from=1&to=2&cluster=bbb&v=2")
        assert head.startswith(b"HTTP/1.1 503")
        await b.stop_listening()

    run(go)


def test_mismatched_cluster_never_delivers() -> None:
    async def go() -> None:
        a, b = Node(1, cluster=0xAAA), Node(2, cluster=0xBBB)
        await b.listen()
        a.t.set_peers({2: [b.url]})
        a.t.send([Message(MessageType.HEARTBEAT, to=2, from_=1, term=1)])
        await asyncio.sleep(0.3)
        assert b.got == [] and not b.t.inbound and not b.t.incoming
        assert not a.t.streams[2].connected
        async with (  # a format-1 dial is refused alike
            aiohttp.ClientSession() as s,
            s.get(b.url + "/raft/stream", params={"from": "1", "cluster": "aaa", "v": "1"}) as r,
        ):
            assert r.status == 412
            assert "cluster ID mismatch" in (await r.json())["message"]
        await stop(a, b)

    run(go)


def test_large_messages_and_snapshot_reports() -> None:
    async def go() -> None:
        a, b = Node(1), Node(2)
        await b.listen()
        a.t.set_peers({2: [b.url]})
        await eventually(lambda: a.t.streams[2].link is not None)
        big = [app_msg(i, size=3 * 1024 * 1024) for i in range(4)]
        a.t.send(big)
        a.t.send([Message(MessageType.SNAP, to=2, from_=1, term=1)])
        await eventually(lambda: len(b.got) == 5)
        assert [len(m.entries[0].data) for m in b.got[:4]] == [3 * 1024 * 1024] * 4
        assert b.got[4].type == MessageType.SNAP
        assert (2, True) in a.snap_reports
        await stop(a, b)

    run(go)


def test_restarted_peer_is_reported_and_redialled() -> None:
    async def go() -> None:
        a, b = Node(1), Node(2)
        await b.listen()
        a.t.set_peers({2: [b.url]})
        await eventually(lambda: a.t.streams[2].link is not None)
        await b.t.close()
        await b.stop_listening()
        await eventually(lambda: 2 in a.unreachable and a.t.streams[2].link is None)
        b2 = Node(2)
        b2.port = b.port
        await b2.listen()
        await eventually(lambda: a.t.streams[2].link is not None, within=15)
        a.t.send([Message(MessageType.HEARTBEAT, to=2, from_=1, term=3)])
        await eventually(lambda: len(b2.got) == 1)
        await stop(a, b2)

    run(go)


def test_close_leaves_no_tasks_or_connections(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        a, b, c = Node(1), Node(2), old_node(3)
        for n in (a, b, c):
            await n.listen()
        peers = {1: [a.url], 2: [b.url], 3: [c.url]}
        for n in (a, b, c):
            n.t.set_peers(peers)
        for n in (a, b, c):
            n.t.send([Message(MessageType.HEARTBEAT, to=i, from_=n.t.id, term=1) for i in peers])
        await eventually(lambda: all(len(n.got) == 2 for n in (a, b, c)))
        links = [s.link for s in a.t.streams.values() if s.link is not None]
        assert len(links) == 1  # to b; to c it is a websocket
        await stop(a, b, c)
        assert all(link.transport is not None and link.transport.is_closing() for link in links)
        assert not a.t.inbound and not b.t.inbound and not c.t.incoming
        await asyncio.sleep(0.05)
        current = asyncio.current_task()
        assert [t for t in asyncio.all_tasks() if t is not current] == []

    caplog.set_level(logging.ERROR)
    run(go)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


class FakeTransport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def frame(payload: bytes, kind: int = 0) -> bytes:
    return peer._HEAD.pack(len(payload), kind) + payload


def inbound(got: list[Message], drop_from: set[int] | None = None) -> peer._Inbound:
    t = PeerTransport(2, 0xC1, got.extend, lambda i: None, lambda i, ok: None)
    t.drop_from = drop_from or set()
    return peer._Inbound(t, 1, FakeTransport())  # type: ignore[arg-type]


def test_frames_split_anywhere_are_reassembled() -> None:
    async def go() -> None:
        got: list[Message] = []
        p = inbound(got)
        msgs = [app_msg(i, size=i * 7) for i in range(20)]
        wire = b"".join(frame(encode_message(m)) for m in msgs)
        for i in range(0, len(wire), 3):
            assert p.feed_data(wire[i : i + 3]) == (False, b"")
        assert [m.index for m in got] == list(range(20))
        assert not p.buf
        got.clear()
        p.feed_data(wire[:-1])  # everything but the last byte in one read
        assert [m.index for m in got] == list(range(19))
        p.feed_data(wire[-1:])
        assert got[-1].index == 19

    run(go)


def test_damaged_and_unknown_frames_are_skipped() -> None:
    async def go() -> None:
        got: list[Message] = []
        p = inbound(got)
        wire = (
            frame(encode_message(app_msg(1)))
            + frame(b"\xc1 not msgpack")
            + frame(b"a later kind", kind=9)
            + frame(encode_message(app_msg(2)))
        )
        p.feed_data(wire)
        assert [m.index for m in got] == [1, 2]
        assert not p.transport.closed  # type: ignore[attr-defined]

    run(go)


def test_oversized_frame_closes_the_connection() -> None:
    async def go() -> None:
        got: list[Message] = []
        p = inbound(got)
        eof, _ = p.feed_data(peer._HEAD.pack(peer.MAX_FRAME + 1, 0) + b"xx")
        assert eof and p.transport.closed  # type: ignore[attr-defined]
        assert got == []

    run(go)


def test_dropped_sender_is_not_delivered() -> None:
    async def go() -> None:
        got: list[Message] = []
        p = inbound(got, drop_from={1})
        p.feed_data(frame(encode_message(app_msg(1))))
        assert got == []

    run(go)


def test_backed_up_socket_queues_and_flushes_on_resume() -> None:
    """While the transport has paused writing, sends queue (no write per message) and go out
    as one write when it resumes; the snapshot is reported once written."""

    async def go() -> None:
        a, b = Node(1), Node(2)
        await b.listen()
        a.t.set_peers({2: [b.url]})
        await eventually(lambda: a.t.streams[2].link is not None)
        link = a.t.streams[2].link
        assert link is not None
        link.pause_writing()
        before = a.t.sent_frames
        a.t.send([app_msg(i) for i in range(10)])
        a.t.send([Message(MessageType.SNAP, to=2, from_=1, term=1, index=10)])
        assert a.t.sent_frames == before and len(a.t.streams[2].queue) == 11
        assert (2, True) not in a.snap_reports
        link.resume_writing()
        assert a.t.sent_frames == before + 1 and not a.t.streams[2].queue
        assert (2, True) in a.snap_reports
        await eventually(lambda: len(b.got) == 11)
        assert [m.index for m in b.got] == list(range(11))
        await stop(a, b)

    run(go)


def test_queue_limit_reports_unreachable() -> None:
    async def go() -> None:
        a, b = Node(1), Node(2)
        await b.listen()
        a.t.set_peers({2: [b.url]})
        await eventually(lambda: a.t.streams[2].link is not None)
        link = a.t.streams[2].link
        assert link is not None
        link.pause_writing()
        a.t.send([Message(MessageType.HEARTBEAT, to=2, from_=1, term=1)] * peer.QUEUE_LIMIT)
        assert 2 not in a.unreachable
        a.t.send([Message(MessageType.HEARTBEAT, to=2, from_=1, term=1)])
        assert 2 in a.unreachable
        link.resume_writing()
        await eventually(lambda: len(b.got) == peer.QUEUE_LIMIT)
        await stop(a, b)

    run(go)


def test_silent_peer_times_out_the_dial() -> None:
    """A listener that accepts but never answers costs one dial timeout, then the stream
    is reported and retried."""

    async def go() -> None:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        got: list[int] = []
        t = PeerTransport(1, 0xC1, lambda m: None, got.append, lambda i, ok: None, 0.2)
        t.set_peers({2: [f"http://127.0.0.1:{port}"]})
        t.send([Message(MessageType.HEARTBEAT, to=2, from_=1, term=1)])
        await eventually(lambda: 2 in got)
        assert not t.streams[2].connected
        await t.close()
        srv.close()

    run(go)
