"""Keyspace rules and quirks of the reference not already covered by the captured session."""

from __future__ import annotations

import json

import pytest

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
from corral.kv.errors import V2Error
from corral.kv.events import Action, render_event
from corral.kv.keyspace import Keyspace, clean_key

S = 1_000_000_000


def err(ks: Keyspace, cmd: object) -> tuple[int, str, int]:
    with pytest.raises(V2Error) as info:
        ks.apply(cmd)  # type: ignore[arg-type]
    return info.value.code, info.value.cause, info.value.index


def body(ks: Keyspace, key: str, **kw: bool) -> dict[str, object]:
    return json.loads(render_event(ks.get(key, **kw), 0))  # type: ignore[no-any-return]


def test_failed_commands_change_nothing_but_stats() -> None:
    ks = Keyspace()
    ks.apply(Set("/f", "v"))
    snap = ks.snapshot()
    assert err(ks, Set("/f/x", "1")) == (104, "/f", 1)
    assert err(ks, Create("/f", "1")) == (105, "/f", 1)
    assert err(ks, Create("/f/a/b", "1")) == (104, "/f", 1)
    assert err(ks, Create("/f", unique=True)) == (104, "/f", 1)
    assert err(ks, Update("/nope/x", "1")) == (100, "/nope", 1)
    assert err(ks, Delete("/f/x")) == (104, "/f", 1)
    assert ks.snapshot() == snap and ks.index == 1


def test_missing_parents_are_created_with_the_write_index() -> None:
    ks = Keyspace()
    ks.apply(Set("/a/b/c/d", "x"))
    for key in ("/a", "/a/b", "/a/b/c"):
        node = ks.get(key).node
        assert node.dir and (node.created_index, node.modified_index) == (1, 1)


def test_set_replaces_update_and_cas_keep_created_index() -> None:
    ks = Keyspace()
    ks.apply(Set("/k", "1"))
    (ev,) = ks.apply(Set("/k", "2"))
    assert (ev.node.created_index, ev.node.modified_index) == (2, 2)
    (ev,) = ks.apply(Update("/k", "3"))
    assert (ev.node.created_index, ev.node.modified_index) == (2, 3)
    (ev,) = ks.apply(CompareAndSwap("/k", "4", prev_index=3))
    assert (ev.node.created_index, ev.node.modified_index) == (2, 4)
    assert ev.action == Action.COMPARE_AND_SWAP


def test_update_without_value_empties_the_file() -> None:
    ks = Keyspace()
    ks.apply(Set("/k", "1"))
    ks.apply(Update("/k"))
    assert ks.get("/k").node.value == ""


def test_set_dir_converts_a_file_and_refresh_on_dir_fails() -> None:
    ks = Keyspace()
    ks.apply(Set("/k", "v"))
    (ev,) = ks.apply(Set("/k", dir=True))
    assert ev.node.dir and ev.prev_node is not None and ev.prev_node.value == "v"
    assert err(ks, Set("/k", "", expire_at=S, refresh=True)) == (102, "/k", 2)
    assert err(ks, Set("/nope", "", expire_at=S, refresh=True)) == (100, "/nope", 2)


def test_cas_on_dir_and_cad_on_root() -> None:
    ks = Keyspace()
    ks.apply(Set("/d", dir=True))
    assert err(ks, CompareAndSwap("/d", "x", prev_index=1)) == (102, "/d", 1)
    assert err(ks, CompareAndDelete("/", prev_value="x")) == (102, "", 1)
    with pytest.raises(V2Error) as info:
        ks.apply(CompareAndDelete("/", prev_value="x"))
    assert "cause" not in info.value.to_json()


def test_prev_index_zero_and_empty_prev_value_always_pass() -> None:
    ks = Keyspace()
    ks.apply(Set("/k", "v"))
    (ev,) = ks.apply(CompareAndSwap("/k", "w", prev_value="", prev_index=0))
    assert ev.node.value == "w"
    (ev,) = ks.apply(CompareAndDelete("/k"))
    assert ev.action == Action.COMPARE_AND_DELETE and ev.node.value is None


