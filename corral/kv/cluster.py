"""The KV member: the keyspace driven by the Raft core, a WAL, snapshots and peer streams.

Every `corral etcd` is one of these, a lone member being a cluster of one (as in etcd), so a
single member can grow by `member add` and every member's data dir has one format. The HTTP
layer sees one seam: `propose(cmd)` returns the events once the command is committed and
applied here; `keyspace`; `on_commit`; plus members, leader, term and `read_barrier` for
quorum reads.

Layout of ``<data-dir>/member/`` (as etcd's): ``wal/`` (corral.storage.wal), ``snap/``
(corral.storage.snap), and ``lock`` (an `fcntl.flock` held while the member runs, so a second
process gets `DataDirLocked`, a clear error, instead of sharing the files).

The loop (etcd-io/raft's usage contract, raft.md; one task, `_run`):

1. Proposals that arrived since the last round go into Raft as one batch (`propose_batch`);
   ticks come from their own task, so load never starves heartbeats.
2. `ready()`; a leader sends its messages now, so its followers write in parallel with it
   (Raft thesis §10.2.1); any member sends heartbeats (and their answers) now.
3. Persist the Ready's snapshot (file, then WAL marker, in a worker thread), entries and hard
   state in the WAL with exactly one fdatasync when `must_sync`, on the loop thread (cheaper
   than two thread hand-offs); requests and peer frames arriving meanwhile wait in socket
   buffers and become the next batch (group commit, no timer on the commit path).
4. A follower or candidate sends its other messages only now (they promise what step 3 made
   durable: append and vote answers).
5. Apply: a snapshot to install, then committed entries in order; answer the proposer's
   future (only on the member that proposed it); hand events to watchers; serve quorum reads
   whose read index is applied. This comes after step 3, and an entry another member
   acknowledged was written by an earlier Ready, so nothing is applied or answered before
   the leader's own fsync.
6. `advance()`; take a snapshot every `snapshot_count` applied entries and compact.

Entry payloads (format version 1, msgpack): `[1, 0, origin, request_id, command]` for a
keyspace command (`corral.kv.commands` encoding), `[1, 1, member_id, name, client_urls]` for
a member publishing its attributes. Membership changes are Raft conf-change entries whose
context is `[1, peer_urls]`. Each applied membership change and attribute publication is also
an internal write in the keyspace's hidden `/0` namespace, as etcd's are, so a fresh
three-member cluster answers its first request with X-Etcd-Index 7, like etcd.

Time is data: the member that accepts a request stamps its clock into the command, and only
the leader proposes expiry (`Sync(now)`, etcd's SYNC) every `sync_interval`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import random
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
from aiohttp import web

from corral.kv.capnslog import log
from corral.kv.commands import Command, InternalWrite, Sync, decode, encode
from corral.kv.errors import KVError, V2Error, error_for
from corral.kv.events import Event
from corral.kv.keyspace import Keyspace
from corral.kv.peer import PeerTransport
from corral.raft import (
    NONE,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDroppedError,
    RaftError,
    RawNode,
    Ready,
    Snapshot,
    StateType,
    decode_conf_change,
    encode_conf_change,
)
from corral.storage.disk import Disk, disk_from_env, make_dirs
from corral.storage.snap import Snapshotter
from corral.storage.wal import WAL

__all__ = [
    "ClusterConfig",
    "ClusterError",
    "MemberInfo",
    "RaftMember",
    "cluster_id_for",
    "member_id_for",
]

PAYLOAD_VERSION = 1
_KIND_REQUEST = 0
_KIND_ATTRIBUTES = 1
_KIND_PEER_URLS = 2
CATCHUP_ENTRIES = 5000
READ_RETRY_TICKS = 5  # heartbeats before an unanswered ReadIndex round is started again
PUBLISH_RETRY_TICKS = 10  # heartbeats before an unapplied publication is proposed again
_BEFORE_PERSIST = frozenset(
    {MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP}
)  # entries kept after a snapshot for slow followers (etcd's value)
# A reused packer for per-request payloads (`msgpack.packb` builds one per call); only the
# loop thread packs with it.
_pack = msgpack.Packer().pack


class ClusterError(KVError):
    """The member cannot start or go on; the message says why, for the operator."""


class DataDirLocked(ClusterError):
    """Another process holds this data dir."""


class MemberConflict(ClusterError):
    """A member with these peer URLs already exists (HTTP 409)."""


class MemberRemoved(ClusterError):
    """The member was permanently removed (HTTP 410)."""


def member_id_for(peer_urls: tuple[str, ...] | list[str], token: str) -> int:
    """etcd's member id: SHA-1 of the sorted peer URLs and the cluster token, first 8 bytes."""
    digest = hashlib.sha1(("".join(sorted(peer_urls)) + token).encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def cluster_id_for(member_ids: list[int]) -> int:
    raw = b"".join(i.to_bytes(8, "big") for i in sorted(member_ids))
    return int.from_bytes(hashlib.sha1(raw).digest()[:8], "big") or 1


@dataclass
class MemberInfo:
    id: int
    name: str = ""
    peer_urls: list[str] = field(default_factory=list)
    client_urls: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": f"{self.id:x}",
            "name": self.name,
            "peerURLs": self.peer_urls,
            "clientURLs": self.client_urls,
        }


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    data_dir: Path
    client_urls: tuple[str, ...]
    peer_urls: tuple[str, ...]
    initial_cluster: tuple[tuple[str, str], ...]  # (name, peer url), repeated names allowed
    initial_cluster_state: str = "new"
    cluster_token: str = "etcd-cluster"
    heartbeat_ms: int = 100
    election_ms: int = 1000
    snapshot_count: int = 10000
    max_snapshots: int = 5
    max_wals: int = 5
    sync_interval: float = 0.5
    request_timeout: float = 7.0  # etcd: 5 s + 2 × election timeout
    force_new_cluster: bool = False
    catchup_entries: int = CATCHUP_ENTRIES  # entries kept after a snapshot for slow followers
    wal_dir: Path | None = None


