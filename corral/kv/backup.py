"""`corral kv backup`: etcdctl v2's `backup` for a corral member's data dir.

What etcd 3.4's `etcdctl backup` (`etcdctl/ctlv2/command/backup_command.go`) does, with
corral's formats:

1. The newest snapshot of `<data-dir>/member/snap` that verifies is copied to
   `<backup-dir>/member/snap` (a broken one is passed over, never renamed: the source is
   only read).
2. The WAL (`<data-dir>/member/wal`, or `--wal-dir`) is read from that snapshot on, without
   repairing anything; a torn tail is left out, corruption is an error.
3. Entries that would tie the copy to the old cluster become empty entries at the same index
   and term (what a new leader appends; etcd ≥ 3.5 does the same instead of 3.4's renumbering,
   which could put the log out of step with the snapshot): membership changes (Raft conf
   changes, peer-URL updates) and member attribute publications.
4. A new WAL is written in `<backup-dir>/member/wal` (or `--backup-wal-dir`) with a new member
   id and a new cluster id (etcd's `idutil` generator: the low 40 bits of the Unix time in ms,
   shifted left 8, plus a counter), and no list of initial peers, so the copy can neither
   rejoin nor be mistaken for the old cluster. It holds the entries, the hard state and the
   snapshot marker.

Start the copy with `corral etcd --data-dir <backup-dir> --force-new-cluster` to get a one-member
cluster holding every committed key (see `standalone_conf_changes` in `corral.kv.cluster`).

The data dir must belong to a stopped member: its `member/lock` is taken for the whole copy, so
a running member (which holds it) gives a clear error and a member cannot start mid-copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import msgpack

from corral.kv.cluster import _KIND_ATTRIBUTES, _KIND_PEER_URLS
from corral.raft import Entry, EntryType
from corral.storage.disk import Disk, disk_from_env
from corral.storage.snap import SnapshotError, Snapshotter
from corral.storage.wal import WAL, WALError

__all__ = ["BackupError", "BackupResult", "backup", "new_ids", "strip_membership"]

_TS_BITS = 40
_COUNT_BITS = 8


class BackupError(Exception):
    """The backup cannot be made; the message says why, for the operator."""


@dataclass(frozen=True)
class BackupResult:
    member_id: int
    cluster_id: int
    snapshot_index: int  # 0 without a snapshot
    entries: int
    stripped: int


def new_ids(now_ms: int) -> tuple[int, int]:
    """(member id, cluster id) as etcdctl draws them: `idutil.NewGenerator(0, now).Next()` twice."""
    base = (now_ms & ((1 << _TS_BITS) - 1)) << _COUNT_BITS
    return base + 1, base + 2


def _membership_kind(e: Entry) -> str | None:
    """Why `e` ties the log to its cluster (the line etcdctl logs), or None to keep it."""
    if e.type == EntryType.CONF_CHANGE:
        return "ignoring EntryConfChange raft entry"
    if not e.data:
        return None
    try:
        payload = msgpack.unpackb(e.data)
        kind = payload[1]
    except (ValueError, TypeError, IndexError, KeyError, msgpack.UnpackException):
        return None
    if kind == _KIND_ATTRIBUTES:
        return f"ignoring member attribute update on /0/members/{int(payload[2]):x}/attributes"
    if kind == _KIND_PEER_URLS:
        return f"ignoring member peer URL update on /0/members/{int(payload[4]):x}/raftAttributes"
    return None


def strip_membership(entries: list[Entry]) -> tuple[list[Entry], list[str]]:
    """The entries with membership ones emptied (same index and term), and a line for each."""
    out: list[Entry] = []
    notes: list[str] = []
    for e in entries:
        why = _membership_kind(e)
        if why is None:
            out.append(e)
        else:
            notes.append(why)
            out.append(Entry(e.term, e.index, EntryType.NORMAL, b""))
    return out, notes


@contextlib.contextmanager
def _locked(member_dir: Path) -> Iterator[None]:
    """Hold the member's lock: a running member holds it (corral.kv.cluster `_lock`)."""
    path = member_dir / "lock"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        yield  # never started by this release; nothing can be running on it
        return
    except OSError as exc:
        raise BackupError(f"cannot open {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(
                f"data dir {member_dir.parent} is in use by a running member (lock {path} is "
                "held): stop that member first, or back up another member's data dir"
            ) from None
        yield
    finally:
        os.close(fd)


def backup(
    data_dir: Path,
    backup_dir: Path,
    wal_dir: Path | None = None,
    backup_wal_dir: Path | None = None,
    now_ms: int = 0,
    log: Callable[[str], None] = lambda line: None,
    disk: Disk | None = None,
) -> BackupResult:
    """Copy a stopped member's data dir to `backup_dir` under new ids (see the module doc)."""
    member = data_dir / "member"
    src_snap = member / "snap"
    src_wal = wal_dir or member / "wal"
    dst_snap = backup_dir / "member" / "snap"
    dst_wal = backup_wal_dir or backup_dir / "member" / "wal"
    if not data_dir.is_dir():
        raise BackupError(f"data dir {data_dir} does not exist")
    if not WAL.exists(src_wal):
        raise BackupError(
            f"{data_dir} is not a member's data dir: no WAL segments (*.wal) in {src_wal}"
        )
    if dst_snap.is_dir() and any(dst_snap.iterdir()):
        found = sorted(p.name for p in dst_snap.iterdir())
        raise BackupError(
            f"failed creating backup snapshot dir {dst_snap}: expected {str(dst_snap)!r} to be "
            f"empty, got {found}"
        )
    if WAL.exists(dst_wal):
        raise BackupError(f"backup wal dir {dst_wal} already holds a WAL")
    disk = disk or disk_from_env()
    with _locked(member):
        try:
            snap, skipped = Snapshotter.newest(src_snap)
            from_index = snap.metadata.index if snap is not None else 0
            replay = WAL.read(src_wal, from_index=from_index)
        except (SnapshotError, WALError) as exc:
            raise BackupError(str(exc)) from None
        for line in skipped:
            log(f"skipping broken snapshot: {line}")
        if replay.repaired:
            log(f"the last WAL record in {src_wal} is torn (a crash mid-write): left out")
        entries, notes = strip_membership(replay.entries)
        for line in notes:
            log(line)
        member_id, cluster_id = new_ids(now_ms)
        meta = {k: v for k, v in replay.metadata.items() if k != "version"}
        meta.update(member_id=member_id, cluster_id=cluster_id, initial={})
        snapshotter = Snapshotter(dst_snap, disk)  # creates it, durably
        if snap is not None:
            snapshotter.save(snap)
        w = WAL.create(dst_wal, meta, disk=disk)
        try:
            if snap is not None:
                w.save_snapshot(snap.metadata.index, snap.metadata.term)
            hs = replay.hard_state
            if snap is not None and hs.commit < from_index:
                hs = replace(hs, commit=from_index)
            w.save(hs, entries, sync=True)  # one fsync: marker, entries and hard state
        finally:
            w.close()
    return BackupResult(member_id, cluster_id, from_index, len(entries), len(notes))
