"""A/B slots with boot counting: GRUB's gptprio algorithm as a pure core, plus a directory backend.

Theory of operation (project update reference §3)
-------------------------------------------------
Each slot carries three numbers, exactly as the GPT attribute bits of USR-A/USR-B do:
*priority* (0–15), *tries* (0–15) and *successful* (0/1).

1. **Boot** (`select_next`, GRUB `gptprio.next`): scan slots in table order; a candidate
   has `tries > 0 or successful`; keep it only if its priority is *strictly* greater than
   the best so far, which starts at 0 — so priority 0 never boots and ties go to the
   earlier slot. If the chosen slot has tries left, decrement them and persist the table
   *before* booting. No candidate → `SlotError("no such partition")`.
2. **Update installed** (`mark_updated`, postinst's `cgpt add -S0 -T1` + `cgpt
   prioritize`): the new slot gets successful 0, tries 1 and the top priority.
3. **Boot deemed good** (`mark_good`, `setgoodroot`'s `cgpt add -S1 -T0` + prioritize).
4. **Rollback** is never being marked good: after its one try the new slot is
   ineligible and the next boot picks the old, successful slot. Nothing is erased.

`prioritize` is `cgpt prioritize`: group the other slots by priority, put the target in a
new top group, renumber groups from `min(#groups, 15)` downwards, never below 1; slots at
priority 0 stay 0.

Backends store the table as versioned JSON (naming the backend) and replace it atomically.
`DirectorySlots` keeps each slot as a release tree (written beside it, swapped in by
rename); `ImageSlots` keeps each slot as one image file (the verified payload, replaced
atomically) and unpacks it, checked, when the slot boots. The `SlotBackend` protocol is
what a block-device backend would implement.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from corral.update.errors import SlotError, UpdateError
from corral.update.payload import extract_payload, read_manifest

__all__ = [
    "BACKENDS",
    "SLOT_TABLE_FORMAT",
    "DirectorySlots",
    "ImageSlots",
    "SlotAttrs",
    "SlotBackend",
    "SlotTable",
    "initial_table",
    "mark_good",
    "mark_updated",
    "open_slots",
    "other_slot",
    "prioritize",
    "select_next",
]

SLOT_TABLE_FORMAT = 1
MAX_FIELD = 15


@dataclass(frozen=True, slots=True)
class SlotAttrs:
    priority: int = 0
    tries: int = 0
    successful: bool = False

    def __post_init__(self) -> None:
        if not (0 <= self.priority <= MAX_FIELD and 0 <= self.tries <= MAX_FIELD):
            raise SlotError(f"slot attributes out of range: {self}")

    @property
    def bootable(self) -> bool:
        return self.tries > 0 or self.successful


@dataclass(frozen=True, slots=True)
class SlotTable:
    """Slots in table (partition) order."""

    slots: tuple[tuple[str, SlotAttrs], ...]

    def get(self, name: str) -> SlotAttrs:
        for slot, attrs in self.slots:
            if slot == name:
                return attrs
        raise SlotError(f"no slot named {name!r}")

    def with_slot(self, name: str, attrs: SlotAttrs) -> SlotTable:
        self.get(name)
        return SlotTable(tuple((s, attrs if s == name else a) for s, a in self.slots))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.slots)


def initial_table(names: tuple[str, ...] = ("a", "b")) -> SlotTable:
    """The image as built: first slot `S1 P1`, the others all zero."""
    return SlotTable(
        tuple((n, SlotAttrs(1, 0, True) if i == 0 else SlotAttrs()) for i, n in enumerate(names))
    )


def select_next(table: SlotTable) -> tuple[str, SlotTable]:
    """GRUB `gptprio.next`: the slot to boot and the table to persist before booting."""
    best: str | None = None
    best_priority = 0
    for name, attrs in table.slots:
        if attrs.bootable and attrs.priority > best_priority:
            best, best_priority = name, attrs.priority
    if best is None:
        raise SlotError("no such partition: no slot has tries left or is marked successful")
    chosen = table.get(best)
    if chosen.tries > 0:
        table = table.with_slot(best, replace(chosen, tries=chosen.tries - 1))
    return best, table


def prioritize(table: SlotTable, target: str) -> SlotTable:
    """`cgpt prioritize`: target on top, other priority groups renumbered below it."""
    table.get(target)
    groups = sorted({a.priority for n, a in table.slots if n != target and a.priority > 0},
                    reverse=True)
    top = min(len(groups) + 1, MAX_FIELD)
    renumber = {p: max(top - 1 - i, 1) for i, p in enumerate(groups)}
    out = []
    for name, attrs in table.slots:
        if name == target:
            out.append((name, replace(attrs, priority=top)))
        elif attrs.priority > 0:
            out.append((name, replace(attrs, priority=renumber[attrs.priority])))
        else:
            out.append((name, attrs))
    return SlotTable(tuple(out))


def mark_updated(table: SlotTable, name: str) -> SlotTable:
    """postinst: `cgpt add -S0 -T1 <new>; cgpt prioritize <new>`."""
    table = table.with_slot(name, replace(table.get(name), successful=False, tries=1))
    return prioritize(table, name)


def mark_good(table: SlotTable, name: str) -> SlotTable:
    """setgoodroot: `cgpt add -S1 -T0 <running>; cgpt prioritize <running>`."""
    table = table.with_slot(name, replace(table.get(name), successful=True, tries=0))
    return prioritize(table, name)


def other_slot(table: SlotTable, name: str) -> str:
    """The install target: the slot that is not running (update_engine `GetInstallDev`)."""
    others = [n for n in table.names if n != name]
    if not others:
        raise SlotError("no inactive slot to install into")
    return others[0]


# --------------------------------------------------------------------------- backends


class SlotBackend(Protocol):
    """Where slots live. A block-device backend implements the same five calls."""

    kind: str

    def read_table(self) -> SlotTable: ...

    def write_table(self, table: SlotTable) -> None: ...

    def write_slot(self, name: str, payload: bytes) -> None: ...

    def mount(self, name: str) -> Path: ...

    def slot_version(self, name: str) -> str | None: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _TableFile:
    """The slot table as versioned JSON (`<dir>/table.json`), replaced atomically."""

    kind = ""

    def __init__(self, directory: Path, names: tuple[str, ...] = ("a", "b")) -> None:
        self.directory = directory
        self.names = names
        self.table_path = directory / "table.json"

    def _check(self, name: str) -> None:
        if name not in self.names:
            raise SlotError(f"no slot named {name!r}")

    def ensure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.table_path.exists():
            self.write_table(initial_table(self.names))

    def read_table(self) -> SlotTable:
        try:
            doc = json.loads(self.table_path.read_text())
            if doc.get("format") != SLOT_TABLE_FORMAT:
                raise SlotError(f"unsupported slot table format {doc.get('format')!r}")
            return SlotTable(
                tuple(
                    (s["name"], SlotAttrs(int(s["priority"]), int(s["tries"]),
                                          bool(s["successful"])))
                    for s in doc["slots"]
                )
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SlotError(f"cannot read slot table {self.table_path}: {exc}") from None

    def write_table(self, table: SlotTable) -> None:
        doc = {
            "format": SLOT_TABLE_FORMAT,
            "backend": self.kind,
            "slots": [
                {"name": n, "priority": a.priority, "tries": a.tries,
                 "successful": a.successful}
                for n, a in table.slots
            ],
        }
        tmp = self.table_path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.table_path)
        _fsync_dir(self.directory)


class DirectorySlots(_TableFile):
    """Slots as directories `<dir>/<name>/` holding the release tree."""

    kind = "directory"

    def slot_path(self, name: str) -> Path:
        self._check(name)
        return self.directory / name

    def write_slot(self, name: str, payload: bytes) -> None:
        """Extract beside the slot, then swap it in with renames."""
        target = self.slot_path(name)
        staging = self.directory / f".{name}.new"
        old = self.directory / f".{name}.old"
        for leftover in (staging, old):
            shutil.rmtree(leftover, ignore_errors=True)
        extract_payload(payload, staging)
        if target.exists():
            os.rename(target, old)
        os.rename(staging, target)
        _fsync_dir(self.directory)
        shutil.rmtree(old, ignore_errors=True)

    def mount(self, name: str) -> Path:
        return self.slot_path(name)

    def slot_version(self, name: str) -> str | None:
        try:
            doc = json.loads((self.slot_path(name) / "release.json").read_text())
            return str(doc["version"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


class ImageSlots(_TableFile):
    """Slots as image files `<dir>/<name>.img` (the verified payload itself).

    Booting a slot "mounts" it: the image is unpacked afresh into `<dir>/.mnt/<name>/`,
    every file checked against the image's `release.json`, so a damaged image cannot boot.
    """

    kind = "image"

    def image_path(self, name: str) -> Path:
        self._check(name)
        return self.directory / f"{name}.img"

    def write_slot(self, name: str, payload: bytes) -> None:
        path = self.image_path(name)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.directory)

    def mount(self, name: str) -> Path:
        try:
            data = self.image_path(name).read_bytes()
        except OSError as exc:
            raise SlotError(f"slot {name} has no image: {exc.strerror}") from None
        target = self.directory / ".mnt" / name
        shutil.rmtree(target, ignore_errors=True)
        try:
            extract_payload(data, target)
        except UpdateError as exc:
            raise SlotError(f"slot {name} image is damaged: {exc}") from None
        return target

    def slot_version(self, name: str) -> str | None:
        try:
            return read_manifest(self.image_path(name).read_bytes()).version
        except (OSError, UpdateError):
            return None


BACKENDS: dict[str, type[DirectorySlots] | type[ImageSlots]] = {
    DirectorySlots.kind: DirectorySlots,
    ImageSlots.kind: ImageSlots,
}


def open_slots(directory: Path, kind: str | None = None) -> DirectorySlots | ImageSlots:
    """The backend recorded in `table.json` (or `kind` for a new slot directory)."""
    recorded = None
    try:
        recorded = json.loads((directory / "table.json").read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        pass
    chosen = recorded or kind or DirectorySlots.kind
    if kind is not None and recorded is not None and kind != recorded:
        raise SlotError(f"slots in {directory} use the {recorded} backend, not {kind}")
    if chosen not in BACKENDS:
        raise SlotError(f"unknown slot backend {chosen!r} (choose from {sorted(BACKENDS)})")
    return BACKENDS[chosen](directory)
