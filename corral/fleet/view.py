"""A registry subtree kept in memory from a recursive watch (pure: no I/O, no clock).

fleet re-read all of ``job/`` on every reconcile (fleet reference §1.2, "``Units()`` reads all
of ``P/job``"), so with M agents each change costs M full reads of the tree. A careful
follower reads the subtree once, then applies the events of a recursive v2 watch started at
the read's ``X-Etcd-Index + 1`` (etcd v2 API: "watch from the index after the one in the
read's header" never misses nor repeats an event). When the watch falls behind the store's
event history (error 401 ``EventIndexCleared``) the subtree is read again and the view is
replaced (:meth:`TreeView.reset`).

The view is the set of leaf keys under ``root`` with their values, grouped by the first path
component below the root (a job, a machine), which is what the decoders work on:

* ``set create update compareAndSwap`` store a leaf (a ``dir`` node stores nothing: fleet's
  decoders ignore empty directories, as a fresh read would show nothing under them);
* ``delete expire compareAndDelete`` remove the key and everything below it (a recursive
  delete of a directory is a single event on the directory);
* an event whose index is not above the view's index is ignored, so a view that was reset
  from a newer read is not set back by older events still in flight.

:class:`JobsView` adds fleet's unit decoding of ``job/<unit>`` entries, memoized per job and
redone only for jobs touched since the last call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from corral.fleet.errors import RegistryFormatError
from corral.fleet.registry import JobState, RegistryUnit, decode_job_object
from corral.fleet.unitfile import UnitFile

__all__ = [
    "DELETE_ACTIONS",
    "SET_ACTIONS",
    "JobsView",
    "TreeView",
    "WatchEvent",
    "flatten",
    "overlay_targets",
]

SET_ACTIONS = frozenset({"set", "create", "update", "compareAndSwap"})
DELETE_ACTIONS = frozenset({"delete", "expire", "compareAndDelete"})


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One v2 watch notification, reduced to what the view needs."""

    action: str
    key: str
    modified_index: int
    value: str | None = None
    dir: bool = False


def flatten(node: Mapping[str, Any] | None) -> Iterator[tuple[str, str]]:
    """(key, value) of every leaf in a v2 node tree (``{"key","value","dir","nodes"}``)."""
    if node is None:
        return
    stack = [node]
    while stack:
        n = stack.pop()
        if n.get("dir"):
            stack.extend(n.get("nodes") or [])
        else:
            yield str(n["key"]), str(n.get("value") or "")


class TreeView:
    """The leaves under ``root`` as of etcd index :attr:`index`."""

    def __init__(self, root: str) -> None:
        self.root = "/" + root.strip("/")
        self.index = 0
        # first component below root → {rest of the path ("" for a leaf at that level): value}
        self.groups: dict[str, dict[str, str]] = {}
        self.dirty: set[str] = set()  # groups changed since the consumer last looked
        self.last_groups: set[str] = set()  # groups the last applied event touched
        self.resets = 0

    # --- reading ------------------------------------------------------------------------------

    def leaves(self) -> dict[str, str]:
        """Full key → value, the shape :func:`flatten` gives for a fresh read."""
        out: dict[str, str] = {}
        for child, group in self.groups.items():
            base = f"{self.root}/{child}"
            for rest, value in group.items():
                out[f"{base}/{rest}" if rest else base] = value
        return out

    def group_node(self, child: str) -> dict[str, Any] | None:
        """One group as a v2 node tree (what a recursive GET of ``root/child`` answers,
        leaves only), for the registry's decoders."""
        group = self.groups.get(child)
        if group is None:
            return None
        base = f"{self.root}/{child}"
        if "" in group:
            return {"key": base, "value": group[""]}
        top: dict[str, Any] = {"key": base, "dir": True, "nodes": []}
        dirs: dict[str, dict[str, Any]] = {"": top}
        for rest in sorted(group):
            parts = rest.split("/")
            parent = top
            for i in range(1, len(parts)):
                sub = "/".join(parts[:i])
                node = dirs.get(sub)
                if node is None:
                    node = {"key": f"{base}/{sub}", "dir": True, "nodes": []}
                    parent["nodes"].append(node)
                    dirs[sub] = node
                parent = node
            parent["nodes"].append({"key": f"{base}/{rest}", "value": group[rest]})
        return top

    def tree(self) -> dict[str, Any]:
        """The whole view as a v2 directory node."""
        nodes = [self.group_node(c) for c in sorted(self.groups)]
        return {"key": self.root, "dir": True, "nodes": [n for n in nodes if n is not None]}

    # --- writing ------------------------------------------------------------------------------

    def _split(self, key: str) -> tuple[str, str] | None:
        """(group, rest) of a key below root; ("", "") for root itself; None if outside."""
        key = "/" + key.strip("/")
        if key == self.root:
            return "", ""
        if not key.startswith(self.root + "/"):
            return None
        child, _, rest = key[len(self.root) + 1 :].partition("/")
        return child, rest

    def reset(self, leaves: Iterable[tuple[str, str]], index: int) -> set[str]:
        """Replace the view by a fresh read taken at etcd index ``index`` (its leaves, as
        :func:`flatten` gives them); returns the groups whose content changed (only those
        are marked dirty)."""
        groups: dict[str, dict[str, str]] = {}
        for key, value in leaves:
            where = self._split(key)
            if where is None or not where[0]:
                continue
            child, rest = where
            groups.setdefault(child, {})[rest] = value
        changed = {
            c for c in self.groups.keys() | groups.keys() if self.groups.get(c) != groups.get(c)
        }
        self.groups = groups
        self.dirty |= changed
        self.index = max(self.index, index)
        self.resets += 1
        return changed

    def apply(self, ev: WatchEvent) -> bool:
        """Apply one event; False if it was ignored (old, outside the root, or a no-op
        action such as ``get``). :attr:`last_groups` names the groups it touched."""
        self.last_groups = set()
        if ev.modified_index <= self.index:
            return False
        where = self._split(ev.key)
        if where is None:
            return False
        self.index = ev.modified_index
        child, rest = where
        if ev.action in SET_ACTIONS:
            if ev.dir or not child:
                return True  # a directory holds no leaf until a key is written in it
            self.groups.setdefault(child, {})[rest] = ev.value or ""
            self.last_groups = {child}
        elif ev.action in DELETE_ACTIONS:
            if not child:  # the root itself went away
                self.last_groups = set(self.groups)
                self.groups = {}
            elif child in self.groups:
                self.last_groups = {child}
                group = self.groups[child]
                prefix = rest + "/"
                for k in [k for k in group if not rest or k == rest or k.startswith(prefix)]:
                    del group[k]
                if not group:
                    del self.groups[child]
        else:
            return False
        self.dirty |= self.last_groups
        return True


