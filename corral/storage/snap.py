"""Snapshot files: written atomically, verified on load, pruned to `--max-snapshots`.

File `TERM-INDEX.snap` (16 hex digits each) holds::

    b"CSNP" | u16 format version | u32 crc32 of body | body

where body is a Raft snapshot (`corral.raft` codec: metadata + the application's state, which
for the KV store includes its tree, indexes and 1000-event watch history). Writing: temp file
(written and fsynced) → rename → directory fsync. Loading takes the newest file that verifies;
a broken one is renamed `*.broken` and skipped, as etcd does (`newest` does the same without
touching the directory, for backups). Pruning does not fsync the directory: a removal that is
lost in a crash only brings an older snapshot back, which loading never prefers.
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

from corral.raft import Snapshot, decode_snapshot, encode_snapshot
from corral.storage.disk import Disk, OsDisk, make_dirs
from corral.testing.failpoints import failpoint

__all__ = ["SNAP_VERSION", "SnapshotError", "Snapshotter"]

SNAP_VERSION = 1
_MAGIC = b"CSNP"
_HEAD = struct.Struct("<4sHI")
_NAME_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


class SnapshotError(Exception):
    pass


def _list(directory: Path) -> list[tuple[int, int, Path]]:
    """(index, term, path) of each snapshot file, oldest first."""
    out = []
    for p in directory.iterdir():
        m = _NAME_RE.match(p.name)
        if m:
            out.append((int(m.group(2), 16), int(m.group(1), 16), p))
    return sorted(out)


class Snapshotter:
    def __init__(self, directory: Path, disk: Disk | None = None) -> None:
        self.dir = directory
        self.disk = disk or OsDisk()
        make_dirs(self.disk, directory)
        for stale in directory.glob("*.snap.tmp"):
            stale.unlink()  # a crash between write and rename

    def _files(self) -> list[tuple[int, int, Path]]:
        return _list(self.dir)

    def save(self, snap: Snapshot) -> Path:
        body = encode_snapshot(snap)
        data = _HEAD.pack(_MAGIC, SNAP_VERSION, zlib.crc32(body) & 0xFFFFFFFF) + body
        name = f"{snap.metadata.term:016x}-{snap.metadata.index:016x}.snap"
        path = self.dir / name
        tmp = self.dir / (name + ".tmp")
        f = self.disk.create(tmp)
        try:
            f.write(data)
            f.fsync()  # the content is durable before the name points at it
        finally:
            f.close()
        failpoint("snap_before_rename")
        self.disk.rename(tmp, path)
        # The name is durable before the WAL records the snapshot and segments are released.
        self.disk.fsync_dir(self.dir)
        failpoint("snap_after_rename")
        return path

    @staticmethod
    def read(path: Path) -> Snapshot:
        data = path.read_bytes()
        if len(data) < _HEAD.size:
            raise SnapshotError(f"{path.name}: truncated snapshot")
        magic, version, crc = _HEAD.unpack_from(data)
        if magic != _MAGIC:
            raise SnapshotError(f"{path.name}: not a corral snapshot")
        if version > SNAP_VERSION:
            raise SnapshotError(
                f"{path.name}: written by a newer format (version {version}); this release reads "
                f"up to version {SNAP_VERSION}"
            )
        body = data[_HEAD.size :]
        if zlib.crc32(body) & 0xFFFFFFFF != crc:
            raise SnapshotError(f"{path.name}: checksum mismatch")
        return decode_snapshot(body)

    @classmethod
    def newest(cls, directory: Path) -> tuple[Snapshot | None, list[str]]:
        """The newest snapshot in `directory` that verifies, read-only (nothing is renamed or
        removed), and a line for each broken file passed over."""
        skipped: list[str] = []
        if not directory.is_dir():
            return None, skipped
        for _index, _term, path in reversed(_list(directory)):
            try:
                return cls.read(path), skipped
            except SnapshotError as exc:
                if "newer format" in str(exc):
                    raise
                skipped.append(str(exc))
        return None, skipped

    def load_newest(self) -> Snapshot | None:
        """The newest snapshot that verifies; broken files are set aside as `*.broken`."""
        for _index, _term, path in reversed(self._files()):
            try:
                return self.read(path)
            except SnapshotError as exc:
                if "newer format" in str(exc):
                    raise
                path.rename(path.with_suffix(".snap.broken"))
        return None

    def prune(self, max_snapshots: int) -> list[Path]:
        """Keep the newest `max_snapshots` files (0 keeps all)."""
        files = self._files()
        if max_snapshots <= 0 or len(files) <= max_snapshots:
            return []
        gone = [p for _, _, p in files[: len(files) - max_snapshots]]
        for p in gone:
            self.disk.remove(p)
        return gone  # no directory fsync: see the module docstring