def test_delete_flags() -> None:
    ks = Keyspace()
    ks.apply(Set("/f", "v"))
    (ev,) = ks.apply(Delete("/f", dir=True))  # dir=true on a file is fine
    assert ev.node.value is None and not ev.node.dir
    ks.apply(Set("/e", dir=True))
    assert err(ks, Delete("/e")) == (102, "/e", 3)
    ks.apply(Delete("/e", dir=True))
    ks.apply(Set("/full/x/y", "1"))
    assert err(ks, Delete("/full", dir=True)) == (108, "/full", 5)
    before = ks.index
    (ev,) = ks.apply(Delete("/full", recursive=True))  # recursive implies dir
    assert ks.index == before + 1 and ev.removed == ("/full/x/y", "/full/x", "/full")
    assert err(ks, Delete("/")) == (107, "/", 6)


def test_ttl_zero_expires_at_the_next_sync_and_dir_ttl_takes_the_subtree() -> None:
    ks = Keyspace()
    ks.apply(Set("/now", "x", expire_at=10 * S, now=10 * S))
    assert ks.get("/now").node.expire_at == 10 * S  # still readable until the sync
    ks.apply(Set("/d", dir=True, expire_at=20 * S, now=10 * S))
    ks.apply(Set("/d/f", "x", expire_at=15 * S, now=10 * S))
    ks.apply(Set("/d/g", "x", now=10 * S))
    assert ks.has_ttl_nodes() and ks.next_expiry() == 10 * S
    assert [e.key for e in ks.apply(Sync(10 * S))] == ["/now"]
    assert ks.apply(Sync(14 * S)) == []
    (f,) = ks.apply(Sync(15 * S))
    assert f.key == "/d/f" and f.action == Action.EXPIRE
    (d,) = ks.apply(Sync(30 * S))
    assert d.key == "/d" and d.node.dir and d.prev_node is not None and d.prev_node.dir
    assert d.removed == ("/d/g", "/d")
    assert not ks.has_ttl_nodes() and ks.next_expiry() is None
    assert ks.stats.to_json()["expireCount"] == 3
    # Expiry events render the prevNode's ttl as of the sync (here 10 s late: -10).
    assert b'"ttl":-10' in render_event(d)


def test_sync_order_is_deadline_then_key() -> None:
    ks = Keyspace()
    for key in ("/c", "/a", "/b"):
        ks.apply(Set(key, "x", expire_at=5 * S))
    ks.apply(Set("/z", "x", expire_at=4 * S))
    events = ks.apply(Sync(5 * S))
    assert [e.key for e in events] == ["/z", "/a", "/b", "/c"]
    assert [e.index for e in events] == [5, 6, 7, 8]


def test_ttl_changes_and_removal() -> None:
    ks = Keyspace()
    ks.apply(Set("/k", "v", expire_at=5 * S))
    ks.apply(Update("/k", "v", expire_at=50 * S))
    assert ks.next_expiry() == 50 * S
    ks.apply(CompareAndSwap("/k", "w", prev_value="v"))  # no ttl: permanent again
    assert not ks.has_ttl_nodes() and ks.apply(Sync(100 * S)) == []
    ks.apply(Set("/k", "v", expire_at=5 * S))
    ks.apply(Delete("/k"))
    assert not ks.has_ttl_nodes() and ks.apply(Sync(100 * S)) == []
    for i in range(3000):  # stale heap entries are compacted away
        ks.apply(Set("/churn", str(i), expire_at=(200 + i) * S))
    assert len(ks._ttl_heap) < 2100
    assert ks.next_expiry() == 3199 * S


