"""The member: durable WAL, restart after kill -9, data-dir lock, snapshots, TTL sweeper.

A lone `corral etcd` is a Raft cluster of one; these tests drive `RaftMember` in-process and
`corral etcd` as a real process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.kv.cluster import ClusterConfig, DataDirLocked, RaftMember
from corral.kv.commands import Set
from corral.kv.errors import KeyNotFound
from corral.storage.wal import WALError
from corral.testing.ports import free_port
from corral.testing.servers import ServerProcess, corral_etcd_command, start_cluster

PEER = "http://127.0.0.1:2"


def _member(tmp: Path, clock: Callable[[], int] | None = None, **kw: object) -> RaftMember:
    config = ClusterConfig(
        name="m",
        data_dir=tmp / "data",
        client_urls=("http://127.0.0.1:1",),
        peer_urls=(PEER,),
        initial_cluster=(("m", PEER),),
        **kw,  # type: ignore[arg-type]
    )
    return RaftMember(config) if clock is None else RaftMember(config, clock=clock)


async def _eventually(cond: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_fresh_member_starts_at_index_3_and_restarts_identical(tmp_path: Path) -> None:
    async def go() -> None:
        m = _member(tmp_path)
        await m.start()
        await m.ready()
        assert m.keyspace.index == 3  # etcd's three internal writes
        results = await asyncio.gather(
            *(m.propose(Set(f"/k{i}", str(i), now=m.now())) for i in range(50))
        )
        assert sorted(r[0].index for r in results) == list(range(4, 54))
        tree = m.keyspace.get("/", recursive=True, sorted=True)
        await m.stop()
        again = _member(tmp_path)
        await again.start()
        await again.ready()
        # The restart replays the WAL, then publishes its attributes again (one more index).
        assert again.keyspace.get("/", recursive=True, sorted=True).node == tree.node
        assert again.keyspace.index == 54
        assert again.id == m.id and again.cluster_id == m.cluster_id
        await again.stop()

    asyncio.run(go())


def test_snapshot_then_wal_replay(tmp_path: Path) -> None:
    async def go() -> None:
        m = _member(tmp_path, snapshot_count=40)
        await m.start()
        for i in range(130):
            await m.propose(Set(f"/s/{i % 7}", str(i), now=m.now()))
        assert m.snap_index > 0  # compacted at least once
        assert list((tmp_path / "data" / "member" / "snap").glob("*.snap"))
        tree = m.keyspace.get("/s", recursive=True, sorted=True)
        await m.stop()
        again = _member(tmp_path, snapshot_count=40)
        await again.start()
        await again.ready()
        assert again.keyspace.get("/s", recursive=True, sorted=True).node == tree.node
        await again.stop()

    asyncio.run(go())


def test_torn_tail_is_cut_and_bad_version_is_a_clear_error(tmp_path: Path) -> None:
    async def write() -> None:
        m = _member(tmp_path)
        await m.start()
        await m.propose(Set("/a", "1", now=m.now()))
        await m.stop()

    async def read_back() -> str:
        m = _member(tmp_path)
        await m.start()
        await m.ready()
        value = m.keyspace.get("/a").node.value
        await m.stop()
        return str(value)

    asyncio.run(write())
    seg = sorted((tmp_path / "data" / "member" / "wal").glob("*.wal"))[-1]
    data = seg.read_bytes().rstrip(b"\0")
    seg.write_bytes(data + b"\x10\x00\x00\x00\xde\xad")  # a record cut off mid-write
    assert asyncio.run(read_back()) == "1"
    raw = bytearray(seg.read_bytes())
    raw[30] ^= 0xFF  # damage the metadata record near the start: real corruption
    seg.write_bytes(bytes(raw))
    with pytest.raises(WALError, match="corrupt"):
        asyncio.run(read_back())


def test_data_dir_lock_in_process(tmp_path: Path) -> None:
    async def go() -> None:
        first = _member(tmp_path)
        await first.start()
        with pytest.raises(DataDirLocked, match="in use by another process"):
            await _member(tmp_path).start()
        await first.stop()

    asyncio.run(go())


def test_sweeper_proposes_sync_when_due(tmp_path: Path) -> None:
    clock = [1_000_000_000_000]

    async def go() -> None:
        m = _member(tmp_path, clock=lambda: clock[0], sync_interval=0.01)
        await m.start()
        await m.ready()
        seen: list[str] = []
        m.on_commit.append(lambda evs: seen.extend(e.action.value for e in evs))
        await m.propose(Set("/t", "x", expire_at=clock[0] + 5_000_000_000, now=clock[0]))
        await asyncio.sleep(0.1)
        assert m.keyspace.get("/t").node.value == "x"  # not due: no Sync proposed
        clock[0] += 5_000_000_000
        await _eventually(lambda: "expire" in seen)
        with pytest.raises(KeyNotFound):
            m.keyspace.get("/t")
        await m.stop()
        # The Sync is in the WAL: a restart replays the expiry, whatever the clock says then.
        m2 = _member(tmp_path, clock=lambda: 1)
        await m2.start()
        await m2.ready()
        with pytest.raises(KeyNotFound):
            m2.keyspace.get("/t")
        await m2.stop()

    asyncio.run(go())


def _put(url: str, key: str, value: str) -> int:
    data = f"value={value}".encode()
    req = urllib.request.Request(f"{url}/v2/keys/{key}", data=data, method="PUT")
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(json.loads(resp.read())["node"]["modifiedIndex"])


def test_acknowledged_writes_survive_kill_9_and_data_dir_is_locked(tmp_path: Path) -> None:
    with start_cluster(corral_etcd_command(), tmp_path / "c", prefix="k") as (member,):
        acked: dict[str, str] = {}
        stop = threading.Event()

        def writer(n: int) -> None:
            i = 0
            while not stop.is_set():
                key, value = f"w{n}/{i}", f"v{i}"
                try:
                    _put(member.client_url, key, value)
                except (OSError, urllib.error.URLError):
                    return
                acked[key] = value
                i += 1

        _assert_second_process_refused(member)
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 150 and time.monotonic() < deadline:
            time.sleep(0.01)
        member.kill()  # kill -9 while the writers are mid-flight
        stop.set()
        for t in threads:
            t.join(timeout=10)
        assert len(acked) >= 150
        member.start()
        member.wait_ready()
        for key, value in acked.items():
            with urllib.request.urlopen(f"{member.client_url}/v2/keys/{key}", timeout=5) as r:
                assert json.loads(r.read())["node"]["value"] == value


def _assert_second_process_refused(member: ServerProcess) -> None:
    """A second `corral etcd` on a running member's data dir exits with a clear error."""
    other = ServerProcess(
        command=corral_etcd_command(),
        name=member.name,
        data_dir=member.data_dir,
        client_port=free_port(),
        peer_port=free_port(),
        initial_cluster=member.initial_cluster,
    )
    out = subprocess.run(other.argv(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "is in use by another process" in out.stderr
    assert "Traceback" not in out.stderr
