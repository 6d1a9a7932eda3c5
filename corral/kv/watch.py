"""Watch machinery of the v2 keyspace (pure): the 1000-event history and the watcher hub.

Theory of operation (etcd 3.4 `v2store/event_history.go`, `watcher_hub.go`, `watcher.go`;
reference §7):

* Every index produces exactly one event, so the history is a ring of the last
  `capacity` events with contiguous indexes `start_index..last_index`; the event for index
  `i` sits at offset `i - start_index`.
* `EventHistory.scan(key, recursive, since)` answers a watch from the past: since <
  start_index → 401 with cause ``the requested history has been cleared [<start>/<since>]``;
  since > last_index → None (wait for the future); else the first non-refresh, non-internal
  event from `since` on whose key equals `key`, or (recursive) starts with ``key + "/"``, or
  which deleted/expired a dir whose key is a *string* prefix of `key` (etcd's quirk: deleting
  ``/a`` answers a history watch on ``/ab``). Hidden keys are not filtered here.
* `WatcherHub.notify(event)` fires live watchers. For a delete/expire, first every removed
  path (`event.removed`, the order etcd's `node.Remove` calls back in) with *deleted* set, then
  every prefix of the event key from "/" down to the key itself. A watcher on path W fires when
  ``event.index >= since`` and (W is the event key, or the watcher is recursive and no path
  component of the key below W starts with "_", or W was deleted). Non-stream watchers are
  removed when they fire; stream watchers stay, so one on a deleted key fires twice for that
  delete, exactly as etcd 3.4 does (checked against it). Refresh and internal events never fire.
* Cost of a write: one dict lookup per component of the key (plus one per removed path), and
  work proportional to the watchers found there, never to all watchers. `lists_visited`
  counts the lookups so tests can prove it.

Nothing here does I/O: a `Watcher` carries an opaque `sink` the shell gave it, and `notify`
returns the watchers that fired; delivering the event (and dropping slow streams) is the shell's.
"""

from __future__ import annotations

from typing import Any

from corral.kv.errors import EventIndexCleared
from corral.kv.events import Action, Event

__all__ = ["HISTORY_CAPACITY", "EventHistory", "Watcher", "WatcherHub"]

#: etcd keeps the last 1000 events.
HISTORY_CAPACITY = 1000


