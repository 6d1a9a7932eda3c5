"""Writing rendered files under a machine root, and saying what changed.

coreos-cloudinit re-applied the config on every boot. `plan(files, current)` is the pure
part: given what is on disk now (path → (content, mode, link)), which files are created,
changed or already right. `apply_to_root(root, files)` reads the current state, writes only
what differs (atomically: temp file + rename; symlinks replaced), and returns the plan.
It never writes outside `root`: paths are relative, cleaned, and every parent directory is
checked after resolving symlinks, so a symlink planted inside the root cannot redirect a
write elsewhere.
"""

from __future__ import annotations

import enum
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from corral.cloudinit._render import RenderedFile
from corral.cloudinit.errors import RenderError

__all__ = ["Change", "ChangeKind", "OnDisk", "apply_to_root", "plan"]


class ChangeKind(enum.Enum):
    CREATED = "created"
    CHANGED = "changed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class OnDisk:
    content: bytes
    mode: int
    link: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    path: str
    kind: ChangeKind
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind.value} {self.path}" + (f" ({self.detail})" if self.detail else "")


def plan(files: Iterable[RenderedFile], current: Mapping[str, OnDisk]) -> list[Change]:
    """What writing `files` over `current` would change (the last file for a path wins)."""
    latest: dict[str, RenderedFile] = {}
    for f in files:
        latest[f.path] = f
    out = []
    for path, f in latest.items():
        now = current.get(path)
        if now is None:
            out.append(Change(path, ChangeKind.CREATED))
            continue
        what = []
        if f.link is not None or now.link is not None:
            if f.link != now.link:
                what.append("link")
        else:
            if now.content != f.content:
                what.append("content")
            if now.mode != f.mode:
                what.append(f"mode {now.mode:04o} -> {f.mode:04o}")
        out.append(
            Change(path, ChangeKind.CHANGED if what else ChangeKind.UNCHANGED, ", ".join(what))
        )
    return out


def _target(root: Path, rel: str) -> Path:
    if not rel or rel.startswith("/") or ".." in rel.split("/"):
        raise RenderError(f"refusing path {rel!r}: not inside the machine root")
    path = root / rel
    parent = path.parent.resolve()
    if parent != root and root not in parent.parents:
        raise RenderError(f"refusing path {rel!r}: resolves outside the machine root")
    return path


def _read(path: Path) -> OnDisk | None:
    try:
        if path.is_symlink():
            return OnDisk(b"", 0o777, os.readlink(path))
        st = path.stat()
        return OnDisk(path.read_bytes(), st.st_mode & 0o7777)
    except FileNotFoundError:
        return None


def apply_to_root(root: Path, files: Iterable[RenderedFile]) -> list[Change]:
    """Write `files` under `root` where they differ; returns every file's Change."""
    root = root.resolve()
    files = list(files)
    current = {}
    for f in files:
        on_disk = _read(_target(root, f.path))
        if on_disk is not None:
            current[f.path] = on_disk
    changes = plan(files, current)
    by_path = {f.path: f for f in files}
    for change in changes:
        if change.kind is ChangeKind.UNCHANGED:
            continue
        f = by_path[change.path]
        path = _target(root, f.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _target(root, f.path)  # parents exist now: check them again, resolved
        if f.link is not None:
            if path.is_symlink() or path.exists():
                path.unlink()
            path.symlink_to(f.link)
            continue
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".corral-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(f.content)
            os.chmod(tmp, f.mode)
            if path.is_symlink():
                path.unlink()
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return changes
