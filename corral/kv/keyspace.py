"""The etcd v2 keyspace as a pure, deterministic state machine.

Rulebook (etcd 3.4 `etcdserver/api/v2store/store.go`, `node.go`; reference §3, §5, §6):

1. The tree holds files (a string value) and directories. The root "/" is a directory with
   indexes 0 that no write may target (107) except POST, which creates children of it.
2. `index` is etcd's store index. Every successful write, every refresh, every expired node
   and every internal write adds exactly 1 and produces exactly one event, which enters the
   1000-event history (`self.history`). Failed commands change nothing but the stats.
3. `Set` replaces the node (new createdIndex), may turn a file into a dir, never replaces a
   dir (102). `Update`/`CompareAndSwap` keep createdIndex and *replace* the TTL (None makes the
   node permanent). A directory's stored modifiedIndex never changes (etcd's `node.Write`
   fails silently on dirs), though the update event shows the new index.
4. Missing parent dirs are created by every write, with the write's index. An ancestor that
   is a file is 104 with the file's key as cause; a missing key is 100 with the first missing
   component as cause; errors carry `index` = the current index.
5. Time is data: commands carry `now` and `expire_at`; `apply` never reads a clock. Nodes
   expire only through `Sync(now)`, which removes every node with `expire_at <= now` in
   (expire_at, key) order, one index and one `expire` event each; a dir takes its subtree.
6. Refreshes (`refresh=True`) keep the value, set the TTL, take an index and enter the history
   flagged `refresh`, so scans skip them and watchers never see them.
7. Names starting with "_" are hidden from listings at any depth, but can be read by name.
8. Listings keep insertion order unless `sorted`, which sorts by full key at every level.
9. Validation order per operation is etcd's: root check first (where etcd has one), then the
   lookup (100/104), then type checks (102/108), then comparisons (101).

`apply` returns the events; delivering them to watchers is the shell's job: it calls
`keyspace.hub.notify(event)` for each returned event and hands the event to the sinks of the
watchers that fired. Counters in `stats` are local to the member (not replicated, not in
snapshots). A snapshot holds the tree, the index, etcd's hidden-namespace values and the
history, versioned (msgpack); `restore(snapshot())` gives an identical keyspace, and
`recover(snapshot)` installs one in place keeping live watchers and stats (etcd's `Recovery`).

Backward-compatible additions to the keyspace contract shared with the HTTP layer:
`get(..., now=)` stamps a read's clock for its ttl; `render_event(event, now=None,
no_value=False)` renders write events with their own apply-time clock (etcd freezes a ttl
when the event is made) and caches their bytes; an event answered by `watch` from history
carries `etcd_index` = the current index; `Event.removed` lists the paths a delete/expire
removed; `Watcher.start_index` is the index at registration; `EventHistory.scan(...,
index=)` sets the 401's index; `recover`; `internal_value(key)`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import msgpack

from corral.kv.commands import (
    Command,
    CompareAndDelete,
    CompareAndSwap,
    Create,
    Delete,
    InternalChange,
    InternalWrite,
    Set,
    Sync,
    Update,
)
from corral.kv.errors import (
    CompareFailed,
    DirectoryNotEmpty,
    FormatError,
    KeyNotFound,
    NodeExists,
    NotADirectory,
    NotAFile,
    RootReadOnly,
    V2Error,
)
from corral.kv.events import Action, Event, Node
from corral.kv.watch import HISTORY_CAPACITY, EventHistory, Watcher, WatcherHub

__all__ = ["SNAPSHOT_VERSION", "Keyspace", "StoreStats", "clean_key"]

#: Version of the snapshot encoding.
SNAPSHOT_VERSION = 1


def clean_key(key: str) -> str:
    """Go's `path.Clean(path.Join("/", key))`: rooted, no empty/./.. parts, no trailing "/"."""
    if key.startswith("/") and "//" not in key and "/." not in key and not key.endswith("/"):
        return key
    if key in ("", "/"):
        return "/"
    out: list[str] = []
    for part in key.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return "/" + "/".join(out)


