"""The member: durable log, restart after kill -9, data-dir lock, snapshots, TTL sweeper."""

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

from corral.kv.commands import Set, Sync
from corral.kv.errors import KeyNotFound
from corral.kv.server import DataDirLocked, LocalLog, Member, MemberConfig, MemberError
from corral.testing.ports import free_port
from corral.testing.servers import ServerProcess, corral_etcd_command, start_cluster


def _config(tmp: Path, **kw: object) -> MemberConfig:
    return MemberConfig(
        name="m",
        data_dir=tmp / "data",
        client_urls=("http://127.0.0.1:1",),
        peer_urls=("http://127.0.0.1:2",),
        **kw,  # type: ignore[arg-type]
    )


async def _eventually(cond: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_fresh_member_starts_at_index_3_and_restarts_identical(tmp_path: Path) -> None:
    async def go() -> None:
        m = Member(_config(tmp_path))
        await m.start()
        assert m.keyspace.index == 3  # etcd's three internal writes
        results = await asyncio.gather(
            *(m.propose(Set(f"/k{i}", str(i), now=m.now())) for i in range(50))
        )
        assert [r[0].index for r in results] == list(range(4, 54))
        snap = m.keyspace.snapshot()
        await m.stop()
        again = Member(_config(tmp_path))
        await again.start()
        assert again.keyspace.snapshot() == snap
        assert again.id == m.id and again.cluster_id == m.cluster_id
        await again.stop()

    asyncio.run(go())


def test_snapshot_then_log_replay(tmp_path: Path) -> None:
    async def go() -> None:
        m = Member(_config(tmp_path, snapshot_every=40))
        await m.start()
        for i in range(130):
            await m.propose(Set(f"/s/{i % 7}", str(i), now=m.now()))
        assert m.log.base > 0  # compacted at least once
        assert (m.dir / "snap").exists()
        state = m.keyspace.snapshot()
        await m.stop()
        again = Member(_config(tmp_path, snapshot_every=40))
        await again.start()
        assert again.keyspace.snapshot() == state
        await again.stop()

    asyncio.run(go())


def test_torn_tail_is_cut_and_bad_version_is_a_clear_error(tmp_path: Path) -> None:
    async def write() -> None:
        m = Member(_config(tmp_path))
        await m.start()
        await m.propose(Set("/a", "1", now=m.now()))
        await m.stop()

    asyncio.run(write())
    log = tmp_path / "data" / "member" / "corral" / "log"
    size = log.stat().st_size
    with open(log, "ab") as f:
        f.write(LocalLog.frame(b"never acknowledged")[:-3])  # a torn record
    m = Member(_config(tmp_path))
    m.open()
    assert m.keyspace.get("/a").node.value == "1"
    assert log.stat().st_size == size
    m.log.close()
    m._unlock()
    raw = bytearray(log.read_bytes())
    raw[8:10] = (99).to_bytes(2, "big")
    log.write_bytes(bytes(raw))
    with pytest.raises(MemberError, match="log format version 99 is not supported"):
        Member(_config(tmp_path)).open()


def test_data_dir_lock_in_process(tmp_path: Path) -> None:
    first = Member(_config(tmp_path))
    first.open()
    with pytest.raises(DataDirLocked, match="in use by another process"):
        Member(_config(tmp_path)).open()
    first.log.close()
    first._unlock()


def test_sweeper_proposes_sync_when_due(tmp_path: Path) -> None:
    clock = [1_000_000_000_000]

    async def go() -> None:
        m = Member(_config(tmp_path, sync_interval=0.01), clock=lambda: clock[0])
        await m.start()
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

    asyncio.run(go())
    # The Sync is in the log: a restart replays the expiry, whatever the clock says then.
    m2 = Member(_config(tmp_path), clock=lambda: 0)
    m2.open()
    with pytest.raises(KeyNotFound):
        m2.keyspace.get("/t")
    m2.log.close()
    m2._unlock()
    assert Sync  # the command type the sweeper proposes


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
