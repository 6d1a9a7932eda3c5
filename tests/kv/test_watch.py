"""Live watches and history scans (reference §7), including etcd 3.4's observed quirks."""

from __future__ import annotations

from corral.kv.commands import (
    CompareAndDelete,
    CompareAndSwap,
    Create,
    Delete,
    InternalWrite,
    Set,
    Sync,
    Update,
)
from corral.kv.events import Action, Event
from corral.kv.keyspace import Keyspace
from corral.kv.watch import EventHistory, Watcher, WatcherHub

S = 1_000_000_000


def apply_and_notify(ks: Keyspace, cmd: object) -> list[tuple[Watcher, Event]]:
    """What the shell does: apply, then ask the hub which watchers each event fires."""
    fired: list[tuple[Watcher, Event]] = []
    for ev in ks.apply(cmd):  # type: ignore[arg-type]
        fired.extend((w, ev) for w in ks.hub.notify(ev))
    return fired


def register(ks: Keyspace, key: str, *, recursive: bool = False, stream: bool = False,
             since: int = 0) -> Watcher:  # fmt: skip
    w = ks.watch(key, recursive, stream, since, sink=key)
    assert isinstance(w, Watcher), f"{key} answered from history: {w}"
    return w


def test_watch_on_key_fires_on_set_and_is_removed() -> None:
    ks = Keyspace()
    w = register(ks, "/w/a")
    assert w.since_index == 1 and w.start_index == 0
    assert ks.stats.to_json()["watchers"] == 1
    fired = apply_and_notify(ks, Set("/w/a", "1"))
    assert [(x, e.key, e.action) for x, e in fired] == [(w, "/w/a", Action.SET)]
    assert w.removed and ks.hub.count == 0
    assert apply_and_notify(ks, Set("/w/a", "2")) == []


def test_recursive_watch_sees_children_non_recursive_does_not() -> None:
    ks = Keyspace()
    ks.apply(Set("/w/a", "1"))
    rec = register(ks, "/w", recursive=True)
    flat = register(ks, "/w")
    fired = apply_and_notify(ks, Set("/w/b/c", "2"))
    assert [x for x, _ in fired] == [rec]
    assert not flat.removed
    # A recursive delete of the dir is the dir's own event: the flat watcher fires now.
    fired = apply_and_notify(ks, Delete("/w", recursive=True))
    assert [x for x, _ in fired] == [flat]
    assert fired[0][1].action == Action.DELETE and fired[0][1].node.dir


def test_deleting_a_dir_notifies_watchers_on_removed_descendants() -> None:
    ks = Keyspace()
    ks.apply(Set("/w2/a/b", "x"))
    deep = register(ks, "/w2/a/b")
    missing = register(ks, "/w2/a/nope")  # not a node: etcd's callbacks never reach it
    fired = apply_and_notify(ks, Delete("/w2", recursive=True))
    assert [x for x, _ in fired] == [deep]
    assert fired[0][1].key == "/w2"
    assert not missing.removed


def test_hidden_children_are_invisible_to_live_recursive_watches_but_not_to_history() -> None:
    ks = Keyspace()
    ks.apply(Set("/w3/x", "1"))
    rec = register(ks, "/w3", recursive=True)
    root = register(ks, "/", recursive=True)
    assert apply_and_notify(ks, Set("/w3/_hid", "h")) == []
    hidden_index = ks.index
    # A watcher on the hidden key itself does see it.
    own = register(ks, "/w3/_hid")
    assert [x for x, _ in apply_and_notify(ks, Set("/w3/_hid", "h2"))] == [own]
    fired = apply_and_notify(ks, Set("/w3/vis", "v"))
    assert [x for x, _ in fired] == [root, rec]  # the walk goes from "/" down
    found = ks.watch("/w3", True, False, hidden_index, None)
    assert isinstance(found, Event) and found.key == "/w3/_hid"
    # A hidden dir component anywhere below the watch hides the event too.
    again = register(ks, "/", recursive=True)
    assert apply_and_notify(ks, Set("/_d/x", "1")) == []
    assert apply_and_notify(ks, Set("/w3/_d/y", "1")) == []
    assert not again.removed