@lru_cache(maxsize=65536)
def _job_object(value: str) -> tuple[str, bytes]:
    # a pure decode, memoized: every machine's view holds the same job objects
    return decode_job_object(value)


@dataclass(frozen=True, slots=True)
class _Decoded:
    unit: RegistryUnit | None
    problem: str = ""
    missing: str = ""  # blob hash not known yet (retried on the next call)


class JobsView(TreeView):
    """``job/`` followed by a watch, decoded into fleet's units (``Registry.Units``)."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self._decoded: dict[str, _Decoded] = {}

    def units(
        self, blobs: Mapping[str, UnitFile]
    ) -> tuple[list[RegistryUnit], list[str], set[str]]:
        """(units sorted by name, problems, blob hashes the caller should fetch).

        Same answer as :func:`corral.fleet.registry.decode_units` on a fresh read of
        ``job/`` with ``blobs`` as the unit blobs."""
        for child in self.dirty:
            self._decoded.pop(child, None)
        self.dirty = set()
        units: list[RegistryUnit] = []
        problems: list[str] = []
        missing: set[str] = set()
        for child in sorted(self.groups):
            d = self._decoded.get(child)
            if d is None or (d.missing and d.missing in blobs):
                d = self._decode(child, blobs)
                self._decoded[child] = d
            if d.unit is not None:
                units.append(d.unit)
            elif d.problem:
                problems.append(d.problem)
            if d.missing:
                missing.add(d.missing)
        for gone in [c for c in self._decoded if c not in self.groups]:
            del self._decoded[gone]
        units.sort(key=lambda u: u.name)
        return units, problems, missing

    def _decode(self, child: str, blobs: Mapping[str, UnitFile]) -> _Decoded:
        vals = {k: v for k, v in self.groups[child].items() if "/" not in k}
        if "object" not in vals:
            return _Decoded(None)
        try:
            name, digest = _job_object(vals["object"])
            state = JobState.parse(vals.get("target-state") or "inactive")
        except RegistryFormatError as exc:
            return _Decoded(None, f"job {child}: {exc}")
        unit = blobs.get(digest.hex())
        if unit is None:
            return _Decoded(
                None, f"No Unit found in Registry for Job({name})", missing=digest.hex()
            )
        return _Decoded(
            RegistryUnit(name, unit, state, vals.get("target", ""), vals.get("job-state", ""))
        )


def overlay_targets(
    units: list[RegistryUnit], writes: Mapping[str, tuple[str, int]], index: int
) -> tuple[list[RegistryUnit], dict[str, tuple[str, int]]]:
    """The engine reads its own scheduling writes before its view does.

    ``writes`` maps a unit to (machine it was scheduled to, "" if unscheduled; etcd index
    of that write). A write newer than the view's ``index`` is newer than anything the view
    holds for that key, so it replaces the unit's target; writes the view already reflects
    are dropped. Returns (units, the writes still ahead of the view)."""
    ahead = {u: w for u, w in writes.items() if w[1] > index}
    if not ahead:
        return units, ahead
    out = [
        RegistryUnit(u.name, u.unit, u.target_state, ahead[u.name][0], u.heartbeat)
        if u.name in ahead
        else u
        for u in units
    ]
    return out, ahead
