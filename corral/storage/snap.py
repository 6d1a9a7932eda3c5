"""Snapshot files: written atomically, verified on load, pruned to `--max-snapshots`.

File `TERM-INDEX.snap` (16 hex digits each) holds::

    b"CSNP" | u16 format version | u32 crc32 of body | body

where body is a Raft snapshot (`corral.raft` codec: metadata + the application's state, which
for the KV store includes its tree, indexes and 1000-event watch history). Writing: temp file
(written and fsynced) → rename → directory fsync. Loading takes the newest file that verifies;
a broken one is renamed `*.broken` and skipped, as etcd does.
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

from corral.raft import Snapshot, decode_snapshot, encode_snapshot
from corral.storage.disk import Disk, OsDisk
from corral.testing.failpoints import failpoint

__all__ = ["SNAP_VERSION", "SnapshotError", "Snapshotter"]

SNAP_VERSION = 1
_MAGIC = b"CSNP"
_HEAD = struct.Struct("<4sHI")
_NAME_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


class SnapshotError(Exception):
    pass


class Snapshotter:
    def __init__(self, directory: Path, disk: Disk | None = None) -> None:
        self.dir = directory
        self.disk = disk or OsDisk()
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.snap.tmp"):
            stale.unlink()  # a crash between write and rename

    def _files(self) -> list[tuple[int, int, Path]]:
        out = []
        for p in self.dir.iterdir():
            m = _NAME_RE.match(p.name)
            if m:
                out.append((int(m.group(2), 16), int(m.group(1), 16), p))
        return sorted(out)

    def save(self, snap: Snapshot) -> Path:
        body = encode_snapshot(snap)
        data = _HEAD.pack(_MAGIC, SNAP_VERSION, zlib.crc32(body) & 0xFFFFFFFF) + body
        name = f"{snap.metadata.term:016x}-{snap.metadata.index:016x}.snap"
        path = self.dir / name
        tmp = self.dir / (name + ".tmp")
        self.disk.write_new(tmp, data)
        failpoint("snap_before_rename")
        self.disk.rename(tmp, path)
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
        self.disk.fsync_dir(self.dir)
        return gone
