"""Three replicated members in one process: replication, quorum reads, restart from the WAL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from corral.kv import cluster as cluster_module
from corral.kv.cluster import ClusterConfig, RaftMember
from corral.kv.commands import Set
from corral.testing.ports import free_ports


async def eventually(cond: Callable[[], bool], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


class Harness:
    def __init__(self, base: Path, size: int = 3, catchup: int = 5000) -> None:
        ports = free_ports(size)
        self.base, self.catchup = base, catchup
        self.urls = [f"http://127.0.0.1:{p}" for p in ports]
        initial = tuple((f"m{i}", u) for i, u in enumerate(self.urls))
        self.configs = [self.config(i, u, initial) for i, u in enumerate(self.urls)]
        self.members: list[RaftMember | None] = [None] * size
        self.runners: list[web.AppRunner | None] = [None] * size

    def config(
        self, i: int, url: str, initial: tuple[tuple[str, str], ...], state: str = "new"
    ) -> ClusterConfig:
        return ClusterConfig(
            name=f"m{i}",
            data_dir=self.base / f"m{i}",
            client_urls=(),
            peer_urls=(url,),
            initial_cluster=initial,
            initial_cluster_state=state,
            heartbeat_ms=20,
            election_ms=200,
            snapshot_count=50,
            catchup_entries=self.catchup,
        )

    async def start(
        self, i: int, before_listening: Callable[[RaftMember], None] | None = None
    ) -> RaftMember:
        m = RaftMember(self.configs[i])
        await m.start()
        if before_listening is not None:
            before_listening(m)
        app = web.Application()
        app.add_routes(m.peer_routes())
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", int(self.urls[i].rsplit(":", 1)[1])).start()
        self.members[i], self.runners[i] = m, runner
        return m

    async def stop(self, i: int) -> None:
        m, r = self.members[i], self.runners[i]
        if m is not None:
            await m.stop()
        if r is not None:
            await r.cleanup()
        self.members[i] = self.runners[i] = None

    def live(self) -> list[RaftMember]:
        return [m for m in self.members if m is not None]

    def leader(self) -> RaftMember | None:
        leaders = [m for m in self.live() if m.is_leader]
        return leaders[0] if len(leaders) == 1 else None

    async def start_all(self) -> RaftMember:
        """Start every member; return the leader they elect."""
        for i in range(len(self.members)):
            await self.start(i)
        await eventually(lambda: self.leader() is not None)
        leader = self.leader()
        assert leader is not None
        return leader


def test_three_members_replicate_and_survive_a_restart(tmp_path: Path) -> None:
    async def go() -> None:
        h = Harness(tmp_path)
        for i in range(3):
            await h.start(i)
        await eventually(lambda: h.leader() is not None)
        # etcd's internal writes: 3 member adds, 3 attribute sets, the cluster version.
        await eventually(lambda: all(m.keyspace.index == 7 for m in h.live()))
        follower = next(m for m in h.live() if not m.is_leader)
        for n in range(120):  # crosses snapshot_count twice
            ev = await follower.propose(
                Set(f"/k{n % 10}", str(n), False, None, False, follower.now())
            )
            assert ev[0].node.value == str(n)
        await follower.read_barrier()
        assert follower.keyspace.get("/k9").node.value == "119"
        await eventually(lambda: len({m.keyspace.snapshot() for m in h.live()}) == 1)
        assert any(m.snap_index > 0 for m in h.live())

        # Stop one member, write more, restart it from its WAL + snapshot: it catches up.
        victim = h.members.index(follower)
        await h.stop(victim)
        leader = h.leader() or h.live()[0]
        await eventually(lambda: h.leader() is not None)
        leader = h.leader()
        assert leader is not None
        await leader.propose(Set("/after", "x", False, None, False, leader.now()))
        back = await h.start(victim)
        await eventually(lambda: back.keyspace.index == leader.keyspace.index)
        assert back.keyspace.get("/after").node.value == "x"
        assert back.keyspace.get("/k9").node.value == "119"
        for i in range(3):
            await h.stop(i)

    asyncio.run(go())


def test_member_added_after_compaction_catches_up_from_a_snapshot(tmp_path: Path) -> None:
    async def go() -> None:
        h = Harness(tmp_path, catchup=5)
        for i in range(3):
            await h.start(i)
        await eventually(lambda: h.leader() is not None)
        leader = h.leader()
        assert leader is not None
        for n in range(150):
            await leader.propose(Set(f"/k{n}", str(n), False, None, False, leader.now()))
        assert leader.storage.first_index() > 10  # the log was compacted
        # Add a fourth member, then start it with --initial-cluster-state existing.
        url = f"http://127.0.0.1:{free_ports(1)[0]}"
        info = await leader.add_member([url])
        initial = (*((f"m{i}", u) for i, u in enumerate(h.urls)), ("m3", url))
        h.urls.append(url)
        h.configs.append(h.config(3, url, initial, state="existing"))
        h.members.append(None)
        h.runners.append(None)
        new = await h.start(3)
        assert new.id == info.id
        await eventually(lambda: new.keyspace.index == leader.keyspace.index, within=30)
        assert new.keyspace.get("/k149").node.value == "149"
        assert len(new.member_list()) == 4
        for i in range(4):
            await h.stop(i)

    asyncio.run(go())


def test_concurrent_quorum_reads_on_every_member_all_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each member names its ReadIndex rounds uniquely in the cluster: the leader keeps one
    pending round per context, so rounds that every member numbered alike used to swallow
    each other's reads (they hung until the request timeout). Retries are switched off here so
    that a swallowed round shows as a hang rather than a late answer."""
    monkeypatch.setattr(cluster_module, "READ_RETRY_TICKS", 10**9)

    async def go() -> None:
        h = Harness(tmp_path)
        for i in range(3):
            await h.start(i)
        await eventually(lambda: h.leader() is not None)
        await eventually(lambda: all(m.keyspace.index == 7 for m in h.live()))
        for _ in range(10):
            await asyncio.wait_for(
                asyncio.gather(*(m.read_barrier() for m in h.live() for _ in range(3))), 20
            )
        for i in range(3):
            await h.stop(i)

    asyncio.run(go())