def test_live_watch_since_future_index() -> None:
    ks = Keyspace()
    ks.apply(Set("/w5", "0"))
    w = register(ks, "/w5", since=ks.index + 2)
    assert apply_and_notify(ks, Set("/w5", "1")) == []
    fired = apply_and_notify(ks, Set("/w5", "2"))
    assert [x for x, _ in fired] == [w]
    assert fired[0][1].prev_node is not None and fired[0][1].prev_node.value == "1"


def test_stream_watch_stays_registered() -> None:
    ks = Keyspace()
    w = register(ks, "/w6", stream=True)
    got = []
    for i in range(3):
        got += [e.node.value for x, e in apply_and_notify(ks, Set("/w6", str(i))) if x is w]
    assert got == ["0", "1", "2"]
    assert not w.removed and ks.hub.count == 1
    ks.hub.remove(w)
    ks.hub.remove(w)
    assert ks.hub.count == 0 and w.removed


def test_stream_watchers_on_a_deleted_path_get_the_event_twice() -> None:
    # Observed on etcd 3.4.23: node.Remove's callback and the ancestor walk both reach the
    # deleted path, and a stream watcher is not removed by the first delivery.
    ks = Keyspace()
    ks.apply(Set("/x", "1"))
    ks.apply(Set("/dd/f", "1"))
    sx = register(ks, "/x", stream=True)
    sdd = register(ks, "/dd", stream=True)
    sddf = register(ks, "/dd/f", stream=True)
    sroot = register(ks, "/", stream=True, recursive=True)
    fired = apply_and_notify(ks, Delete("/x"))
    assert [x for x, _ in fired].count(sx) == 2
    assert [x for x, _ in fired].count(sroot) == 1
    fired = apply_and_notify(ks, Delete("/dd", recursive=True))
    watchers = [x for x, _ in fired]
    assert (watchers.count(sdd), watchers.count(sddf), watchers.count(sroot)) == (2, 1, 1)
    assert ks.hub.count == 4


def test_refresh_takes_an_index_but_never_notifies_and_scans_skip_it() -> None:
    ks = Keyspace()
    ks.apply(Set("/r", "v", expire_at=10 * S, now=0))
    w = register(ks, "/r")
    rw = register(ks, "/", recursive=True)
    for cmd in (
        Set("/r", "", expire_at=20 * S, refresh=True, now=S),
        Update("/r", "", expire_at=30 * S, refresh=True, now=S),
        CompareAndSwap("/r", "", prev_value="v", expire_at=40 * S, refresh=True, now=S),
    ):
        before = ks.index
        events = ks.apply(cmd)
        assert ks.index == before + 1 and events[0].refresh
        assert ks.hub.notify(events[0]) == []
    assert not w.removed and not rw.removed
    assert ks.get("/r").node.value == "v"
    assert isinstance(ks.watch("/r", False, False, 2, None), Watcher)
    ks.apply(Set("/r", "new"))
    found = ks.watch("/r", False, False, 2, None)
    assert isinstance(found, Event) and found.node.value == "new"


def test_history_quirk_deleted_dir_is_a_string_prefix() -> None:
    ks = Keyspace()
    ks.apply(Set("/a/z", "1"))
    ks.apply(Delete("/a", recursive=True))
    found = ks.watch("/ab", False, False, ks.index, None)
    assert isinstance(found, Event) and found.key == "/a"
    # Live, /ab is not under /a.
    ks.apply(Set("/a/z", "1"))
    live = register(ks, "/ab")
    assert apply_and_notify(ks, Delete("/a", recursive=True)) == []
    assert not live.removed


