"""The peer transport between two real listeners: delivery, order, faults, re-dial."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from corral.raft import Entry, Message, MessageType

from .conftest import Node, eventually


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())


def test_messages_arrive_in_order_and_batched() -> None:
    async def go() -> None:
        a, b = Node(1), Node(2)
        await a.listen()
        await b.listen()
        a.t.set_peers({1: [a.url], 2: [b.url]})
        msgs = [
            Message(
                MessageType.APP,
                to=2,
                from_=1,
                term=1,
                index=i,
                entries=(Entry(1, i + 1, data=b"x" * 10),),
            )
            for i in range(500)
        ]
        a.t.send(msgs)
        await eventually(lambda: len(b.got) == 500)
        assert [m.index for m in b.got] == list(range(500))
        assert a.t.sent_frames < 500  # pipelined into few frames
        await a.t.close()
        await b.t.close()
        await a.stop_listening()
        await b.stop_listening()

    run(go)


def test_unreachable_peer_is_reported_and_redialled() -> None:
    async def go() -> None:
        a, b = Node(1), Node(2)
        a.t.set_peers({2: [b.url]})
        a.t.send([Message(MessageType.SNAP, to=2, from_=1, term=1)])
        await eventually(lambda: 2 in a.unreachable and (2, False) in a.snap_reports)
        await b.listen()  # the peer comes up: the stream is re-dialled
        a.t.send([Message(MessageType.HEARTBEAT, to=2, from_=1, term=1)])
        await eventually(lambda: any(m.type == MessageType.HEARTBEAT for m in b.got))
        await a.t.close()
        await b.t.close()
        await b.stop_listening()

    run(go)


@pytest.mark.parametrize("direction", ["drop_to", "drop_from"])
def test_fault_hook_drops_one_way(direction: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_FAULT_INJECTION", "1")

    async def go() -> None:
        a, b = Node(1), Node(2)
        await a.listen()
        await b.listen()
        a.t.set_peers({2: [b.url]})
        target = a if direction == "drop_to" else b
        ids = ["2"] if direction == "drop_to" else ["1"]
        async with (
            aiohttp.ClientSession() as s,
            s.put(target.url + "/debug/faults", json={direction: ids}) as r,
        ):
            assert r.status == 200
        a.t.send([Message(MessageType.HEARTBEAT, to=2, from_=1, term=1)])
        await asyncio.sleep(0.3)
        assert b.got == []
        async with aiohttp.ClientSession() as s, s.put(target.url + "/debug/faults", json={}) as r:
            assert r.status == 200
        a.t.send([Message(MessageType.HEARTBEAT, to=2, from_=1, term=2)])
        await eventually(lambda: len(b.got) == 1)
        await a.t.close()
        await b.t.close()
        await a.stop_listening()
        await b.stop_listening()

    run(go)