class _LiveStorage(MemoryStorage):
    """Raft storage whose snapshot for a lagging follower is the current applied state.

    A stored snapshot can predate a member added since; a follower that is sent one whose
    configuration does not include it refuses it. etcd's server sends its current state too.
    """

    def __init__(self, fresh: Callable[[], Snapshot | None]) -> None:
        super().__init__()
        self._fresh = fresh

    def snapshot(self) -> Snapshot:
        snap = self._fresh()
        return snap if snap is not None else super().snapshot()


class RaftMember:
    """One member of a replicated KV cluster. See the module docstring."""

    def __init__(
        self,
        config: ClusterConfig,
        clock: Callable[[], int] = time.time_ns,
        disk: Disk | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.disk = disk or disk_from_env()
        self.name = config.name
        self.keyspace = Keyspace()
        self.members: dict[int, MemberInfo] = {}
        self.removed: set[int] = set()
        self.id = member_id_for(config.peer_urls, config.cluster_token)
        self.cluster_id = 0
        self.on_commit: list[Callable[[list[Event]], None]] = []
        self.fsync_observers: list[Callable[[float], None]] = []
        self.leader_changes = 0
        self.proposals_failed = 0
        self.proposals_pending = 0
        self.start_time = 0
        self.leader_since = 0
        self.recv_append = 0
        self.send_append = 0
        self.node: RawNode | None = None
        self.storage = _LiveStorage(self._fresh_snapshot)
        self.wal: WAL | None = None
        self.snapshotter: Snapshotter | None = None
        self.transport: PeerTransport | None = None
        self.conf_state = ConfState()
        self.applied = 0
        self.snap_index = 0
        self._lock_fd: int | None = None
        self._req = 0
        self._waiters: dict[int, asyncio.Future[list[Event]]] = {}
        self._conf_waiters: dict[bytes, asyncio.Future[None]] = {}
        self._outbox: list[bytes] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reads_waiting: list[asyncio.Future[None]] = []
        self._reads_inflight: dict[bytes, list[asyncio.Future[None]]] = {}
        self._reads_ready: list[tuple[int, list[asyncio.Future[None]]]] = []
        self._read_seq = 0
        self._read_started: dict[bytes, int] = {}  # round context → tick it was started
        self._ticks = 0
        self._leader_waiters: list[asyncio.Future[None]] = []
        self._stopping = False
        self._published = False
        self._published_applied = False
        self._published_tick = 0
        self._boot_index = 0
        self._ready_waiters: list[asyncio.Future[None]] = []
        self._last_lead = NONE
        self._initial: dict[int, MemberInfo] = {}
        self.cluster_version = ""
        self.fatal: str | None = None

    # -- identity and status -----------------------------------------------------------------
    @property
    def raft_index(self) -> int:
        return self.node.raft.log.committed if self.node else 0

    @property
    def raft_term(self) -> int:
        return self.node.raft.term if self.node else 0

    @property
    def leader_id(self) -> int:
        return self.node.raft.lead if self.node else NONE

    @property
    def is_leader(self) -> bool:
        return self.node is not None and self.node.raft.state == StateType.LEADER

    def now(self) -> int:
        return self.clock()

    def member_list(self) -> list[MemberInfo]:
        return [self.members[i] for i in sorted(self.members)]

    # -- start-up ----------------------------------------------------------------------------
    def _member_dir(self) -> Path:
        return self.config.data_dir / "member"

    def _lock(self) -> None:
        # A crash-test disk first loses what a power cut would have (a no-op on a real disk).
        self.disk.recover(self.config.data_dir)
        if self.config.wal_dir is not None:
            self.disk.recover(self.config.wal_dir)
        d = self._member_dir()
        make_dirs(self.disk, d)
        path = d / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLocked(
                f"data dir {self.config.data_dir} is in use by another process (lock {path} is held)"
            ) from None
        self._lock_fd = fd

    def _initial_members(self) -> dict[int, MemberInfo]:
        by_name: dict[str, list[str]] = {}
        for name, url in self.config.initial_cluster:
            by_name.setdefault(name, []).append(url)
        out = {}
        for urls in by_name.values():
            mid = member_id_for(urls, self.config.cluster_token)
            out[mid] = MemberInfo(mid, "", sorted(urls), [])
        return out

    async def start(self) -> None:
        """Open or create the data dir, join the cluster, start the loops and the transport.

        Returns without waiting for a leader; `ready()` waits until the member has published
        itself to the cluster (etcd serves clients only from then on). Calling it twice is
        harmless.
        """
        if self.node is not None:
            return
        await asyncio.to_thread(self._lock)
        self.start_time = self.clock()
        wal_dir = self.config.wal_dir or self._member_dir() / "wal"
        self.snapshotter = Snapshotter(self._member_dir() / "snap", self.disk)
        if WAL.exists(wal_dir):
            await asyncio.to_thread(self._restart, wal_dir)
        elif self.config.initial_cluster_state == "existing":
            await self._join(wal_dir)
        else:
            self._bootstrap_new(wal_dir)
        assert self.node is not None
        self._boot_index = self.storage.last_index()
        self.transport = PeerTransport(
            self.id,
            self.cluster_id,
            self._receive,
            self.node.report_unreachable,
            self.node.report_snapshot,
        )
        self._set_peers()
        if self.node.raft.trk.voters == {self.id}:
            # A lone voter needs no election timeout to know it wins (etcd fast-forwards too).
            self.node.campaign()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run()),
            loop.create_task(self._ticker()),
            loop.create_task(self._sweeper()),
        ]

    def _bootstrap_new(self, wal_dir: Path) -> None:
        initial = self._initial_members()
        if self.id not in initial:
            raise ClusterError(
                f"couldn't find local name {self.name!r} in the initial cluster configuration "
                f"(no member there has peer URLs {', '.join(self.config.peer_urls)})"
            )
        self.cluster_id = cluster_id_for(list(initial))
        self._create(wal_dir, initial)
        assert self.node is not None
        self.node.bootstrap(sorted(initial))

    def _raft_config(self, applied: int) -> Config:
        ticks = max(2, self.config.election_ms // max(1, self.config.heartbeat_ms))
        return Config(
            id=self.id,
            election_tick=ticks,
            heartbeat_tick=1,
            applied=applied,
            max_size_per_msg=1 << 20,
            max_inflight_msgs=512,
            check_quorum=True,
            pre_vote=True,
        )

    def _restart(self, wal_dir: Path) -> None:
        assert self.snapshotter is not None
        snap = self.snapshotter.load_newest()
        from_index = snap.metadata.index if snap is not None else 0
        self.wal, replay = WAL.open(wal_dir, disk=self.disk, from_index=from_index)
        meta = replay.metadata
        if meta.get("member_id") != self.id and meta.get("member_id") is not None:
            self.id = int(meta["member_id"])
        self.cluster_id = int(meta.get("cluster_id", 0))
        self._initial = {
            int(k): MemberInfo(int(k), "", list(v), []) for k, v in meta.get("initial", {}).items()
        }
        if snap is not None:
            self.storage.apply_snapshot(snap)
            self._install_state(snap)
            self.snap_index = snap.metadata.index
        hs = replay.hard_state
        if hs.commit < from_index:
            hs = type(hs)(term=hs.term, vote=hs.vote, commit=from_index)
        entries = replay.entries
        if self.config.force_new_cluster:
            entries, hs = self._force_standalone(snap, entries, hs)
        self.storage.set_hard_state(hs)
        if entries:
            self.storage.append(entries)
        self.applied = from_index
        self.node = RawNode(
            self._raft_config(from_index), self.storage, random.Random(self.id ^ self.clock())
        )

    def _force_standalone(
        self, snap: Snapshot | None, entries: list[Entry], hs: HardState
    ) -> tuple[list[Entry], HardState]:
        """`--force-new-cluster` (etcd's `restartAsStandaloneNode`): drop the uncommitted tail,
        then commit conf changes that add this member (if it is not a member, as after
        `corral kv backup`, which gives the copy a new id) and remove every other one. The
        keyspace is untouched: every committed key stays."""
        assert self.wal is not None
        entries = [e for e in entries if e.index <= hs.commit]
        forced = standalone_conf_changes(
            member_ids_in(snap, entries), self.id, self.config.peer_urls, hs.term, hs.commit
        )
        if forced:
            hs = replace(hs, commit=forced[-1].index)
            # Durable before anything else happens: a restart without the flag then finds a
            # one-member cluster too (etcd re-derives it only while the flag is given).
            self.wal.save(hs, forced, sync=True)
        return entries + forced, hs

    async def _join(self, wal_dir: Path) -> None:
        """`--initial-cluster-state existing`: learn ids from a running member's peer URL."""
        urls = [u for n, u in self.config.initial_cluster if u not in self.config.peer_urls]
        last_error = "no peer URLs in --initial-cluster other than this member's"
        known: dict[int, MemberInfo] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as s:
            for url in urls:
                try:
                    async with s.get(url.rstrip("/") + "/members") as r:
                        cid = r.headers.get("X-Etcd-Cluster-ID", "")
                        members = await r.json()
                except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                    last_error = f"{url}: {exc}"
                    continue
                mine = [m for m in members if set(m["peerURLs"]) & set(self.config.peer_urls)]
                if not mine:
                    raise ClusterError(
                        f"member with peer URLs {', '.join(self.config.peer_urls)} has not been added to "
                        "the cluster; add it first (corral kv member add / etcdctl member add)"
                    )
                self.id = _peer_member_id(mine[0]["id"])
                self.cluster_id = int(cid, 16)
                # Until the log tells it, the new member knows its peers from this answer.
                known = {
                    _peer_member_id(m["id"]): MemberInfo(
                        _peer_member_id(m["id"]), m.get("name", ""), list(m["peerURLs"]), []
                    )
                    for m in members
                }
                break
            else:
                raise ClusterError(
                    f"cannot fetch cluster info from the initial cluster: {last_error}"
                )
        self._create(wal_dir, known)

    def _create(self, wal_dir: Path, peers: dict[int, MemberInfo]) -> None:
        """A new WAL (remembering the peers known at creation) and a fresh Raft node."""
        self.wal = WAL.create(
            wal_dir,
            {
                "member_id": self.id,
                "cluster_id": self.cluster_id,
                "initial": {str(k): v.peer_urls for k, v in peers.items()},
            },
            disk=self.disk,
        )
        self._initial = peers
        self.node = RawNode(
            self._raft_config(0), self.storage, random.Random(self.id ^ self.clock())
        )

    def _set_peers(self) -> None:
        if self.transport is None:
            return
        peers = {i: m.peer_urls for i, m in self.members.items()}
        for i, m in self._initial.items():
            peers.setdefault(i, m.peer_urls)
        for i in self.removed:
            peers.pop(i, None)
        self.transport.set_peers(peers)

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        err = error_for(300, "etcdserver: server stopped")
        for fut in list(self._waiters.values()):
            if not fut.done():
                fut.set_exception(err)
        if self.transport is not None:
            await self.transport.close()
        if self.wal is not None:
            await asyncio.to_thread(self.wal.close)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- inputs ------------------------------------------------------------------------------
    def _receive(self, msgs: list[Any]) -> None:
        node = self.node
        if node is None or self._stopping:
            return
        me = self.id
        for m in msgs:
            if m.to != me:
                continue
            try:
                node.step(m)
            except (RaftError, ValueError):
                pass
        # Most answers a leader gets change nothing (a second ack of a committed entry, the
        # acks of the commit-only appends): the loop is woken only when Raft has work, as
        # an idle wake-up would find none (proposals and reads wake it themselves).
        if node.has_ready():
            self._wake.set()

    async def _ticker(self) -> None:
        interval = self.config.heartbeat_ms / 1000
        while True:
            await asyncio.sleep(interval)
            if self.node is not None:
                self.node.tick()
                self._ticks += 1
                self._retry_reads()
                self._retry_publish()
                self._wake.set()

    def _retry_reads(self) -> None:
        """Start a new round for reads whose ReadIndex round went unanswered.

        Raft never re-sends a lost ReadIndex request or answer (a dropped frame, a broken
        stream, a leader that dropped it), so reads in a round older than `READ_RETRY_TICKS`
        heartbeats join the next round, as etcd 3.5 retries every 500 ms; a late answer to
        the old round finds no reads and is ignored.
        """
        stale = [c for c, t in self._read_started.items() if self._ticks - t >= READ_RETRY_TICKS]
        for ctx in stale:
            del self._read_started[ctx]
            futs = self._reads_inflight.pop(ctx, None)
            if futs:
                self._reads_waiting.extend(f for f in futs if not f.done())

    def _retry_publish(self) -> None:
        """Propose this member's attributes again while this boot's publication is unapplied.

        A follower's proposal is forwarded to the leader once and lost with a dropped frame,
        a stream still dialling or a leader that steps down; etcd's `publish` retries until
        its request is applied, and readiness waits for it (etcdserver/server.go).
        """
        if (
            self._published
            and not self._published_applied
            and self.leader_id != NONE
            and self._ticks - self._published_tick >= PUBLISH_RETRY_TICKS
        ):
            log("W", "etcdserver: publish error: etcdserver: request timed out")
            self._publish_attributes()

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.config.sync_interval)
            if not self.is_leader or not self.keyspace.has_ttl_nodes():
                continue
            due = self.keyspace.next_expiry()
            now = self.clock()
            if due is not None and due <= now:
                with contextlib.suppress(V2Error, asyncio.TimeoutError):
                    await self.propose(Sync(now))

    async def propose(self, cmd: Command) -> list[Event]:
        """Replicate `cmd`; return its events once applied here, or raise its V2Error."""
        if self.fatal is not None:
            raise error_for(300, self.fatal)
        if self._stopping or self.node is None:
            raise error_for(300, "etcdserver: server stopped")
        self._req += 1
        rid = self._req
        fut: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = fut
        self._outbox.append(_pack([PAYLOAD_VERSION, _KIND_REQUEST, self.id, rid, encode(cmd)]))
        self._wake.set()
        self.proposals_pending += 1
        try:
            return await asyncio.wait_for(fut, self.config.request_timeout)
        except TimeoutError:
            self.proposals_failed += 1
            raise error_for(300, "etcdserver: request timed out") from None
        finally:
            self.proposals_pending -= 1
            self._waiters.pop(rid, None)

    async def read_barrier(self) -> None:
        """Wait until this member has applied everything committed before the call (ReadIndex).

        Reads arriving while one ReadIndex round is in flight share the next round.
        """
        if self.node is None or self._stopping:
            raise error_for(300, "etcdserver: server stopped")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reads_waiting.append(fut)
        self._wake.set()
        try:
            await asyncio.wait_for(fut, self.config.request_timeout)
        except TimeoutError:
            raise error_for(300, "etcdserver: request timed out") from None

    async def ready(self) -> None:
        """Wait until this member's attributes and the cluster version are applied here."""
        while not (
            self._published_applied and self.keyspace.internal_value("/0/version") is not None
        ):
            if self.fatal is not None:
                raise ClusterError(self.fatal)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._ready_waiters.append(fut)
            await fut

    def _check_ready(self) -> None:
        if self._ready_waiters and (
            self._published_applied and self.keyspace.internal_value("/0/version") is not None
        ):
            for f in self._ready_waiters:
                if not f.done():
                    f.set_result(None)
            self._ready_waiters.clear()

    async def wait_leader(self, within: float) -> bool:
        if self.leader_id != NONE:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._leader_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, within)
            return True
        except TimeoutError:
            return False

    # -- membership --------------------------------------------------------------------------
    async def add_member(self, peer_urls: list[str]) -> MemberInfo:
        for m in self.members.values():
            if set(m.peer_urls) & set(peer_urls):
                raise MemberConflict("etcdserver: peerURL exists")
        mid = member_id_for(peer_urls, self.config.cluster_token)
        # etcd adds the time to new members' ids so a re-added member gets a new id.
        mid = (
            int.from_bytes(
                hashlib.sha1(mid.to_bytes(8, "big") + self.clock().to_bytes(8, "big")).digest()[:8],
                "big",
            )
            or 1
        )
        await self._conf_change(
            ConfChange(
                ConfChangeType.ADD_NODE, mid, msgpack.packb([PAYLOAD_VERSION, sorted(peer_urls)])
            )
        )
        return self.members[mid]

    async def update_member(self, mid: int, peer_urls: list[str]) -> None:
        """Change a member's peer URLs (etcd's `PUT /v2/members/<id>`)."""
        if mid not in self.members:
            raise KeyError(mid)
        for other in self.members.values():
            if other.id != mid and set(other.peer_urls) & set(peer_urls):
                raise MemberConflict("etcdserver: peerURL exists")
        rid = self._next_request()
        fut: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = fut
        self._outbox.append(
            msgpack.packb([PAYLOAD_VERSION, _KIND_PEER_URLS, self.id, rid, mid, sorted(peer_urls)])
        )
        self._wake.set()
        try:
            await asyncio.wait_for(fut, self.config.request_timeout)
        except TimeoutError:
            raise error_for(300, "etcdserver: request timed out") from None
        finally:
            self._waiters.pop(rid, None)

    def _next_request(self) -> int:
        self._req += 1
        return self._req

    async def remove_member(self, mid: int) -> None:
        if mid in self.removed:
            raise MemberRemoved("etcdserver: member permanently removed")
        if mid not in self.members:
            raise KeyError(mid)
        await self._conf_change(
            ConfChange(ConfChangeType.REMOVE_NODE, mid, msgpack.packb([PAYLOAD_VERSION, []]))
        )

    async def _conf_change(self, cc: ConfChange) -> None:
        assert self.node is not None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        key = cc.node_id.to_bytes(8, "big") + bytes([cc.type])
        self._conf_waiters[key] = fut
        try:
            self.node.propose_conf_change(cc)
        except ProposalDroppedError:
            self._conf_waiters.pop(key, None)
            raise error_for(300, "etcdserver: no leader; membership change dropped") from None
        self._wake.set()
        try:
            await asyncio.wait_for(fut, self.config.request_timeout)
        except TimeoutError:
            raise error_for(300, "etcdserver: request timed out") from None
        finally:
            self._conf_waiters.pop(key, None)

    # -- the loop ----------------------------------------------------------------------------
    async def _run(self) -> None:
        node = self.node
        assert node is not None and self.wal is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._outbox and node.raft.lead != NONE:
                # Without a leader proposals wait here (as etcd's do) until one is elected or
                # their request times out; a dropped batch was appended nowhere, so it is
                # safe to offer it again next round.
                batch, self._outbox = self._outbox, []
                try:
                    node.propose_batch(batch)
                except ProposalDroppedError:
                    self._outbox[:0] = batch
            if self._reads_waiting and node.raft.lead != NONE:
                # The context names the round across the cluster: the leader keeps one
                # pending round per context and ignores a second one with the same bytes
                # (etcd-io/raft read_only.go), so a bare counter, which every member counts
                # alike, would let one member's round swallow another's reads.
                self._read_seq += 1
                ctx = self.id.to_bytes(8, "big") + self._read_seq.to_bytes(8, "big")
                self._reads_inflight[ctx], self._reads_waiting = self._reads_waiting, []
                self._read_started[ctx] = self._ticks
                with contextlib.suppress(ProposalDroppedError):
                    node.read_index(ctx)
            while node.has_ready():
                rd = node.ready()
                msgs = rd.messages
                early: Sequence[Message] = ()
                late: Sequence[Message] = ()
                if not msgs:
                    pass
                elif node.raft.state == StateType.LEADER:
                    # A leader writes its log in parallel with replicating it (Raft thesis
                    # §10.2.1; etcd's raftNode sends before saving too): its appends go out
                    # before its own fsync. Safe: entries are applied (and clients answered)
                    # only after the Ready that wrote them was persisted, here or earlier.
                    early = msgs
                else:
                    # Heartbeats promise nothing about what this Ready persists, so they go
                    # out before the fsync: a slow disk must not cost the cluster its leader.
                    # Everything else (append and vote answers) waits for the fsync.
                    early = [m for m in msgs if m.type in _BEFORE_PERSIST]
                    late = [m for m in msgs if m.type not in _BEFORE_PERSIST] if early else msgs
                if early and self.transport is not None:
                    self.transport.send(early)
                    if rd.must_sync and self.transport.queued():
                        # Let the streams' writer tasks send before the fsync blocks (format-2
                        # links have written already, inside `send`).
                        await asyncio.sleep(0)
                if rd.snapshot is not None:
                    await self._persist_snapshot(rd.snapshot)
                if rd.entries or rd.hard_state is not None:
                    self._persist(rd)
                if late and self.transport is not None:
                    self.transport.send(late)
                self._apply_ready(rd)
                node.advance()
                if self.applied - self.snap_index >= self.config.snapshot_count:
                    await self._maybe_snapshot()
            if self.fatal is not None:
                return

    async def _persist_snapshot(self, snap: Snapshot) -> None:
        """A Ready's snapshot: the file, then its WAL marker (in a worker thread), then Raft's
        storage. Comes before the Ready's entries and hard state (`_persist`)."""
        wal = self.wal
        assert wal is not None and self.snapshotter is not None
        await asyncio.to_thread(self.snapshotter.save, snap)
        await asyncio.to_thread(wal.save_snapshot, snap.metadata.index, snap.metadata.term)
        self.storage.apply_snapshot(snap)

    def _persist(self, rd: Ready) -> None:
        """A Ready's entries and hard state: WAL (one fdatasync if `must_sync`), then Raft's
        storage. Synchronous on the loop thread, see below."""
        wal = self.wal
        assert wal is not None
        if rd.entries or rd.hard_state is not None:
            started = time.perf_counter()
            if rd.must_sync:
                # The append and its one fdatasync run on the loop thread: a hop to a worker
                # thread and back costs two GIL hand-offs (up to the 5 ms switch interval
                # each on a busy machine), far more than a fdatasync of one batch. Requests
                # arriving meanwhile wait in socket buffers and form the next batch (group
                # commit), and heartbeats left before the fsync.
                wal.save(rd.hard_state, rd.entries, True)
                elapsed = time.perf_counter() - started
                for observe in self.fsync_observers:
                    observe(elapsed)
            else:
                wal.save(rd.hard_state, rd.entries, False)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)
        if rd.entries:
            self.storage.append(rd.entries)

    def _log_leader(self, lead: int, state: StateType) -> None:
        # etcd's raft.node lines: what an operator greps for after a fault.
        if lead == self._last_lead:
            return
        term = self.raft_term
        if lead == NONE:
            log("I", f"raft.node: {self.id:x} lost leader {self._last_lead:x} at term {term}")
        elif state == StateType.LEADER:
            log("I", f"raft: {self.id:x} became leader at term {term}")
            log("I", f"raft.node: {self.id:x} elected leader {lead:x} at term {term}")
        elif self._last_lead == NONE:
            log("I", f"raft.node: {self.id:x} elected leader {lead:x} at term {term}")
        else:
            log(
                "I",
                f"raft.node: {self.id:x} changed leader from {self._last_lead:x} to {lead:x} "
                f"at term {term}",
            )

    def _apply_ready(self, rd: Ready) -> None:
        node = self.node
        assert node is not None
        if rd.soft_state is not None:
            self._log_leader(rd.soft_state.lead, rd.soft_state.raft_state)
            if rd.soft_state.lead != NONE and rd.soft_state.lead != self._last_lead:
                self.leader_changes += 1
                self.leader_since = self.clock()
                if (
                    rd.soft_state.raft_state == StateType.LEADER
                    and self.keyspace.internal_value("/0/version") is None
                ):
                    # The first leader records the cluster version, as etcd's does.
                    cmd = InternalWrite("/0/version", "3.4.0", self.clock())
                    self._outbox.append(
                        msgpack.packb([PAYLOAD_VERSION, _KIND_REQUEST, self.id, 0, encode(cmd)])
                    )
                    self._wake.set()
                for f in self._leader_waiters:
                    if not f.done():
                        f.set_result(None)
                self._leader_waiters.clear()
                if not self._published and self.id in self.members:
                    self._publish_attributes()
            self._last_lead = rd.soft_state.lead
        if rd.snapshot is not None and rd.snapshot.metadata.index > self.applied:
            self._install_state(rd.snapshot)
            self.applied = rd.snapshot.metadata.index
            self.snap_index = rd.snapshot.metadata.index
            self._set_peers()
        events: list[Event] = []
        for e in rd.committed_entries:
            if e.index <= self.applied:
                continue
            if e.type == EntryType.CONF_CHANGE:
                events.extend(self._apply_conf_change(e))
            elif e.data:
                events.extend(self._apply_entry(e))
            self.applied = e.index
        if events:
            self._deliver(events)
        self._check_ready()
        if not self._published and self.id in self.members and self.leader_id != NONE:
            self._publish_attributes()
        for rs in rd.read_states:
            futs = self._reads_inflight.pop(rs.request_ctx, None)
            self._read_started.pop(rs.request_ctx, None)
            if futs:
                self._reads_ready.append((rs.index, futs))
        if self._reads_ready:
            keep = []
            for index, futs in self._reads_ready:
                if index <= self.applied:
                    for f in futs:
                        if not f.done():
                            f.set_result(None)
                else:
                    keep.append((index, futs))
            self._reads_ready = keep
        if self.node is not None and self.node.raft.lead == NONE and self._reads_inflight:
            # Leadership lost: read rounds in flight will never be answered; retry them.
            for futs in self._reads_inflight.values():
                self._reads_waiting.extend(futs)
            self._reads_inflight.clear()
            self._read_started.clear()

    def _publish_attributes(self) -> None:
        self._published = True
        self._published_tick = self._ticks
        self._outbox.append(
            msgpack.packb(
                [
                    PAYLOAD_VERSION,
                    _KIND_ATTRIBUTES,
                    self.id,
                    self.name,
                    list(self.config.client_urls),
                ]
            )
        )
        self._wake.set()

    def _apply_entry(self, e: Entry) -> list[Event]:
        try:
            payload = msgpack.unpackb(e.data)
            version, kind = payload[0], payload[1]
        except (ValueError, TypeError, IndexError, msgpack.UnpackException):
            return []
        if version > PAYLOAD_VERSION:
            self.fatal = (
                f"etcdserver: entry {e.index} uses payload format {version}; this release reads up to "
                f"{PAYLOAD_VERSION}: upgrade this member"
            )
            return []
        if kind == _KIND_PEER_URLS:
            _, _, origin, rid, mid, urls = payload
            info = self.members.get(mid)
            events: list[Event] = []
            if info is not None:
                info.peer_urls = list(urls)
                raft_attrs = json.dumps({"peerURLs": list(urls)}, separators=(",", ":"))
                events = self._internal(f"/0/members/{mid:x}/raftAttributes", raft_attrs, e)
                self._set_peers()
            waiter = self._waiters.get(rid) if origin == self.id else None
            if waiter is not None and not waiter.done():
                waiter.set_result(events)
            return events
        if kind == _KIND_ATTRIBUTES:
            _, _, mid, name, client_urls = payload
            info = self.members.get(mid)
            if info is None:
                return []
            info.name, info.client_urls = name, list(client_urls)
            if mid == self.id and e.index > self._boot_index and not self._published_applied:
                self._published_applied = True  # this boot's publication, not a replayed one
                log(
                    "I",
                    f"etcdserver: published {{Name:{name} ClientURLs:[{' '.join(client_urls)}]}} "
                    f"to cluster {self.cluster_id:x}",
                )
            attrs = json.dumps(
                {"name": name, "clientURLs": list(client_urls)}, separators=(",", ":")
            )
            return self._internal(f"/0/members/{mid:x}/attributes", attrs, e)
        _, _, origin, rid, raw = payload
        cmd = decode(raw)
        fut = self._waiters.get(rid) if origin == self.id else None
        try:
            events = self.keyspace.apply(cmd)
        except V2Error as exc:
            if fut is not None and not fut.done():
                fut.set_exception(exc)
            return []
        if fut is not None and not fut.done():
            fut.set_result(events)
        if isinstance(cmd, InternalWrite) and cmd.key == "/0/version":
            self.cluster_version = cmd.value
        return events

    def _internal(self, key: str, value: str, e: Entry) -> list[Event]:
        try:
            return self.keyspace.apply(InternalWrite(key, value, 0))
        except V2Error:
            return []

    def _apply_conf_change(self, e: Entry) -> list[Event]:
        assert self.node is not None
        cc = decode_conf_change(e.data)
        self.conf_state = self.node.apply_conf_change(cc)
        key = cc.node_id.to_bytes(8, "big") + bytes([cc.type])
        events: list[Event] = []
        if cc.type == ConfChangeType.ADD_NODE and cc.node_id not in self.removed:
            urls: list[str] = []
            if cc.context:
                with contextlib.suppress(
                    ValueError, TypeError, IndexError, msgpack.UnpackException
                ):
                    urls = list(msgpack.unpackb(cc.context)[1])
            if not urls:
                init = self._initial.get(cc.node_id)
                urls = init.peer_urls if init is not None else []
            if cc.node_id not in self.members:
                self.members[cc.node_id] = MemberInfo(cc.node_id, "", sorted(urls), [])
                raft_attrs = json.dumps({"peerURLs": sorted(urls)}, separators=(",", ":"))
                events = self._internal(f"/0/members/{cc.node_id:x}/raftAttributes", raft_attrs, e)
            if cc.node_id == self.id and not self._published and self.leader_id != NONE:
                self._publish_attributes()
        elif cc.type == ConfChangeType.REMOVE_NODE:
            self.members.pop(cc.node_id, None)
            self.removed.add(cc.node_id)
            events = self._internal(f"/0/removed_members/{cc.node_id:x}", "removed", e)
            if cc.node_id == self.id:
                self.fatal = "etcdserver: the member has been permanently removed from the cluster"
        if self.id in self.members and self.cluster_id == 0:
            self.cluster_id = cluster_id_for(list(self.members))
        self._set_peers()
        fut = self._conf_waiters.get(key)
        if fut is not None and not fut.done():
            fut.set_result(None)
        return events

    def _deliver(self, events: list[Event]) -> None:
        hub = self.keyspace.hub
        for event in events:
            for watcher in hub.notify(event):
                watcher.sink.deliver(event)
        for callback in self.on_commit:
            callback(events)

    # -- snapshots ---------------------------------------------------------------------------
    def _state_bytes(self) -> bytes:
        return msgpack.packb(
            {
                "v": PAYLOAD_VERSION,
                "kv": self.keyspace.snapshot(),
                "members": [
                    [m.id, m.name, m.peer_urls, m.client_urls] for m in self.members.values()
                ],
                "removed": sorted(self.removed),
                "cluster_id": self.cluster_id,
            }
        )

    def _install_state(self, snap: Snapshot) -> None:
        state = msgpack.unpackb(snap.data)
        if state.get("v", 0) > PAYLOAD_VERSION:
            raise ClusterError(f"snapshot format {state.get('v')} is newer than this release reads")
        fresh = Keyspace.restore(state["kv"])
        # Live watchers and local counters survive a snapshot install (etcd's store Recovery).
        fresh.hub, fresh.stats = self.keyspace.hub, self.keyspace.stats
        self.keyspace = fresh
        self.members = {
            m[0]: MemberInfo(m[0], m[1], list(m[2]), list(m[3])) for m in state["members"]
        }
        self.removed = set(state["removed"])
        self.cluster_id = self.cluster_id or int(state.get("cluster_id", 0))
        self.conf_state = snap.metadata.conf_state

    def _fresh_snapshot(self) -> Snapshot | None:
        held = MemoryStorage.snapshot(self.storage).metadata.index
        if self.node is None or self.applied <= held or self.applied > self.storage.last_index():
            return None
        return self.storage.create_snapshot(self.applied, self.conf_state, self._state_bytes())

    async def _maybe_snapshot(self) -> None:
        if self.applied - self.snap_index < self.config.snapshot_count:
            return
        assert self.snapshotter is not None and self.wal is not None
        index = self.applied
        held = MemoryStorage.snapshot(self.storage)
        if held.metadata.index >= index:
            snap = held  # one was just made for a lagging follower
        else:
            snap = self.storage.create_snapshot(index, self.conf_state, self._state_bytes())
        await asyncio.to_thread(self.snapshotter.save, snap)
        await asyncio.to_thread(self.wal.save_snapshot, index, snap.metadata.term)
        self.snap_index = index
        compact_to = index - self.config.catchup_entries
        if compact_to > self.storage.first_index():
            self.storage.compact(compact_to)
        await asyncio.to_thread(self.wal.release_to, index, self.config.max_wals)
        await asyncio.to_thread(self.snapshotter.prune, self.config.max_snapshots)

    # -- the peer listener -------------------------------------------------------------------
    def peer_routes(self) -> list[web.RouteDef]:
        assert self.transport is not None
        return [
            *self.transport.routes(),
            web.get("/members", self._peer_members),
            web.get("/version", self._peer_version),
        ]

    async def _peer_members(self, request: web.Request) -> web.Response:
        # etcd's peer answer is membership.Member: the id a JSON number (etcd proxies and
        # joining members parse it so), unlike the client API's hex string.
        doc = [
            {"id": m.id, "peerURLs": m.peer_urls, "name": m.name, "clientURLs": m.client_urls}
            for m in self.member_list()
        ]
        return web.json_response(doc, headers={"X-Etcd-Cluster-ID": f"{self.cluster_id:x}"})

    async def _peer_version(self, request: web.Request) -> web.Response:
        return web.json_response({"etcdserver": "3.4.23", "etcdcluster": "3.4.0"})


