"""The HTTP layer in-process: stream watches, disconnects, the non-keys endpoints, metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from corral.kv.cluster import ClusterConfig, RaftMember
from corral.kv.http_api import STREAM_BUFFER, expire_at, go_duration, serve
from corral.testing.ports import free_port

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def single(data_dir: Path, url: str, sync_interval: float = 0.5) -> RaftMember:
    """A lone member (a cluster of one) that serves `url`."""
    peer = "http://127.0.0.1:1"
    return RaftMember(
        ClusterConfig("h", data_dir, (url,), (peer,), (("h", peer),), sync_interval=sync_interval)
    )


class Served:
    def __init__(self, member: RaftMember, url: str, session: aiohttp.ClientSession) -> None:
        self.member, self.url, self.session = member, url, session

    async def put(self, key: str, value: str) -> dict[str, object]:
        async with self.session.put(
            self.url + "/v2/keys" + key, data=f"value={value}", headers=FORM
        ) as r:
            doc = await r.json(content_type=None)
            assert isinstance(doc, dict)
            return doc


async def _eventually(cond: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def run(tmp_path: Path, body: Callable[[Served], object]) -> None:
    async def go() -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        member = single(tmp_path / "d", url, sync_interval=0.05)
        runner = await serve(member, [("127.0.0.1", port)])
        try:
            async with aiohttp.ClientSession() as session:
                await body(Served(member, url, session))  # type: ignore[misc]
        finally:
            await runner.cleanup()
            await member.stop()

    asyncio.run(go())


def test_stream_watch_gets_every_event_and_disconnect_unregisters(tmp_path: Path) -> None:
    async def body(s: Served) -> None:
        async with s.session.get(s.url + "/v2/keys/st?wait=true&stream=true") as r:
            assert r.status == 200
            assert r.headers["X-Etcd-Index"] == "3"  # flushed before any event
            assert s.member.keyspace.hub.count == 1
            for i in range(3):
                await s.put("/st", str(i))
            lines = [json.loads(await r.content.readline()) for _ in range(3)]
            assert [line["node"]["value"] for line in lines] == ["0", "1", "2"]
        await _eventually(lambda: s.member.keyspace.hub.count == 0)

    run(tmp_path, body)


def test_slow_stream_is_dropped_after_buffer(tmp_path: Path) -> None:
    async def body(s: Served) -> None:
        async with s.session.get(s.url + "/v2/keys/slow?wait=true&stream=true") as r:
            await _eventually(lambda: s.member.keyspace.hub.count == 1)
            sink = next(iter(s.member.keyspace.hub._watchers["/slow"])).sink
            never = asyncio.Event()
            sink.wakeup.wait = never.wait  # the handler cannot keep up: events pile up
            for i in range(STREAM_BUFFER + 5):
                await s.put("/slow", str(i))
            assert sink.overflow and len(sink.events) == STREAM_BUFFER
            never.set()
            lines = (await r.read()).splitlines()  # the stream ends (etcd drops the watcher)
            # (the first event may have been written before the handler fell behind)
            assert STREAM_BUFFER <= len(lines) <= STREAM_BUFFER + 1
        await _eventually(lambda: s.member.keyspace.hub.count == 0)

    run(tmp_path, body)


def test_ttl_expiry_reaches_a_watcher(tmp_path: Path) -> None:
    async def body(s: Served) -> None:
        async with s.session.put(s.url + "/v2/keys/t?ttl=0", data="value=x", headers=FORM) as r:
            assert r.status == 201
        async with s.session.get(s.url + "/v2/keys/t?wait=true&waitIndex=5") as r:
            doc = await r.json(content_type=None)
        assert doc["action"] == "expire"
        assert doc["node"] == {"key": "/t", "modifiedIndex": 5, "createdIndex": 4}

    run(tmp_path, body)


def test_other_endpoints(tmp_path: Path) -> None:
    async def body(s: Served) -> None:
        get = s.session.get
        async with get(s.url + "/version") as r:
            assert await r.read() == b'{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}'
        async with get(s.url + "/health") as r:
            assert (r.status, await r.read()) == (200, b'{"health":"true"}')
        async with get(s.url + "/v2/machines") as r:
            assert await r.text() == s.url
        async with get(s.url + "/v2/members") as r:
            members = (await r.json())["members"]
            assert members == [
                {
                    "id": f"{s.member.id:x}",
                    "name": "h",
                    "peerURLs": ["http://127.0.0.1:1"],
                    "clientURLs": [s.url],
                }
            ]
            assert r.headers["X-Etcd-Cluster-Id"] == f"{s.member.cluster_id:x}"
        async with get(s.url + "/v2/members/leader") as r:
            assert (await r.json())["id"] == f"{s.member.id:x}"
        async with get(s.url + "/v2/stats/self") as r:
            doc = await r.json()
            assert list(doc) == [
                "name",
                "id",
                "state",
                "startTime",
                "leaderInfo",
                "recvAppendRequestCnt",
                "sendAppendRequestCnt",
            ]
            assert doc["state"] == "StateLeader"
        async with get(s.url + "/v2/stats/leader") as r:
            assert await r.json() == {"leader": f"{s.member.id:x}", "followers": {}}
        await s.put("/m", "1")
        async with get(s.url + "/v2/stats/store") as r:
            assert (await r.json())["setsSuccess"] == 4  # three internal writes, one user set
        async with get(s.url + "/metrics") as r:
            text = await r.text()
        for name in (
            "etcd_server_has_leader 1.0",
            "etcd_disk_wal_fsync_duration_seconds_count",
            "etcd_server_leader_changes_seen_total 1.0",
            "etcd_debugging_store_watchers",
        ):
            assert name in text
        async with s.session.request("PATCH", s.url + "/v2/keys/x") as r:
            assert r.status == 405 and r.headers["Allow"] == "HEAD,GET,PUT,POST,DELETE"
        async with get(s.url + "/v2/nothing") as r:
            assert (r.status, await r.text()) == (404, "404 page not found\n")
        async with get(s.url + "/v2/keys//a?x=1", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (301, "/v2/keys/a?x=1")
        assert "Server" not in r.headers

    run(tmp_path, body)


def test_go_arithmetic_helpers() -> None:
    now = 1_800_000_000_000_000_000
    assert expire_at(now, None) is None
    assert expire_at(now, 0) == now
    assert expire_at(now, 2**64 - 1) == now - 1_000_000_000  # Go wraps to -1 s
    assert expire_at(now, 9_223_372_036) is None  # wraps before 2000: permanent, as etcd
    assert go_duration(171_418_294_032) == "2m51.418294032s"
    assert go_duration(1_500_000) == "1.5ms"
    assert go_duration(3_600_000_000_000) == "1h0m0s"


def test_shutdown_ends_open_watches_promptly(tmp_path: Path) -> None:
    async def go() -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        member = single(tmp_path / "d", url)
        runner = await serve(member, [("127.0.0.1", port)])
        async with (
            aiohttp.ClientSession() as session,
            session.get(url + "/v2/keys/x?wait=true") as r,
        ):
            assert r.status == 200
            started = time.monotonic()
            await runner.cleanup()
            assert await r.read() == b""  # etcd's shutdown answer: the client re-watches
            assert time.monotonic() - started < 4.0
        await member.stop()

    asyncio.run(go())