class EventHistory:
    """Ring of the last `capacity` events, indexed by etcd index."""

    __slots__ = ("_events", "_head", "capacity", "last_index", "start_index")

    def __init__(self, capacity: int = HISTORY_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("history capacity must be at least 1")
        self.capacity = capacity
        self._events: list[Event] = []
        self._head = 0  # position of the oldest event once the ring is full
        self.start_index = 0
        self.last_index = 0

    def __len__(self) -> int:
        return len(self._events)

    def add(self, event: Event) -> None:
        """Append the event of the next index (dropping the oldest when full)."""
        events = self._events
        if len(events) < self.capacity:
            events.append(event)
        else:
            events[self._head] = event
            self._head = (self._head + 1) % self.capacity
        self.last_index = event.index
        self.start_index = events[self._head].index

    def events(self) -> list[Event]:
        """The events, oldest first."""
        return self._events[self._head :] + self._events[: self._head]

    def scan(self, key: str, recursive: bool, since: int, *, index: int = 0) -> Event | None:
        """The first event at or after `since` a watch on `key` sees (see module docstring).

        Raises EventIndexCleared (its `index` = `index`, the caller's current etcd index).
        """
        if since < self.start_index:
            raise EventIndexCleared(
                f"the requested history has been cleared [{self.start_index}/{since}]", index
            )
        if since > self.last_index:
            return None
        events = self._events
        n = len(events)
        prefix = key if key.endswith("/") else key + "/"
        pos = (self._head + since - self.start_index) % n
        for _ in range(self.last_index - since + 1):
            e = events[pos]
            pos += 1
            if pos == n:
                pos = 0
            if e.refresh or e.internal:
                continue
            ekey = e.node.key
            if ekey == key or (recursive and ekey.startswith(prefix)):
                return e
            prev = e.prev_node
            if (
                prev is not None
                and prev.dir
                and e.action in (Action.DELETE, Action.EXPIRE)
                and key.startswith(prev.key)
            ):
                return e
        return None


class Watcher:
    """One registered watch. `sink` belongs to the shell (a queue, a response, ...)."""

    __slots__ = ("key", "recursive", "removed", "since_index", "sink", "start_index", "stream")

    def __init__(
        self,
        key: str,
        recursive: bool,
        stream: bool,
        since_index: int,
        sink: Any,
        start_index: int = 0,
    ) -> None:
        self.key = key
        self.recursive = recursive
        self.stream = stream
        self.since_index = since_index
        self.sink = sink
        #: the etcd index when the watch was registered (the answer's X-Etcd-Index)
        self.start_index = start_index
        #: set once the hub no longer holds the watcher
        self.removed = False

    def __repr__(self) -> str:
        return (
            f"Watcher(key={self.key!r}, recursive={self.recursive}, stream={self.stream}, "
            f"since={self.since_index})"
        )


class WatcherHub:
    """Watchers by key path; `notify` finds the ones an event fires."""

    __slots__ = ("_watchers", "count", "lists_visited")

    def __init__(self) -> None:
        self._watchers: dict[str, list[Watcher]] = {}
        #: registered watchers (etcd's `watchers` store stat)
        self.count = 0
        #: watcher-list lookups made by `notify` so far (cost accounting for tests)
        self.lists_visited = 0

    def add(
        self,
        key: str,
        recursive: bool,
        stream: bool,
        since: int,
        sink: Any,
        *,
        start_index: int = 0,
    ) -> Watcher:
        """Register a live watcher on `key` for events with index >= `since`."""
        w = Watcher(key, recursive, stream, since, sink, start_index)
        self._watchers.setdefault(key, []).append(w)
        self.count += 1
        return w

    def remove(self, watcher: Watcher) -> None:
        """Unregister (a client went away). Removing twice is harmless."""
        if watcher.removed:
            return
        watcher.removed = True
        lst = self._watchers.get(watcher.key)
        if lst is None:
            return
        try:
            lst.remove(watcher)
        except ValueError:
            return
        self.count -= 1
        if not lst:
            del self._watchers[watcher.key]

    def watched_paths(self) -> int:
        """How many distinct paths have watchers."""
        return len(self._watchers)

    def notify(self, event: Event) -> list[Watcher]:
        """The watchers `event` fires, in etcd's order; non-stream ones are unregistered."""
        if event.refresh or event.internal:
            return []
        fired: list[Watcher] = []
        watchers = self._watchers
        key = event.node.key
        index = event.index
        for path in event.removed:
            self.lists_visited += 1
            lst = watchers.get(path)
            if lst:
                self._fire(path, lst, index, path == key, True, fired)
        if not watchers:
            return fired
        # Walk "/", "/a", "/a/b", ..., the key. A recursive watcher on a proper prefix W does
        # not see the event when a component of the key below W starts with "_".
        end = 0
        while True:
            path = "/" if end == 0 else key[:end] if end > 0 else key
            self.lists_visited += 1
            lst = watchers.get(path)
            if lst:
                original = path == key
                if original or "/_" not in (key if end == 0 else key[end:]):
                    self._fire(path, lst, index, original, False, fired)
            if end < 0 or key == "/":
                break
            end = key.find("/", end + 1)
        return fired

    def _fire(
        self,
        path: str,
        lst: list[Watcher],
        index: int,
        original: bool,
        deleted: bool,
        fired: list[Watcher],
    ) -> None:
        keep: list[Watcher] = []
        for w in lst:
            if (w.recursive or original or deleted) and index >= w.since_index:
                fired.append(w)
                if not w.stream:
                    w.removed = True
                    self.count -= 1
                    continue
            keep.append(w)
        if len(keep) != len(lst):
            if keep:
                lst[:] = keep
            else:
                del self._watchers[path]