def member_ids_in(snap: Snapshot | None, entries: list[Entry]) -> set[int]:
    """The members a snapshot and the log after it leave in the configuration (etcd's
    `getIDs`): the snapshot's voters and learners, then each conf change in order."""
    ids: set[int] = set()
    if snap is not None:
        ids.update(snap.metadata.conf_state.voters, snap.metadata.conf_state.learners)
    for e in entries:
        if e.type != EntryType.CONF_CHANGE:
            continue
        cc = decode_conf_change(e.data)
        if cc.type == ConfChangeType.REMOVE_NODE:
            ids.discard(cc.node_id)
        else:
            ids.add(cc.node_id)
    return ids


def standalone_conf_changes(
    ids: set[int], self_id: int, peer_urls: tuple[str, ...], term: int, index: int
) -> list[Entry]:
    """The entries that make `self_id` the only member (etcd's `createConfigChangeEnts`),
    at `index + 1`… in `term`. Self is added first (if missing) so the voter set is never
    empty. etcd gives an added self the default peer URL `http://localhost:2380`; corral
    uses the member's advertised peer URLs (which default to that)."""
    out: list[Entry] = []
    changes: list[ConfChange] = []
    if self_id not in ids:
        ctx = msgpack.packb([PAYLOAD_VERSION, sorted(peer_urls)])
        changes.append(ConfChange(ConfChangeType.ADD_NODE, self_id, ctx))
    for other in sorted(ids - {self_id}):
        ctx = msgpack.packb([PAYLOAD_VERSION, []])
        changes.append(ConfChange(ConfChangeType.REMOVE_NODE, other, ctx))
    for i, cc in enumerate(changes, start=index + 1):
        out.append(Entry(term, i, EntryType.CONF_CHANGE, encode_conf_change(cc)))
    return out


def _peer_member_id(raw: object) -> int:
    """A member id from a peer's /members: etcd's JSON number, or the hex string older
    corral releases sent."""
    return raw if isinstance(raw, int) else int(str(raw), 16)


def parse_initial_cluster(value: str) -> tuple[tuple[str, str], ...]:
    """`a=http://h:1,b=http://h:2` → ((a, http://h:1), (b, http://h:2)); a name may repeat."""
    out = []
    for item in filter(None, (s.strip() for s in value.split(","))):
        name, eq, url = item.partition("=")
        if not eq or not name or not urllib.parse.urlsplit(url).netloc:
            raise ClusterError(
                f"invalid --initial-cluster entry {item!r} (want name=http://host:port)"
            )
        out.append((name, url))
    return tuple(out)
