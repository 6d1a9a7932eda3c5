"""The file/disk seam of the storage layer.

`OsDisk` is the real thing. `VolatileDisk` keeps every write that has not been fsynced in the
process's own memory and hands it to the OS only on fsync, so a kill -9 loses exactly what a
power cut would lose (kill -9 alone keeps the page cache, which proves nothing about fsync).
Its directory operations (rename, remove) likewise stay in memory until `fsync_dir` of the
directory that holds them, and a directory it creates leaves a marker in its parent until the
parent is fsynced: `recover` (run at boot, before anything is read) deletes the directories
whose marker is still there. So a name that was never made durable is gone after a crash, as
on a power cut. Select it with `CORRAL_DISK=volatile` (crash tests do).

Each fsync in the storage layer is there because a crash test fails without it
(tests/storage/test_fsync.py): nothing is synced "just in case".
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Protocol

__all__ = ["Disk", "DiskFile", "OsDisk", "VolatileDisk", "disk_from_env", "make_dirs"]

_UNSYNCED = ".corral-unsynced-mkdir."


class DiskFile(Protocol):
    def write(self, data: bytes) -> None: ...
    def fsync(self) -> None: ...
    def close(self) -> None: ...
    def truncate(self, size: int) -> None: ...


class Disk(Protocol):
    def open_append(self, path: Path, preallocate: int = 0) -> DiskFile: ...
    def create(self, path: Path) -> DiskFile: ...
    def rename(self, src: Path, dst: Path) -> None: ...
    def remove(self, path: Path) -> None: ...
    def mkdir(self, path: Path) -> None: ...
    def fsync_dir(self, path: Path) -> None: ...
    def recover(self, path: Path) -> None: ...


def make_dirs(disk: Disk, path: Path) -> None:
    """Create `path` and its missing parents, each name durable before the next level."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        disk.mkdir(d)
        disk.fsync_dir(d.parent)  # a new member's wal/ or snap/ must not vanish in a crash


class _OsFile:
    def __init__(self, path: Path, preallocate: int = 0, truncate: bool = False) -> None:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        self.fd = os.open(path, flags, 0o600)
        self.pos = os.lseek(self.fd, 0, os.SEEK_END)
        if preallocate and self.pos == 0:
            try:
                os.posix_fallocate(self.fd, 0, preallocate)
            except OSError:
                pass  # a filesystem without fallocate still works, just less smoothly

    def write(self, data: bytes) -> None:
        os.pwrite(self.fd, data, self.pos)
        self.pos += len(data)

    def fsync(self) -> None:
        os.fdatasync(self.fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.pos = min(self.pos, size)

    def close(self) -> None:
        os.close(self.fd)


class OsDisk:
    def open_append(self, path: Path, preallocate: int = 0) -> DiskFile:
        return _OsFile(path, preallocate)

    def create(self, path: Path) -> DiskFile:
        """A new empty file (an existing one is truncated)."""
        return _OsFile(path, truncate=True)

    def rename(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def mkdir(self, path: Path) -> None:
        path.mkdir(exist_ok=True)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def recover(self, path: Path) -> None:
        """Nothing to do: the real disk already lost what a crash lost."""


class _VolatileFile:
    def __init__(self, inner: _OsFile) -> None:
        self.inner = inner
        self.pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.pending.append(data)

    def fsync(self) -> None:
        if self.pending:
            self.inner.write(b"".join(self.pending))
            self.pending.clear()
        self.inner.fsync()

    def truncate(self, size: int) -> None:
        self.fsync()
        self.inner.truncate(size)

    def close(self) -> None:
        self.inner.close()  # what was not fsynced is dropped, as a power cut would


class VolatileDisk(OsDisk):
    """Unsynced data lives only in this process: a crash loses it, as power loss would."""

    def __init__(self) -> None:
        # Directory operations not yet made durable, by the directory holding them, in order.
        self.pending_dir_ops: dict[Path, list[tuple[str, Path, Path | None]]] = {}

    def open_append(self, path: Path, preallocate: int = 0) -> DiskFile:
        return _VolatileFile(_OsFile(path, preallocate))

    def create(self, path: Path) -> DiskFile:
        return _VolatileFile(_OsFile(path, truncate=True))

    def rename(self, src: Path, dst: Path) -> None:
        self.pending_dir_ops.setdefault(dst.parent.resolve(), []).append(("rename", src, dst))

    def remove(self, path: Path) -> None:
        self.pending_dir_ops.setdefault(path.parent.resolve(), []).append(("remove", path, None))

    def mkdir(self, path: Path) -> None:
        path.mkdir(exist_ok=True)
        # The marker is written now (it stands for the page cache a crash wipes out).
        (path.parent / (_UNSYNCED + path.name)).touch()

    def fsync_dir(self, path: Path) -> None:
        for op, a, b in self.pending_dir_ops.pop(path.resolve(), []):
            if op == "rename" and b is not None:
                os.replace(a, b)
            else:
                a.unlink(missing_ok=True)
        for marker in path.glob(_UNSYNCED + "*"):
            marker.unlink()
        super().fsync_dir(path)

    def recover(self, path: Path) -> None:
        """What a reboot finds: directories under `path` (or `path` itself) whose creation
        was never made durable are gone."""
        own = path.parent / (_UNSYNCED + path.name)  # the parent may hold other members' dirs
        markers = [own] if own.exists() else []
        if path.is_dir():
            markers += sorted(path.rglob(_UNSYNCED + "*"))
        for marker in markers:
            shutil.rmtree(marker.parent / marker.name[len(_UNSYNCED) :], ignore_errors=True)
            marker.unlink(missing_ok=True)


def disk_from_env() -> Disk:
    return VolatileDisk() if os.environ.get("CORRAL_DISK") == "volatile" else OsDisk()