def test_hidden_nodes_left_out_of_listings_at_every_depth() -> None:
    ks = Keyspace()
    for key in ("/v/a", "/v/_h", "/v/sub/_x", "/v/sub/y", "/v/_hd/z", "/_top"):
        ks.apply(Set(key, "1"))
    node = body(ks, "/v", recursive=True, sorted=True)["node"]
    assert json.dumps(node, separators=(",", ":")) == (
        '{"key":"/v","dir":true,"nodes":[{"key":"/v/a","value":"1","modifiedIndex":1,'
        '"createdIndex":1},{"key":"/v/sub","dir":true,"nodes":[{"key":"/v/sub/y","value":"1",'
        '"modifiedIndex":4,"createdIndex":4}],"modifiedIndex":3,"createdIndex":3}],'
        '"modifiedIndex":1,"createdIndex":1}'
    )
    assert [n["key"] for n in body(ks, "/")["node"]["nodes"]] == ["/v"]  # type: ignore[index]
    assert body(ks, "/v/_hd")["node"]["nodes"][0]["key"] == "/v/_hd/z"  # type: ignore[index]


def test_sorted_is_bytewise_on_full_keys() -> None:
    ks = Keyspace()
    for key in ("/s/b", "/s/a", "/s/é", "/s/Z", "/s/10", "/s/9", "/s/_x"):
        ks.apply(Set(key, "1"))
    nodes = body(ks, "/s", sorted=True)["node"]["nodes"]  # type: ignore[index]
    assert [n["key"] for n in nodes] == ["/s/10", "/s/9", "/s/Z", "/s/a", "/s/b", "/s/é"]


def test_in_order_keys_are_zero_padded_indexes() -> None:
    ks = Keyspace()
    (ev,) = ks.apply(Create("/q", "a", unique=True))
    assert ev.key == "/q/00000000000000000001" and ev.action == Action.CREATE
    (ev,) = ks.apply(Create("/", "b", unique=True))
    assert ev.key == "/00000000000000000002"
    (ev,) = ks.apply(Create("/q", dir=True, unique=True, expire_at=9 * S, now=S))
    assert ev.node.dir and b'"ttl":8' in render_event(ev)


def test_stats_count_like_etcd() -> None:
    ks = Keyspace()
    ks.apply(InternalWrite("/0/version", "3.4.0"))
    ks.apply(Set("/a", "1"))
    err(ks, Set("/a/b", "1"))
    ks.get("/a")
    with pytest.raises(V2Error):
        ks.get("/zz")
    ks.apply(Create("/c", "1"))
    err(ks, Create("/a/x", "1"))  # a walk failure also counts as a set failure
    ks.apply(Update("/c", "2"))
    err(ks, Update("/zz", "2"))
    ks.apply(CompareAndSwap("/c", "3", prev_value="2"))
    err(ks, CompareAndSwap("/c", "3", prev_value="2"))
    ks.apply(CompareAndDelete("/c", prev_value="3"))
    err(ks, CompareAndDelete("/c", prev_value="3"))
    ks.apply(Delete("/a"))
    err(ks, Delete("/a"))
    ks.watch("/w", False, False, 0, None)
    assert ks.stats.to_json() == {
        "getsSuccess": 1, "getsFail": 1, "setsSuccess": 2, "setsFail": 2,
        "deleteSuccess": 1, "deleteFail": 1, "updateSuccess": 1, "updateFail": 1,
        "createSuccess": 1, "createFail": 1, "compareAndSwapSuccess": 1,
        "compareAndSwapFail": 1, "compareAndDeleteSuccess": 1, "compareAndDeleteFail": 1,
        "expireCount": 0, "watchers": 1,
    }  # fmt: skip
    assert ks.stats["watchers"] == ks.stats.watchers == 1


def test_get_now_is_used_for_ttl() -> None:
    ks = Keyspace()
    ks.apply(Set("/t", "v", expire_at=100 * S, now=0))
    assert b'"ttl":10' in render_event(ks.get("/t", now=90 * S), 0)
    assert b'"ttl":100' in render_event(ks.get("/t"), 0)