class _Node:
    """A mutable tree node (internal). `children` is None for files."""

    __slots__ = (
        "alive",
        "children",
        "created",
        "expire_at",
        "ext",
        "modified",
        "name",
        "path",
        "value",
    )

    def __init__(
        self,
        path: str,
        name: str,
        value: str | None,
        children: dict[str, _Node] | None,
        created: int,
        modified: int,
        expire_at: int | None,
    ) -> None:
        self.path = path
        self.name = name
        self.value = value
        self.children = children
        self.created = created
        self.modified = modified
        self.expire_at = expire_at
        self.alive = True
        self.ext: Node | None = None  # cached repr(); reset whenever a shown field changes

    @property
    def is_dir(self) -> bool:
        return self.children is not None

    def repr(self) -> Node:
        """The node without its children (etcd's `Repr(false, false)`)."""
        ext = self.ext
        if ext is None:
            if self.children is not None:
                ext = Node(self.path, None, True, self.expire_at, None, self.modified, self.created)
            else:
                ext = Node(
                    self.path, self.value, False, self.expire_at, None, self.modified, self.created
                )
            self.ext = ext
        return ext


class StoreStats:
    """etcd's `/v2/stats/store` counters (local to the member)."""

    FIELDS = (
        "getsSuccess",
        "getsFail",
        "setsSuccess",
        "setsFail",
        "deleteSuccess",
        "deleteFail",
        "updateSuccess",
        "updateFail",
        "createSuccess",
        "createFail",
        "compareAndSwapSuccess",
        "compareAndSwapFail",
        "compareAndDeleteSuccess",
        "compareAndDeleteFail",
        "expireCount",
    )

    __slots__ = ("_hub", "counts")

    def __init__(self, hub: WatcherHub) -> None:
        self._hub = hub
        self.counts: dict[str, int] = dict.fromkeys(self.FIELDS, 0)

    def inc(self, name: str, by: int = 1) -> None:
        self.counts[name] += by

    def __getitem__(self, name: str) -> int:
        if name == "watchers":
            return self._hub.count
        return self.counts[name]

    @property
    def watchers(self) -> int:
        return self._hub.count

    def to_json(self) -> dict[str, int]:
        """The counters in etcd's order, `watchers` last."""
        out = dict(self.counts)
        out["watchers"] = self._hub.count
        return out


_WRITE_STATS: dict[type[Any], str] = {
    Set: "sets",
    Create: "create",
    Update: "update",
    CompareAndSwap: "compareAndSwap",
    Delete: "delete",
    CompareAndDelete: "compareAndDelete",
    InternalWrite: "sets",
}