def test_history_scan_matches_exact_recursive_and_deleted_ancestors() -> None:
    ks = Keyspace()
    ks.apply(Set("/h/a/b", "1"))  # 1
    ks.apply(Set("/h/c", "1"))  # 2
    ks.apply(Delete("/h/a", recursive=True))  # 3
    assert ks.watch("/h", False, False, 1, None).__class__ is Watcher
    rec = ks.watch("/h", True, False, 1, None)
    assert isinstance(rec, Event) and rec.index == 1
    deep = ks.watch("/h/a/b/c", False, False, 2, None)
    assert isinstance(deep, Event) and deep.index == 3
    # Watching below a file or a missing key is allowed.
    assert isinstance(ks.watch("/h/c/x/y", False, False, 0, None), Watcher)


def test_expiring_a_dir_notifies_its_descendants_watchers() -> None:
    ks = Keyspace()
    ks.apply(Set("/td", dir=True, expire_at=2 * S, now=0))
    ks.apply(Set("/td/child", "c", now=0))
    child = register(ks, "/td/child")
    fired = apply_and_notify(ks, Sync(3 * S))
    assert [x for x, _ in fired] == [child]
    ev = fired[0][1]
    assert ev.action == Action.EXPIRE and ev.key == "/td" and ev.node.dir


def test_compare_and_delete_notifies() -> None:
    ks = Keyspace()
    ks.apply(Create("/c", "v"))
    w = register(ks, "/c")
    fired = apply_and_notify(ks, CompareAndDelete("/c", prev_value="v"))
    assert [x for x, _ in fired] == [w]


def test_internal_writes_use_indexes_but_are_invisible() -> None:
    ks = Keyspace()
    root = register(ks, "/", recursive=True)
    assert apply_and_notify(ks, InternalWrite("/0/members/1", "{}")) == []
    assert ks.index == 1 and ks.internal_value("/0/members/1") == "{}"
    assert len(ks.history) == 1
    assert isinstance(ks.watch("/", True, False, 1, None), Watcher)
    assert not root.removed


def test_stream_answered_from_history_is_not_registered() -> None:
    ks = Keyspace()
    ks.apply(Set("/s", "1"))
    got = ks.watch("/s", False, True, 1, None)
    assert isinstance(got, Event) and got.etcd_index == 1
    assert ks.hub.count == 0


def test_ten_thousand_watchers_a_write_touches_only_its_path() -> None:
    ks = Keyspace()
    watchers = [register(ks, f"/svc/n{i}/state") for i in range(10_000)]
    assert ks.hub.count == 10_000 and ks.hub.watched_paths() == 10_000
    before = ks.hub.lists_visited
    fired = apply_and_notify(ks, Set("/svc/n4242/state", "up"))
    # "/", "/svc", "/svc/n4242", "/svc/n4242/state": four lookups, whatever the watcher count.
    assert ks.hub.lists_visited - before == 4
    assert [x for x, _ in fired] == [watchers[4242]]
    assert ks.hub.count == 9_999
    # A recursive delete visits the removed paths plus the key's prefixes, nothing else.
    ks.apply(Set("/svc/n7/state", "x"))
    before = ks.hub.lists_visited
    fired = apply_and_notify(ks, Delete("/svc/n7", recursive=True))
    assert ks.hub.lists_visited - before == 2 + 3
    assert [x for x, _ in fired] == [watchers[7]]


def test_event_history_ring() -> None:
    h = EventHistory(capacity=3)
    ks = Keyspace()
    for i in range(5):
        (ev,) = ks.apply(Set("/k", str(i)))
        h.add(ev)
    assert (h.start_index, h.last_index, len(h)) == (3, 5, 3)
    assert [e.index for e in h.events()] == [3, 4, 5]
    found = h.scan("/k", False, 4)
    assert found is not None and found.index == 4
    assert h.scan("/k", False, 6) is None


def test_hub_add_remove_bookkeeping() -> None:
    hub = WatcherHub()
    a = hub.add("/k", False, False, 1, "a")
    b = hub.add("/k", False, False, 1, "b")
    hub.remove(a)
    assert hub.count == 1 and hub.watched_paths() == 1
    hub.remove(b)
    assert hub.count == 0 and hub.watched_paths() == 0
