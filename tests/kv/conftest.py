"""Helpers shared by the peer transport tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from corral.kv.peer import STREAM_VERSION, PeerTransport
from corral.raft import Message
from corral.testing.ports import free_port


async def eventually(cond: Callable[[], bool], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


class Node:
    """A peer transport with its own listener, recording what it is handed."""

    def __init__(
        self, member_id: int, cluster: int = 0xC1, stream_version: int = STREAM_VERSION
    ) -> None:
        self.got: list[Message] = []
        self.unreachable: list[int] = []
        self.snap_reports: list[tuple[int, bool]] = []
        self.t = PeerTransport(
            member_id,
            cluster,
            self.got.extend,
            self.unreachable.append,
            lambda i, ok: self.snap_reports.append((i, ok)),
            stream_version=stream_version,
        )
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def listen(self) -> None:
        app = web.Application()
        app.add_routes(self.t.routes())
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop_listening(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()
        self.runner = None