class Keyspace:
    """etcd's v2 store: `apply(command) -> events`, `get`, `watch`, snapshots. No I/O, no clock."""

    def __init__(self, *, history_capacity: int = HISTORY_CAPACITY) -> None:
        self.index = 0
        self._root = _Node("/", "", None, {}, 0, 0, None)
        self._internal: dict[str, str] = {}
        self.history = EventHistory(history_capacity)
        self.hub = WatcherHub()
        self.stats = StoreStats(self.hub)
        # (expire_at, path, seq, node); entries go stale when a node dies or its TTL changes.
        self._ttl_heap: list[tuple[int, str, int, _Node]] = []
        self._ttl_seq = 0
        self._ttl_live = 0
        self._apply: dict[type[Any], Callable[[Any], list[Event]]] = {
            Set: self._set,
            Create: self._create_cmd,
            Update: self._update,
            CompareAndSwap: self._cas,
            Delete: self._delete,
            CompareAndDelete: self._cad,
            Sync: self._sync,
            InternalWrite: self._internal_write,
            InternalChange: self._internal_change,
        }

    # ------------------------------------------------------------------ commands

    def apply(self, cmd: Command) -> list[Event]:
        """Apply one command. Returns its events (already in the history) or raises V2Error.

        A user command gives exactly one event (the answer); `Sync` one per expired node.
        """
        try:
            handler = self._apply[type(cmd)]
        except KeyError:
            raise TypeError(f"not a keyspace command: {cmd!r}") from None
        stat = _WRITE_STATS.get(type(cmd))
        if stat is None:
            return handler(cmd)
        try:
            events = handler(cmd)
        except V2Error:
            self.stats.inc(stat + "Fail")
            raise
        self.stats.inc(stat + "Success")
        return events

    def _record(self, event: Event) -> list[Event]:
        self.history.add(event)
        return [event]

    def _lookup(self, key: str) -> _Node:
        """etcd's `internalGet`: the node at `key`, or 100/104."""
        node = self._root
        if key == "/":
            return node
        for name in key[1:].split("/"):
            children = node.children
            if children is None:
                raise NotADirectory(node.path, self.index)
            child = children.get(name)
            if child is None:
                parent = node.path
                raise KeyNotFound(
                    ("/" + name) if parent == "/" else parent + "/" + name, self.index
                )
            node = child
        return node

    def _set(self, cmd: Set) -> list[Event]:
        key = clean_key(cmd.key)
        try:
            existing: _Node | None = self._lookup(key)
        except KeyNotFound:
            if cmd.refresh:
                raise
            existing = None
        value = cmd.value
        if cmd.refresh and existing is not None:
            value = existing.value if existing.value is not None else ""
        prev = existing.repr() if existing is not None else None
        event = self._create(
            key, cmd.dir, value, False, True, cmd.expire_at, Action.SET, cmd.now, prev
        )
        if cmd.refresh:
            event = replace(event, refresh=True)
        return self._record(event)

    def _create_cmd(self, cmd: Create) -> list[Event]:
        event = self._create(
            clean_key(cmd.key),
            cmd.dir,
            cmd.value,
            cmd.unique,
            False,
            cmd.expire_at,
            Action.CREATE,
            cmd.now,
            None,
        )
        return self._record(event)

    def _create(
        self,
        key: str,
        is_dir: bool,
        value: str,
        unique: bool,
        replace_file: bool,
        expire_at: int | None,
        action: Action,
        now: int,
        prev: Node | None,
    ) -> Event:
        """etcd's `internalCreate`. Checks everything before changing anything."""
        cur = self.index
        nxt = cur + 1
        if unique:
            key = ("/" if key == "/" else key + "/") + f"{nxt:020d}"
        if key == "/":
            raise RootReadOnly("/", cur)
        names = key[1:].split("/")
        # Walk the existing part of the parent chain; only a file in the way can fail here.
        parent = self._root
        depth = 0
        while depth < len(names) - 1:
            children = parent.children
            assert children is not None
            child = children.get(names[depth])
            if child is None:
                break
            if child.children is None:
                self.stats.inc("setsFail")  # etcd counts a walk failure as a set failure too
                raise NotADirectory(child.path, cur)
            parent = child
            depth += 1
        name = names[-1]
        old: _Node | None = None
        if depth == len(names) - 1:
            assert parent.children is not None
            old = parent.children.get(name)
            if old is not None:
                if not replace_file:
                    raise NodeExists(key, cur)
                if old.children is not None:
                    raise NotAFile(key, cur)
        # From here on nothing can fail.
        while depth < len(names) - 1:
            comp = names[depth]
            path = "/" + comp if parent is self._root else parent.path + "/" + comp
            d = _Node(path, comp, None, {}, nxt, nxt, None)
            assert parent.children is not None
            parent.children[comp] = d
            parent = d
            depth += 1
        assert parent.children is not None
        if old is not None:
            del parent.children[name]
            self._kill(old)
        if is_dir:
            node = _Node(key, name, None, {}, nxt, nxt, expire_at)
        else:
            node = _Node(key, name, value, None, nxt, nxt, expire_at)
        parent.children[name] = node
        if expire_at is not None:
            self._ttl_push(node)
        self.index = nxt
        # The node's own cached repr: the next write's prevNode is then this very object,
        # whose rendered JSON is cached.
        return Event(action, node.repr(), prev, nxt, now=now)

    def _update(self, cmd: Update) -> list[Event]:
        key = clean_key(cmd.key)
        if key == "/":
            raise RootReadOnly("/", self.index)
        node = self._lookup(key)
        if node.children is not None and cmd.value:
            raise NotAFile(key, self.index)
        return self._record(
            self._rewrite(node, cmd.value, cmd.expire_at, cmd.refresh, Action.UPDATE, cmd.now)
        )

    def _cas(self, cmd: CompareAndSwap) -> list[Event]:
        key = clean_key(cmd.key)
        if key == "/":
            raise RootReadOnly("/", self.index)
        node = self._lookup(key)
        if node.children is not None:
            raise NotAFile(key, self.index)
        self._compare(node, cmd.prev_value, cmd.prev_index)
        return self._record(
            self._rewrite(
                node, cmd.value, cmd.expire_at, cmd.refresh, Action.COMPARE_AND_SWAP, cmd.now
            )
        )

    def _compare(self, node: _Node, prev_value: str, prev_index: int) -> None:
        value_ok = not prev_value or node.value == prev_value
        index_ok = not prev_index or node.modified == prev_index
        if value_ok and index_ok:
            return
        if value_ok:
            cause = f"[{prev_index} != {node.modified}]"
        elif index_ok:
            cause = f"[{prev_value} != {node.value}]"
        else:
            cause = f"[{prev_value} != {node.value}] [{prev_index} != {node.modified}]"
        raise CompareFailed(cause, self.index)

    def _rewrite(
        self,
        node: _Node,
        value: str,
        expire_at: int | None,
        refresh: bool,
        action: Action,
        now: int,
    ) -> Event:
        """Update/CAS after their checks: new value (files only) and TTL, createdIndex kept."""
        nxt = self.index + 1
        prev = node.repr()
        if node.children is None:
            if refresh:
                value = node.value if node.value is not None else ""
            node.value = value
            node.modified = nxt
            node.ext = None
        self._set_ttl(node, expire_at)
        self.index = nxt
        is_dir = node.children is not None
        return Event(
            action,
            Node(node.path, None if is_dir else value, is_dir, expire_at, None, nxt, node.created),
            prev,
            nxt,
            refresh=refresh,
            now=now,
        )

    def _delete(self, cmd: Delete) -> list[Event]:
        key = clean_key(cmd.key)
        if key == "/":
            raise RootReadOnly("/", self.index)
        node = self._lookup(key)
        if node.children is not None:
            if not (cmd.dir or cmd.recursive):
                raise NotAFile(key, self.index)
            if node.children and not cmd.recursive:
                raise DirectoryNotEmpty(key, self.index)
        return self._record(self._remove(node, Action.DELETE, cmd.now))

    def _cad(self, cmd: CompareAndDelete) -> list[Event]:
        key = clean_key(cmd.key)
        node = self._lookup(key)
        if node.children is not None:
            # etcd's cause is the store path minus its "/1" prefix: "" for the root.
            raise NotAFile("" if key == "/" else key, self.index)
        self._compare(node, cmd.prev_value, cmd.prev_index)
        return self._record(self._remove(node, Action.COMPARE_AND_DELETE, cmd.now))

    def _remove(self, node: _Node, action: Action, now: int) -> Event:
        """Unlink `node` (and its subtree) as one write; the event lists the removed paths."""
        nxt = self.index + 1
        prev = node.repr()
        removed = tuple(self._postorder(node))
        for n in removed_nodes(node):
            self._kill(n)
        parent = self._parent(node)
        assert parent.children is not None
        del parent.children[node.name]
        self.index = nxt
        is_dir = node.children is not None
        return Event(
            action,
            Node(node.path, None, is_dir, None, None, nxt, node.created),
            prev,
            nxt,
            now=now,
            removed=removed,
        )

    def _parent(self, node: _Node) -> _Node:
        head = node.path.rsplit("/", 1)[0]
        return self._lookup(head or "/")

    @staticmethod
    def _postorder(node: _Node) -> Iterator[str]:
        # Children before their dir, as etcd's node.Remove calls back (no recursion: depth).
        stack: list[tuple[_Node, Iterator[_Node]]] = []
        if node.children is None:
            yield node.path
            return
        stack.append((node, iter(list(node.children.values()))))
        while stack:
            cur, it = stack[-1]
            for child in it:
                if child.children is None:
                    yield child.path
                else:
                    stack.append((child, iter(list(child.children.values()))))
                    break
            else:
                stack.pop()
                yield cur.path

    def _sync(self, cmd: Sync) -> list[Event]:
        events: list[Event] = []
        heap = self._ttl_heap
        while heap:
            expire_at, _, _, node = heap[0]
            if not node.alive or node.expire_at != expire_at:
                heapq.heappop(heap)
                continue
            if expire_at > cmd.now:
                break
            heapq.heappop(heap)
            event = self._remove(node, Action.EXPIRE, cmd.now)
            self.stats.inc("expireCount")
            self.history.add(event)
            events.append(event)
        return events

    def _internal_write(self, cmd: InternalWrite) -> list[Event]:
        nxt = self.index + 1
        self._internal[cmd.key] = cmd.value
        self.index = nxt
        event = Event(
            Action.SET,
            Node(cmd.key, cmd.value, False, None, None, nxt, nxt),
            None,
            nxt,
            internal=True,
            now=cmd.now,
        )
        return self._record(event)

    def _internal_change(self, cmd: InternalChange) -> list[Event]:
        # v2 auth's store writes under `/2` (etcd `v2auth/auth_requests.go`): one index each;
        # a failed condition is etcd's 100/105 with the key as cause, and changes nothing.
        exists = cmd.key in self._internal
        stat = (
            "delete"
            if cmd.value is None
            else {True: "update", False: "create", None: "sets"}[cmd.prev_exist]
        )
        if (cmd.value is None or cmd.prev_exist is True) and not exists:
            self.stats.inc(stat + "Fail")
            raise KeyNotFound(cause=cmd.key, index=self.index)
        if cmd.prev_exist is False and exists:
            self.stats.inc(stat + "Fail")
            raise NodeExists(cause=cmd.key, index=self.index)
        nxt = self.index + 1
        if cmd.value is None:
            del self._internal[cmd.key]
            action = Action.DELETE
        else:
            self._internal[cmd.key] = cmd.value
            action = Action.UPDATE if exists else Action.CREATE
        self.index = nxt
        self.stats.inc(stat + "Success")
        node = Node(cmd.key, cmd.value, False, None, None, nxt, nxt)
        return self._record(Event(action, node, None, nxt, internal=True, now=cmd.now))

    def internal_items(self, prefix: str) -> list[tuple[str, str]]:
        """The hidden-namespace values whose key starts with `prefix` (v2 auth's listings)."""
        return [(k, v) for k, v in self._internal.items() if k.startswith(prefix)]

    def internal_value(self, key: str) -> str | None:
        """A value etcd's own writes stored under the hidden namespace."""
        return self._internal.get(key)

    # ------------------------------------------------------------------ TTL bookkeeping

    def _ttl_push(self, node: _Node) -> None:
        assert node.expire_at is not None
        self._ttl_seq += 1
        heapq.heappush(self._ttl_heap, (node.expire_at, node.path, self._ttl_seq, node))
        self._ttl_live += 1
        if len(self._ttl_heap) > 2 * self._ttl_live + 1024:
            self._ttl_compact()

    def _set_ttl(self, node: _Node, expire_at: int | None) -> None:
        if node.expire_at is not None:
            self._ttl_live -= 1
        node.expire_at = expire_at
        node.ext = None
        if expire_at is not None:
            self._ttl_push(node)

    def _kill(self, node: _Node) -> None:
        node.alive = False
        if node.expire_at is not None:
            self._ttl_live -= 1

    def _ttl_compact(self) -> None:
        self._ttl_heap = [e for e in self._ttl_heap if e[3].alive and e[3].expire_at == e[0]]
        heapq.heapify(self._ttl_heap)

    def has_ttl_nodes(self) -> bool:
        """Whether any node has a TTL (the leader then proposes `Sync` periodically)."""
        return self._ttl_live > 0

    def next_expiry(self) -> int | None:
        """The earliest `expire_at` in the tree, or None."""
        heap = self._ttl_heap
        while heap:
            expire_at, _, _, node = heap[0]
            if node.alive and node.expire_at == expire_at:
                return expire_at
            heapq.heappop(heap)
        return None

    # ------------------------------------------------------------------ reads

    def get(
        self, key: str, recursive: bool = False, sorted: bool = False, *, now: int | None = None
    ) -> Event:
        """etcd's `Get`: action "get", a file's value or a dir's (non-hidden) children.

        `now`, if given, is stamped into the event for its ttl (else `render_event`'s `now`).
        """
        key = clean_key(key)
        try:
            node = self._lookup(key)
        except V2Error:
            self.stats.inc("getsFail")
            raise
        self.stats.inc("getsSuccess")
        if node.children is None:
            extern = node.repr()
        else:
            extern = self._listing(node, recursive, sorted)
        return Event(Action.GET, extern, None, self.index, now=now)

    @staticmethod
    def _listing(top: _Node, recursive: bool, sort: bool) -> Node:
        """A dir with its children (and their subtrees if `recursive`), hidden ones left out."""
        assert top.children is not None
        frames: list[tuple[_Node, Iterator[_Node], list[Node]]] = [
            (top, iter(top.children.values()), [])
        ]
        while True:
            node, it, acc = frames[-1]
            for child in it:
                if child.name.startswith("_"):
                    continue
                if recursive and child.children is not None:
                    frames.append((child, iter(child.children.values()), []))
                    break
                acc.append(child.repr())
            else:
                frames.pop()
                if sort:
                    acc.sort(key=_node_key)
                built = Node(
                    node.path, None, True, node.expire_at, tuple(acc), node.modified, node.created
                )
                if not frames:
                    return built
                frames[-1][2].append(built)

    # ------------------------------------------------------------------ watches

    def watch(
        self, key: str, recursive: bool, stream: bool, since: int, sink: Any
    ) -> Event | Watcher:
        """etcd's `Watch`: since=0 means index+1; the history answers first (an Event, with
        `etcd_index` = the current index), else a live `Watcher` is registered. Raises
        EventIndexCleared (401) when `since` is older than the history. A stream answered
        from history is not registered (etcd's quirk: the shell sends that one event only).
        """
        key = clean_key(key)
        if since == 0:
            since = self.index + 1
        event = self.history.scan(key, recursive, since, index=self.index)
        if event is not None:
            return replace(event, etcd_index=self.index)
        return self.hub.add(key, recursive, stream, since, sink, start_index=self.index)

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """The replicated state: tree, index, hidden-namespace values, history (versioned)."""
        nodes: list[list[Any]] = []
        stack: list[Iterator[_Node]] = [iter(self._root.children.values())]  # type: ignore[union-attr]
        while stack:
            n = next(stack[-1], None)
            if n is None:
                stack.pop()
                continue
            nodes.append(
                [n.path, n.value, n.children is not None, n.created, n.modified, n.expire_at]
            )
            if n.children:
                stack.append(iter(n.children.values()))
        history = [_encode_event(e) for e in self.history.events()]
        return msgpack.packb(
            [
                SNAPSHOT_VERSION,
                self.index,
                self.history.capacity,
                nodes,
                list(self._internal.items()),
                history,
            ],
            use_bin_type=True,
            unicode_errors="surrogateescape",  # keys may hold non-UTF-8 bytes
        )

    @classmethod
    def restore(cls, data: bytes) -> Keyspace:
        """A keyspace from `snapshot()` bytes. Raises FormatError for anything else."""
        try:
            obj = msgpack.unpackb(
                data, raw=False, strict_map_key=True, unicode_errors="surrogateescape"
            )
        except Exception as exc:  # msgpack raises several unrelated types for garbage
            raise FormatError(f"keyspace snapshot is not valid msgpack: {exc}") from None
        if not isinstance(obj, list) or not obj:
            raise FormatError("keyspace snapshot must be an array [version, ...]")
        if obj[0] != SNAPSHOT_VERSION:
            raise FormatError(
                f"keyspace snapshot format version {obj[0]!r} is not supported "
                f"(this release reads version {SNAPSHOT_VERSION})"
            )
        try:
            _, index, capacity, nodes, internal, history = obj
            ks = cls(history_capacity=capacity)
            ks.index = index
            by_path: dict[str, _Node] = {"/": ks._root}
            for path, value, is_dir, created, modified, expire_at in nodes:
                head, _, name = path.rpartition("/")
                parent = by_path[head or "/"]
                node = _Node(
                    path,
                    name,
                    None if is_dir else value,
                    {} if is_dir else None,
                    created,
                    modified,
                    expire_at,
                )
                assert parent.children is not None
                parent.children[name] = node
                if is_dir:
                    by_path[path] = node
                if expire_at is not None:
                    ks._ttl_push(node)
            ks._internal = dict((k, v) for k, v in internal)
            for raw in history:
                ks.history.add(_decode_event(raw))
        except (ValueError, TypeError, KeyError, AssertionError) as exc:
            raise FormatError(f"keyspace snapshot is malformed: {exc}") from None
        return ks


    def recover(self, data: bytes) -> None:
        """Replace the replicated state with a snapshot's, in place (etcd's store `Recovery`).

        Live watchers and the local stats are kept, as etcd keeps them when a member installs
        a snapshot from the leader. Raises FormatError (and changes nothing) on bad bytes.
        """
        fresh = Keyspace.restore(data)
        self.index = fresh.index
        self._root = fresh._root
        self._internal = fresh._internal
        self.history = fresh.history
        self._ttl_heap = fresh._ttl_heap
        self._ttl_seq = fresh._ttl_seq
        self._ttl_live = fresh._ttl_live


def _node_key(node: Node) -> str:
    return node.key


def removed_nodes(node: _Node) -> Iterator[_Node]:
    """`node` and every node below it (any order)."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if n.children:
            stack.extend(n.children.values())


def _encode_node(n: Node) -> list[Any]:
    return [n.key, n.value, n.dir, n.expire_at, n.modified_index, n.created_index]


def _decode_node(raw: list[Any]) -> Node:
    key, value, is_dir, expire_at, modified, created = raw
    return Node(key, value, is_dir, expire_at, None, modified, created)


def _encode_event(e: Event) -> list[Any]:
    return [
        e.action.value,
        _encode_node(e.node),
        None if e.prev_node is None else _encode_node(e.prev_node),
        e.etcd_index,
        e.refresh,
        e.internal,
        e.now,
    ]


def _decode_event(raw: list[Any]) -> Event:
    action, node, prev, etcd_index, refresh, internal, now = raw
    return Event(
        Action(action),
        _decode_node(node),
        None if prev is None else _decode_node(prev),
        etcd_index,
        refresh=refresh,
        internal=internal,
        now=now,
    )
