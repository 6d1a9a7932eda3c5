"""The file/disk seam of the storage layer.

`OsDisk` is the real thing. `VolatileDisk` keeps every write that has not been fsynced in the
process's own memory and hands it to the OS only on fsync, so a kill -9 loses exactly what a
power cut would lose (kill -9 alone keeps the page cache, which proves nothing about fsync).
Its directory operations (create, rename, remove) likewise become durable only on `fsync_dir`.
Select it with `CORRAL_DISK=volatile` (crash tests do).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

__all__ = ["Disk", "DiskFile", "OsDisk", "VolatileDisk", "disk_from_env"]


class DiskFile(Protocol):
    def write(self, data: bytes) -> None: ...
    def fsync(self) -> None: ...
    def close(self) -> None: ...
    def truncate(self, size: int) -> None: ...


class Disk(Protocol):
    def open_append(self, path: Path, preallocate: int = 0) -> DiskFile: ...
    def write_new(self, path: Path, data: bytes) -> None: ...
    def rename(self, src: Path, dst: Path) -> None: ...
    def remove(self, path: Path) -> None: ...
    def fsync_dir(self, path: Path) -> None: ...


class _OsFile:
    def __init__(self, path: Path, preallocate: int) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
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

    def write_new(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
        self.inner.close()


class VolatileDisk(OsDisk):
    """Unsynced data lives only in this process: a crash loses it, as power loss would."""

    def __init__(self) -> None:
        self.pending_dir_ops: list[tuple[str, Path, Path | None]] = []

    def open_append(self, path: Path, preallocate: int = 0) -> DiskFile:
        return _VolatileFile(_OsFile(path, preallocate))

    def write_new(self, path: Path, data: bytes) -> None:
        super().write_new(path, data)  # written and fsynced; its name is durable at fsync_dir

    def rename(self, src: Path, dst: Path) -> None:
        self.pending_dir_ops.append(("rename", src, dst))

    def remove(self, path: Path) -> None:
        self.pending_dir_ops.append(("remove", path, None))

    def fsync_dir(self, path: Path) -> None:
        ops, self.pending_dir_ops = self.pending_dir_ops, []
        for op, a, b in ops:
            if op == "rename" and b is not None:
                os.replace(a, b)
            else:
                a.unlink(missing_ok=True)
        super().fsync_dir(path)


def disk_from_env() -> Disk:
    return VolatileDisk() if os.environ.get("CORRAL_DISK") == "volatile" else OsDisk()