def test_a_lost_read_index_round_is_retried(tmp_path: Path) -> None:
    """Raft never re-sends a ReadIndex request or answer; the member starts a new round for
    reads whose round went unanswered, so a read outlives a dropped message."""

    async def go() -> None:
        h = Harness(tmp_path)
        leader = await h.start_all()
        follower = next(m for m in h.live() if m is not leader)
        assert follower.transport is not None
        follower.transport.drop_to = {leader.id}  # the forwarded ReadIndex request is lost
        read = asyncio.ensure_future(follower.read_barrier())
        await eventually(lambda: bool(follower._reads_inflight))
        await asyncio.sleep(0.1)
        assert not read.done()
        follower.transport.drop_to = set()
        await asyncio.wait_for(read, 20)  # raises if the read timed out instead
        for i in range(3):
            await h.stop(i)

    asyncio.run(go())


def test_a_lost_publication_is_proposed_again(tmp_path: Path) -> None:
    """A restarted member becomes ready only once its attributes are applied (etcd's
    publish). A follower's proposal is forwarded once; when that message is lost the member
    proposes again, as etcd's publish loop does, instead of never becoming ready."""

    async def go() -> None:
        h = Harness(tmp_path)
        leader = await h.start_all()
        victim = next(i for i, m in enumerate(h.members) if m is not None and m is not leader)
        await h.stop(victim)

        def lose_publication(m: RaftMember) -> None:
            assert m.transport is not None
            m.transport.drop_to = {leader.id}  # its publication never reaches the leader

        back = await h.start(victim, before_listening=lose_publication)
        assert back.transport is not None
        await eventually(lambda: back._published and back.leader_id == leader.id)
        ready = asyncio.ensure_future(back.ready())
        await asyncio.sleep(0.3)  # several heartbeats: the first publication was dropped
        assert not ready.done()
        back.transport.drop_to = set()
        await asyncio.wait_for(ready, 20)  # times out if the publication is never retried
        for i in range(3):
            await h.stop(i)

    asyncio.run(go())
