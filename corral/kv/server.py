"""The KV member: the keyspace behind a durable command log, and the leader's TTL sweeper.

Theory of operation. Everything that changes the keyspace is a `Command` (corral.kv.commands)
passed to `Member.propose(cmd)`, which returns the events once the command is durable and
applied. This is the seam replication plugs into: today `propose` appends to a local,
fsynced log (a single-member "Raft" whose every entry commits at once); the Raft issue swaps
`LocalLog` for replicated consensus, and the HTTP layer (corral.kv.http_api), which only calls
`propose` and reads the keyspace, does not change.

Durability (the order a proposal goes through):

1. `propose` queues (command, future) and wakes the writer task.
2. The writer takes *every* queued command as one batch, frames each record, writes the batch
   and fsyncs once in a worker thread (the event loop keeps serving). Commands proposed during
   that fsync form the next batch, so concurrent writers share fsyncs.
3. After the fsync it applies the batch in order, answers each future (events or the
   `V2Error` apply raised: failed commands are logged too, and replay fails them again
   identically), and hands the events to the watcher hub.

Nothing is acknowledged before its fsync returned, so a kill -9 loses no acknowledged write.

On-disk layout under ``<data-dir>/member/corral/`` (every file carries a format version; with
``wal_dir`` set, ``log`` and ``snap`` live in ``<wal-dir>/corral/`` instead):

* ``meta.json``: ``{"version": 1, "name", "member_id", "cluster_id"}``, written once.
* ``log``: header ``b"CRLKVLOG" | u16 version | u64 base`` then records
  ``u32 length | u32 crc32 | payload`` (payload = `commands.encode`). Record *i* is log
  sequence ``base + i + 1``. A torn or corrupt tail (short record, bad CRC) is cut off at
  start-up: those records were never acknowledged.
* ``snap``: header ``b"CRLKVSNP" | u16 version | u64 seq | u32 crc32`` then
  `Keyspace.snapshot()`. Written (tmp file, fsync, rename) every `snapshot_every` records,
  after which the log restarts with ``base = seq``. Recovery loads the snapshot, then
  replays only log records with sequence > seq, so a crash between the two steps is safe.

The data dir is locked with `fcntl.flock` (``<data-dir>/member/corral/lock``); a second process
gets `DataDirLocked`, a clear error, instead of sharing the files.

Time is data: the member stamps `now` (its clock) into each command, and expiry is proposed
as `Sync(now)` by the sweeper every `sync_interval` when a TTL node is due (etcd's SYNC).
A fresh member makes etcd's three internal writes (member, attributes, cluster version), so
its first answer carries ``X-Etcd-Index: 3`` as etcd's does.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from corral.kv.commands import Command, InternalWrite, Sync, decode, encode
from corral.kv.errors import KVError, V2Error, error_for
from corral.kv.events import Event
from corral.kv.keyspace import Keyspace

__all__ = [
    "DataDirLocked",
    "LocalLog",
    "Member",
    "MemberConfig",
    "MemberError",
    "Sink",
]

LOG_MAGIC = b"CRLKVLOG"
SNAP_MAGIC = b"CRLKVSNP"
LOG_VERSION = 1
SNAP_VERSION = 1
META_VERSION = 1
_LOG_HEADER = struct.Struct(">8sHQ")
_SNAP_HEADER = struct.Struct(">8sHQI")
_RECORD = struct.Struct(">II")


class MemberError(KVError):
    """The member cannot start or go on (bad data dir, unreadable files)."""


class DataDirLocked(MemberError):
    """Another process holds this data dir."""


class Sink(Protocol):
    """Where the hub's fired watchers get their events (the HTTP layer's watch streams)."""

    def deliver(self, event: Event) -> None: ...


@dataclass(frozen=True)
class MemberConfig:
    name: str
    data_dir: Path
    client_urls: tuple[str, ...]
    peer_urls: tuple[str, ...]
    cluster_token: str = "etcd-cluster"
    sync_interval: float = 0.5  # seconds between TTL sweeps (etcd: 500 ms)
    snapshot_every: int = 10000  # log records between snapshots
    wal_dir: Path | None = None  # `--wal-dir`: the log and snapshot live there instead


def member_id_for(peer_urls: tuple[str, ...], token: str) -> int:
    """A stable 64-bit member id from its peer URLs and the cluster token (as etcd derives it)."""
    digest = hashlib.sha1(("".join(sorted(peer_urls)) + token).encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def cluster_id_for(member_ids: list[int]) -> int:
    raw = b"".join(i.to_bytes(8, "big") for i in sorted(member_ids))
    return int.from_bytes(hashlib.sha1(raw).digest()[:8], "big") or 1


class LocalLog:
    """The single-member log: framed, CRC'd, fsynced records plus snapshots (see module doc)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.log_path = directory / "log"
        self.snap_path = directory / "snap"
        self._fd: int | None = None
        self.base = 0
        self.records = 0  # records in the current log file

    @property
    def seq(self) -> int:
        return self.base + self.records

    # -- recovery
    def load(self) -> tuple[bytes | None, int, list[bytes]]:
        """(snapshot bytes or None, snapshot seq, payloads of later records); opens for append."""
        snap, snap_seq = self._load_snapshot()
        payloads: list[bytes] = []
        if not self.log_path.exists():
            self._create_log(snap_seq)
            return snap, snap_seq, payloads
        data = self.log_path.read_bytes()
        if len(data) < _LOG_HEADER.size:
            raise MemberError(f"{self.log_path}: not a corral log (file too short)")
        magic, version, base = _LOG_HEADER.unpack_from(data)
        if magic != LOG_MAGIC:
            raise MemberError(f"{self.log_path}: not a corral log (bad magic)")
        if version != LOG_VERSION:
            raise MemberError(
                f"{self.log_path}: log format version {version} is not supported "
                f"(this release reads version {LOG_VERSION})"
            )
        pos = _LOG_HEADER.size
        good_end = pos
        count = 0
        while pos + _RECORD.size <= len(data):
            length, crc = _RECORD.unpack_from(data, pos)
            start = pos + _RECORD.size
            payload = data[start : start + length]
            if len(payload) < length or zlib.crc32(payload) != crc:
                break  # torn tail: never acknowledged
            count += 1
            if base + count > snap_seq:
                payloads.append(payload)
            pos = start + length
            good_end = pos
        self._fd = os.open(self.log_path, os.O_WRONLY)
        if good_end != len(data):
            os.ftruncate(self._fd, good_end)
            os.fsync(self._fd)
        os.lseek(self._fd, 0, os.SEEK_END)
        self.base, self.records = base, count
        if self.seq < snap_seq:
            raise MemberError(f"{self.log_path}: log ends before the snapshot ({snap_seq})")
        return snap, snap_seq, payloads

    def _load_snapshot(self) -> tuple[bytes | None, int]:
        if not self.snap_path.exists():
            return None, 0
        data = self.snap_path.read_bytes()
        if len(data) < _SNAP_HEADER.size:
            raise MemberError(f"{self.snap_path}: not a corral snapshot (file too short)")
        magic, version, seq, crc = _SNAP_HEADER.unpack_from(data)
        if magic != SNAP_MAGIC:
            raise MemberError(f"{self.snap_path}: not a corral snapshot (bad magic)")
        if version != SNAP_VERSION:
            raise MemberError(
                f"{self.snap_path}: snapshot format version {version} is not supported "
                f"(this release reads version {SNAP_VERSION})"
            )
        body = data[_SNAP_HEADER.size :]
        if zlib.crc32(body) != crc:
            raise MemberError(f"{self.snap_path}: snapshot checksum mismatch")
        return body, seq

    def _create_log(self, base: int) -> None:
        tmp = self.dir / "log.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, _LOG_HEADER.pack(LOG_MAGIC, LOG_VERSION, base))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.log_path)
        _fsync_dir(self.dir)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND)
        self.base, self.records = base, 0

    # -- writing (called from a worker thread, one batch at a time)
    @staticmethod
    def frame(payload: bytes) -> bytes:
        return _RECORD.pack(len(payload), zlib.crc32(payload)) + payload

    def append(self, framed: bytes, count: int) -> None:
        assert self._fd is not None
        view = memoryview(framed)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)
        self.records += count

    def write_snapshot(self, body: bytes, seq: int) -> None:
        tmp = self.dir / "snap.tmp"
        with open(tmp, "wb") as f:
            f.write(_SNAP_HEADER.pack(SNAP_MAGIC, SNAP_VERSION, seq, zlib.crc32(body)))
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.snap_path)
        _fsync_dir(self.dir)
        self._create_log(seq)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Member:
    """One KV member (single node for now). See the module docstring."""

    def __init__(self, config: MemberConfig, clock: Callable[[], int] = time.time_ns) -> None:
        self.config = config
        self.clock = clock
        self.dir = config.data_dir / "member" / "corral"
        self.keyspace = Keyspace()
        self.log = LocalLog(config.wal_dir / "corral" if config.wal_dir else self.dir)
        self.name = config.name
        self.id = member_id_for(config.peer_urls, config.cluster_token)
        self.cluster_id = cluster_id_for([self.id])
        self.raft_term = 2
        self.start_time = 0
        self.leader_since = 0
        self.on_commit: list[Callable[[list[Event]], None]] = []
        self.fsync_observers: list[Callable[[float], None]] = []
        self.proposals_failed = 0
        self._lock_fd: int | None = None
        self._pending: list[tuple[Command, asyncio.Future[list[Event]]]] = []
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._broken: str | None = None
        self._stopping = False

    @property
    def raft_index(self) -> int:
        # Every log record is a committed entry; etcd's first entries are its conf changes.
        return self.log.seq + 2

    # -- lifecycle
    def open(self) -> None:
        """Lock the data dir, load meta, snapshot and log (blocking: call before serving)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log.dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        self._load_meta()
        snap, _, payloads = self.log.load()
        if snap is not None:
            self.keyspace = Keyspace.restore(snap)
        for payload in payloads:
            cmd = decode(payload)
            with contextlib.suppress(V2Error):
                self.keyspace.apply(cmd)
        self.start_time = self.clock()

    async def start(self) -> None:
        """Open (if not yet), make the fresh-cluster internal writes, start the loops."""
        if self._lock_fd is None:
            await asyncio.to_thread(self.open)
        self.leader_since = self.clock()
        self._tasks.append(asyncio.create_task(self._writer()))
        self._tasks.append(asyncio.create_task(self._sweeper()))
        if self.log.seq == 0:
            await self._bootstrap()

    async def _bootstrap(self) -> None:
        now = self.clock()
        mid = f"{self.id:x}"
        peer = json.dumps({"peerURLs": list(self.config.peer_urls)}, separators=(",", ":"))
        attrs = json.dumps(
            {"name": self.name, "clientURLs": list(self.config.client_urls)},
            separators=(",", ":"),
        )
        await self.propose(InternalWrite(f"/0/members/{mid}/raftAttributes", peer, now))
        await self.propose(InternalWrite(f"/0/members/{mid}/attributes", attrs, now))
        await self.propose(InternalWrite("/0/version", "3.4.0", now))

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        for _, fut in self._pending:
            if not fut.done():
                fut.set_exception(error_for(300, "etcdserver: server stopped"))
        self._pending.clear()
        self.log.close()
        self._unlock()

    def _lock(self) -> None:
        path = self.dir / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLocked(
                f"data dir {self.config.data_dir} is in use by another process "
                f"(lock {path} is held)"
            ) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load_meta(self) -> None:
        path = self.dir / "meta.json"
        if path.exists():
            try:
                meta = json.loads(path.read_text())
                version = meta["version"]
                if version != META_VERSION:
                    raise MemberError(
                        f"{path}: meta format version {version} is not supported "
                        f"(this release reads version {META_VERSION})"
                    )
                self.id = int(meta["member_id"], 16)
                self.cluster_id = int(meta["cluster_id"], 16)
            except (ValueError, KeyError, TypeError) as exc:
                raise MemberError(f"{path}: unreadable member metadata ({exc})") from None
            return
        meta_doc = {
            "version": META_VERSION,
            "name": self.name,
            "member_id": f"{self.id:x}",
            "cluster_id": f"{self.cluster_id:x}",
        }
        tmp = self.dir / "meta.json.tmp"
        with open(tmp, "w") as f:
            json.dump(meta_doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.dir)

    # -- the seam
    async def propose(self, cmd: Command) -> list[Event]:
        """Make `cmd` durable, apply it, return its events; raises the V2Error apply raised."""
        if self._broken is not None:
            self.proposals_failed += 1
            raise error_for(300, self._broken)
        if self._stopping:
            raise error_for(300, "etcdserver: server stopped")
        fut: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        self._pending.append((cmd, fut))
        self._wakeup.set()
        return await fut

    def now(self) -> int:
        return self.clock()

    async def _writer(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            framed = b"".join(LocalLog.frame(encode(cmd)) for cmd, _ in batch)
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self.log.append, framed, len(batch))
            except OSError as exc:
                self._broken = f"etcdserver: log write failed: {exc.strerror or exc}"
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(error_for(300, self._broken))
                continue
            elapsed = time.perf_counter() - started
            for observe in self.fsync_observers:
                observe(elapsed)
            committed: list[Event] = []
            for cmd, fut in batch:
                try:
                    events = self.keyspace.apply(cmd)
                except V2Error as exc:
                    if not fut.done():
                        fut.set_exception(exc)
                    continue
                except Exception as exc:  # a keyspace bug must not stop the writer
                    self.proposals_failed += 1
                    if not fut.done():
                        fut.set_exception(error_for(300, f"etcdserver: apply failed: {exc!r}"))
                    continue
                committed.extend(events)
                if not fut.done():
                    fut.set_result(events)
            self._deliver(committed)
            if self.log.records >= self.config.snapshot_every:
                await self._snapshot()

    def _deliver(self, events: list[Event]) -> None:
        hub = self.keyspace.hub
        for event in events:
            for watcher in hub.notify(event):
                sink: Any = watcher.sink
                sink.deliver(event)
        for callback in self.on_commit:
            callback(events)

    async def _snapshot(self) -> None:
        body = self.keyspace.snapshot()
        seq = self.log.seq
        try:
            await asyncio.to_thread(self.log.write_snapshot, body, seq)
        except OSError as exc:
            self._broken = f"etcdserver: snapshot failed: {exc.strerror or exc}"

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.config.sync_interval)
            if not self.keyspace.has_ttl_nodes():
                continue
            due = self.keyspace.next_expiry()
            now = self.clock()
            if due is not None and due <= now:
                with contextlib.suppress(V2Error):
                    await self.propose(Sync(now))