def test_very_deep_paths_work_without_recursion_limits() -> None:
    ks = Keyspace()
    deep = "/" + "/".join(f"d{i}" for i in range(1500))  # deeper than the recursion limit
    ks.apply(Set(deep + "/leaf", "v"))
    assert ks.get(deep + "/leaf").node.value == "v"
    assert render_event(ks.get("/", recursive=True, sorted=True), 0).count(b'"nodes"') == 1501
    restored = Keyspace.restore(ks.snapshot())
    assert restored.snapshot() == ks.snapshot()
    (ev,) = ks.apply(Delete("/d0", recursive=True))
    assert len(ev.removed) == 1501
    assert ks.get("/").node.nodes == ()


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("", "/"), ("/", "/"), ("a", "/a"), ("/a/", "/a"), ("//a//b", "/a/b"), ("/a/./b", "/a/b"),
     ("/a/../b", "/b"), ("/../..", "/"), ("/a/.b", "/a/.b"), ("/a/b", "/a/b")],
)  # fmt: skip
def test_clean_key_is_go_path_clean(raw: str, clean: str) -> None:
    assert clean_key(raw) == clean


def test_uncleaned_keys_are_cleaned_on_apply() -> None:
    ks = Keyspace()
    (ev,) = ks.apply(Set("a//b/", "1"))
    assert ev.key == "/a/b"
    assert err(ks, Set("/a/..", "1")) == (107, "/", 1)


def test_refresh_quirks_observed_on_etcd() -> None:
    # Observed on etcd 3.4.23: a refresh with dir=true turns a file into a dir, and a refresh
    # of a dir through prevExist=true is an update whose stored modifiedIndex stays put.
    ks = Keyspace()
    for i in range(3):
        ks.apply(InternalWrite(f"/0/{i}", "x"))
    ks.apply(Set("/f", "v"))
    exp = 1795908844152738725  # 2026-11-28T23:34:04.152738725Z
    now = exp - 5 * S
    (ev,) = ks.apply(Set("/f", "", dir=True, expire_at=exp, refresh=True, now=now))
    assert render_event(ev) == (
        b'{"action":"set","node":{"key":"/f","dir":true,"expiration":'
        b'"2026-11-28T23:34:04.152738725Z","ttl":5,"modifiedIndex":5,"createdIndex":5},'
        b'"prevNode":{"key":"/f","value":"v","modifiedIndex":4,"createdIndex":4}}\n'
    )
    ks.apply(Set("/d", dir=True, now=now))
    (ev,) = ks.apply(Update("/d", "", expire_at=exp, refresh=True, now=now))
    assert render_event(ev) == (
        b'{"action":"update","node":{"key":"/d","dir":true,"expiration":'
        b'"2026-11-28T23:34:04.152738725Z","ttl":5,"modifiedIndex":7,"createdIndex":6},'
        b'"prevNode":{"key":"/d","dir":true,"modifiedIndex":6,"createdIndex":6}}\n'
    )
    assert render_event(ks.get("/d", now=now)) == (
        b'{"action":"get","node":{"key":"/d","dir":true,"expiration":'
        b'"2026-11-28T23:34:04.152738725Z","ttl":5,"modifiedIndex":6,"createdIndex":6}}\n'
    )
    ks.apply(Set("/g", "v"))
    assert err(ks, Create("/g/x", "1", unique=True)) == (104, "/g", 8)
    assert err(ks, Create("/g/x", "1")) == (104, "/g", 8)
    stats = ks.stats.to_json()
    assert (stats["setsSuccess"], stats["setsFail"], stats["createFail"]) == (7, 2, 2)
    ks.apply(Set("/cas", 'x"y'))
    assert err(ks, CompareAndSwap("/cas", "1", prev_value='a"b')) == (101, '[a"b != x"y]', 9)
