"""SyncClient and AsyncClient against a real server of each kind (real etcd 3.4, corral)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from corral.client import (
    AsyncClient,
    CompareFailed,
    DirectoryNotEmpty,
    KeyNotFound,
    NodeExists,
    NotADirectory,
    NotAFile,
    RootReadOnly,
    SyncClient,
    Timeouts,
    UsageError,
)
from corral.testing.servers import ServerProcess

pytestmark = pytest.mark.interop


def test_every_keys_operation(kv_server: ServerProcess) -> None:
    with SyncClient(kv_server.client_url) as c:
        first = c.set("/a/b", "1")
        assert first.action == "set" and first.node and first.node.value == "1"
        assert first.etcd_index == first.node.modified_index and first.raft_term >= 1
        again = c.set("/a/b", "2")
        assert again.prev_node and again.prev_node.value == "1"
        assert c.get("/a/b").value == "2"
        assert c.get("/a/b", quorum=True).value == "2"
        with pytest.raises(KeyNotFound) as nf:
            c.get("/nope/deeper")
        assert nf.value.cause == "/nope" and nf.value.index == again.etcd_index
        with pytest.raises(NotADirectory):
            c.set("/a/b/c", "x")
        with pytest.raises(NodeExists):
            c.create("/a/b", "x")
        created = c.create("/a/c", "3", ttl=100)
        assert created.action == "create" and created.node and created.node.ttl
        upd = c.update("/a/c", "4")  # without ttl: the key becomes permanent
        assert upd.action == "update" and upd.node and upd.node.ttl is None
        with pytest.raises(KeyNotFound):
            c.update("/a/missing", "x")
        with pytest.raises(CompareFailed) as cf:
            c.compare_and_swap("/a/c", "5", prev_value="nope")
        assert cf.value.cause == "[nope != 4]"
        cas = c.compare_and_swap("/a/c", "5", prev_index=upd.node.modified_index)
        assert cas.action == "compareAndSwap" and cas.value == "5"
        listing = c.get("/a", sorted=True)
        assert listing.node and [n.key for n in listing.node.nodes] == ["/a/b", "/a/c"]
        c.mkdir("/a/d", ttl=50)
        with pytest.raises(NodeExists):
            c.mkdir("/a/d")
        with pytest.raises(NotAFile):
            c.setdir("/a/d")
        assert c.updatedir("/a/d").action == "update"
        c.set("/a/d/e", "6")
        deep = c.get("/a", recursive=True, sorted=True)
        assert deep.node and [n.key for n in deep.node.walk()] == [
            "/a/b", "/a/c", "/a/d", "/a/d/e"]
        q1 = c.append("/q", "job1")
        q2 = c.append("/q", "job2")
        assert q1.node and q2.node and q1.node.key < q2.node.key
        assert q2.node.key == f"/q/{q2.node.created_index:020d}"
        r = c.set("/t", "v", ttl=100)
        refreshed = c.refresh("/t", ttl=200)
        assert refreshed.node and refreshed.node.value == "v" and refreshed.node.ttl
        assert refreshed.node.ttl > 100 and r.node is not None
        with pytest.raises(CompareFailed):
            c.compare_and_delete("/a/b", prev_value="zzz")
        cad = c.compare_and_delete("/a/b", prev_value="2")
        assert cad.action == "compareAndDelete"
        with pytest.raises(NotAFile):
            c.delete("/a/d")
        with pytest.raises(DirectoryNotEmpty):
            c.delete("/a/d", dir=True)
        gone = c.delete("/a", recursive=True)
        assert gone.action == "delete" and gone.node and gone.node.dir
        with pytest.raises(RootReadOnly):
            c.set("/", "x")
        with pytest.raises(UsageError):
            c.compare_and_swap("/t", "x")


def test_cluster_endpoints(kv_server: ServerProcess) -> None:
    with SyncClient(kv_server.client_url) as c:
        members = c.members()
        assert len(members) == 1 and members[0].client_urls == (kv_server.client_url,)
        assert c.leader().id == members[0].id
        assert c.machines() == [kv_server.client_url]
        assert "etcdserver" in c.version()
        assert c.health()
        assert "getsSuccess" in c.stats("store")
        assert c.stats("self")["name"] == kv_server.name
        assert c.sync_endpoints() == [kv_server.client_url]


def test_watch_iterator_sees_every_event_in_order(kv_server: ServerProcess) -> None:
    with SyncClient(kv_server.client_url) as c:
        start = c.set("/w/x", "0").etcd_index
        writes = [c.set(f"/w/{k}", str(i)).etcd_index
                  for i, k in enumerate(["x", "y", "x", "z"], 1)]
        events = c.watch("/w", index=start + 1, recursive=True)
        got = [next(events) for _ in writes]
        assert [e.node.modified_index for e in got if e.node] == writes
        assert [e.value for e in got] == ["1", "2", "3", "4"]
        # A live event after the history is exhausted arrives through a blocking watch.
        done: list[str | None] = []
        t = threading.Thread(target=lambda: done.append(next(events).value))
        t.start()
        with SyncClient(kv_server.client_url) as writer:
            writer.set("/w/live", "5")
        t.join(timeout=30)
        assert done == ["5"]


def test_watch_resyncs_when_history_is_cleared(kv_server: ServerProcess) -> None:
    # The server keeps the last 1000 events; watching from before them is code 401.
    with SyncClient(kv_server.client_url) as c:
        old = c.set("/h/k", "first").etcd_index

    def burst(i: int) -> None:
        with SyncClient(kv_server.client_url) as w:
            for j in range(i, 1010, 8):
                w.set(f"/noise/{j % 7}", str(j))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(burst, range(8)))
    with SyncClient(kv_server.client_url) as c:
        c.set("/h/k", "latest")
        events = c.watch("/h/k", index=old)
        resync = next(events)
        assert resync.action == "get" and resync.value == "latest"
        nxt = c.set("/h/k", "after")
        assert next(events).node.modified_index == nxt.etcd_index  # type: ignore[union-attr]


def test_async_client(kv_server: ServerProcess) -> None:
    async def scenario() -> None:
        async with AsyncClient(kv_server.client_url, Timeouts(request=5)) as c:
            s = await c.set("/as/k", "1")
            assert (await c.get("/as/k")).value == "1"
            with pytest.raises(NodeExists):
                await c.create("/as/k", "2")
            await c.compare_and_swap("/as/k", "2", prev_value="1")
            await c.append("/as/q", "job")
            with pytest.raises(KeyNotFound):
                await c.delete("/as/missing")
            events = c.watch("/as/k", index=s.etcd_index + 1)
            first = await events.__anext__()
            assert first.action == "compareAndSwap" and first.value == "2"
            nxt = asyncio.ensure_future(events.__anext__())
            await asyncio.sleep(0)
            await c.update("/as/k", "3")
            live = await asyncio.wait_for(nxt, timeout=30)
            assert live.value == "3"
            await events.aclose()  # type: ignore[attr-defined]
            assert [m.name for m in await c.members()] == [kv_server.name]
            assert await c.health()
            assert await c.sync_endpoints() == [kv_server.client_url]

    asyncio.run(scenario())
