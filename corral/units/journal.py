"""A journal per unit: timestamped lines in a bounded file (the `journalctl -u` subset).

Format (version 1): one line per record, `<ISO-8601 UTC timestamp> <identifier>[<pid>]: <text>`,
in `<journal dir>/<unit>.log`. When a file grows past `max_bytes` it is renamed to
`<unit>.log.1` (replacing the older one), so a unit never uses more than about twice
`max_bytes` on disk. Reading the last N lines looks at both files.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

__all__ = ["JOURNAL_FORMAT_VERSION", "Journal"]

JOURNAL_FORMAT_VERSION = 1


class Journal:
    def __init__(self, directory: Path, max_bytes: int = 1 << 20, create: bool = True) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        if create:  # readers (the CLI) pass create=False and never write
            directory.mkdir(parents=True, exist_ok=True)
            marker = directory / "VERSION"
            if not marker.exists():
                marker.write_text(f"{JOURNAL_FORMAT_VERSION}\n")

    def path(self, unit: str) -> Path:
        return self.directory / f"{unit}.log"

    def write(
        self, unit: str, identifier: str, pid: int | None, text: str, when: float | None = None
    ) -> None:
        stamp = dt.datetime.fromtimestamp(when if when is not None else time.time(), dt.UTC)
        who = f"{identifier}[{pid}]" if pid else identifier
        path = self.path(unit)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        pending: list[bytes] = []
        for line in text.splitlines() or [""]:
            record = f"{stamp.isoformat(timespec='microseconds')} {who}: {line}"
            data = record.encode(errors="replace")[: max(self.max_bytes - 1, 1)] + b"\n"
            if size and size + len(data) > self.max_bytes:
                self._append(path, pending)
                pending = []
                os.replace(path, path.with_name(path.name + ".1"))
                size = 0
            pending.append(data)
            size += len(data)
        self._append(path, pending)

    @staticmethod
    def _append(path: Path, chunks: list[bytes]) -> None:
        if chunks:
            with path.open("ab") as f:
                f.write(b"".join(chunks))

    def tail(self, unit: str, n: int | None = None) -> list[str]:
        """The last `n` lines (all if None), oldest first."""
        path = self.path(unit)
        out: deque[str] = deque(maxlen=n) if n is not None else deque()
        if n == 0:
            return []
        for p in (path.with_name(path.name + ".1"), path):
            try:
                with p.open(encoding="utf-8", errors="replace") as f:
                    for line in f:
                        out.append(line.rstrip("\n"))
            except FileNotFoundError:
                continue
        return list(out)

    def follow(
        self, unit: str, poll: float = 0.2, stop_after: float | None = None
    ) -> Iterator[str]:
        """New lines as they are written (blocking; for `corral units journal -f`)."""
        path = self.path(unit)
        deadline = None if stop_after is None else time.monotonic() + stop_after
        pos = path.stat().st_size if path.exists() else 0
        buf = b""
        while deadline is None or time.monotonic() < deadline:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size < pos:
                pos = 0  # rotated
            if size > pos:
                with path.open("rb") as f:
                    f.seek(pos)
                    buf += f.read()
                    pos = f.tell()
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            else:
                time.sleep(poll)
