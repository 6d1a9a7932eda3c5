"""The cached registry view: events applied to it give what a fresh read gives.

The property runs on real stores (etcd 3.4 and a 3-member corral cluster): random writes,
deletes, recursive deletes and conditional writes under a fresh root, followed by a
:class:`Follower`; once the view shows the last write's index it must equal a fresh
recursive read, leaf by leaf and decoded into fleet's units. The fallback paths are forced:
a watch that starts from an index the store's 1000-event history no longer holds (401
``EventIndexCleared``) and a watch far behind with a ``lag_limit``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.client import EtcdError, KeyNotFound
from corral.client.aio import AsyncClient
from corral.fleet.follow import Follower
from corral.fleet.registry import (
    JobState,
    RegistryUnit,
    decode_units,
    encode_job_object,
    encode_unit_blob,
)
from corral.fleet.store import KV, node_json
from corral.fleet.unitfile import UnitFile
from corral.fleet.view import JobsView, TreeView, WatchEvent, flatten, overlay_targets
from corral.testing.servers import corral_etcd_command, real_etcd_command, start_cluster

UNIT = UnitFile.parse("[Service]\nExecStart=/bin/true\n")
OTHER = UnitFile.parse("[Service]\nExecStart=/bin/false\n")  # its blob is never written
_roots = itertools.count()


@pytest.fixture(scope="module", params=["etcd", "corral3"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    if request.param == "etcd":
        command, size = real_etcd_command(), 1
    else:
        command, size = corral_etcd_command(), 3
    base = tmp_path_factory.mktemp(request.param)
    with start_cluster(command, Path(base), size=size, prefix="v") as members:
        yield [m.client_url for m in members]


# --- pure ------------------------------------------------------------------------------------


def test_apply_set_delete_recursive_expire_and_stale_events() -> None:
    v = TreeView("/p/job")
    v.reset((), 10)
    assert not v.apply(WatchEvent("set", "/p/job/a/object", 10, "x"))  # not after the read
    assert v.apply(WatchEvent("set", "/p/job/a/object", 11, "x"))
    assert v.apply(WatchEvent("create", "/p/job/a/sub/k", 12, "y"))
    assert v.apply(WatchEvent("set", "/p/job/b/target", 13, "m1"))
    assert not v.apply(WatchEvent("set", "/p/jobx/a", 14, "outside"))
    assert v.leaves() == {"/p/job/a/object": "x", "/p/job/a/sub/k": "y", "/p/job/b/target": "m1"}
    assert v.apply(WatchEvent("delete", "/p/job/a/sub", 15, None, dir=True))  # recursive
    assert v.apply(WatchEvent("expire", "/p/job/b/target", 16))
    assert v.leaves() == {"/p/job/a/object": "x"}
    assert v.dirty == {"a", "b"}
    assert v.apply(WatchEvent("compareAndDelete", "/p/job/a", 17))
    assert v.leaves() == {} and v.index == 17
    v.apply(WatchEvent("set", "/p/job/c/x", 18, "1"))
    v.apply(WatchEvent("delete", "/p/job", 19, dir=True))  # the root itself
    assert v.leaves() == {} and v.tree() == {"key": "/p/job", "dir": True, "nodes": []}


def test_group_node_rebuilds_nested_directories() -> None:
    v = TreeView("/p/machines")
    tree = {
        "key": "/p/machines",
        "dir": True,
        "nodes": [
            {
                "key": "/p/machines/m1",
                "dir": True,
                "nodes": [
                    {"key": "/p/machines/m1/object", "value": "{}"},
                    {
                        "key": "/p/machines/m1/metadata",
                        "dir": True,
                        "nodes": [{"key": "/p/machines/m1/metadata/role", "value": "web"}],
                    },
                ],
            }
        ],
    }
    v.reset(flatten(tree), 5)
    assert dict(flatten(v.tree())) == dict(flatten(tree))
    node = v.group_node("m1")
    assert node is not None and [n["key"] for n in node["nodes"]] == [
        "/p/machines/m1/metadata",
        "/p/machines/m1/object",
    ]


# --- on real stores --------------------------------------------------------------------------

FIELDS = ["object", "target", "target-state", "job-state", "deep/k"]
VALUES = ["launched", "inactive", "m1", "", "not json"]


def _value(draw: st.DrawFn, unit: str) -> str:
    return draw(
        st.sampled_from(
            [
                encode_job_object(f"{unit}.service", UNIT.hash),
                encode_job_object(f"{unit}.service", OTHER.hash),
                *VALUES,
            ]
        )
    )


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[str, str, str]]:
    out = []
    for _ in range(draw(st.integers(1, 25))):
        unit = draw(st.sampled_from(["a", "b", "c"]))
        op = draw(st.sampled_from(["set", "set", "set", "create", "delete", "rdelete", "cad"]))
        path = f"{unit}/{draw(st.sampled_from(FIELDS))}"
        if op == "rdelete":
            path = unit
        out.append((op, path, _value(draw, unit)))
    return out


async def _apply(c: AsyncClient, root: str, ops: list[tuple[str, str, str]]) -> int:
    last = 0
    for op, path, value in ops:
        key = f"{root}/{path}"
        try:
            if op == "set":
                r = await c.set(key, value)
            elif op == "create":
                r = await c.create(key, value)
            elif op == "delete":
                r = await c.delete(key)
            elif op == "rdelete":
                r = await c.delete(key, recursive=True)
            else:
                r = await c.compare_and_delete(key, prev_value=value or "x")
        except EtcdError:
            continue  # refused (exists, not a file, compare failed …): no event
        assert r.node is not None
        last = max(last, r.node.modified_index)
    return last


async def _fresh(c: AsyncClient, root: str) -> dict[str, object] | None:
    try:
        r = await c.get(root, recursive=True, sorted=True)
    except KeyNotFound:
        return None
    return node_json(r.node) if r.node is not None else None


async def _follow_and_compare(
    urls: list[str], ops: list[tuple[str, str, str]], before: list[tuple[str, str, str]]
) -> None:
    root = f"/view{next(_roots)}/job"
    async with AsyncClient(urls) as c:
        await _apply(c, root, before)
        await c.set(f"/view-blobs/{UNIT.hash_hex}", encode_unit_blob(UNIT))
        kv = KV(AsyncClient(urls))
        view = JobsView(root)
        follower = Follower(kv, view)
        task = asyncio.create_task(follower.run())
        try:
            await asyncio.wait_for(follower.ready.wait(), 20)
            last = await _apply(c, root, ops)
            assert await follower.caught_up(last, 20), (view.index, last)
            fresh = await _fresh(c, root)
            assert view.leaves() == dict(flatten(fresh))
            blobs = {UNIT.hash_hex: UNIT}
            units, problems, missing = view.units(blobs)
            assert (units, problems) == decode_units(fresh, None, dict(blobs))
            assert missing <= {OTHER.hash_hex}
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await kv.close()


@settings(max_examples=12, deadline=None)
@given(before=operations(), ops=operations())
def test_view_equals_a_fresh_read_after_random_events(
    store: list[str], before: list[tuple[str, str, str]], ops: list[tuple[str, str, str]]
) -> None:
    asyncio.run(_follow_and_compare(store, ops, before))


def test_watch_from_a_compacted_history_rereads_the_tree(store: list[str]) -> None:
    """A view left at an index the history no longer holds: the watch gets 401, the tree is
    read again, and the view ends equal to the store."""

    async def scenario() -> None:
        root = f"/view{next(_roots)}/job"
        async with AsyncClient(store) as c:
            await c.set(f"{root}/a/object", "old")
            await c.set(f"{root}/gone/target", "m1")
            kv = KV(AsyncClient(store))
            view = TreeView(root)
            follower = Follower(kv, view)
            await follower.read()
            stale = view.index
            await c.set(f"{root}/a/object", "new")
            await c.delete(f"{root}/gone", recursive=True)
            names = iter(range(1100))  # > etcd v2's 1000-event history, outside the root

            async def writer() -> None:
                for i in names:
                    await c.set(f"/view-noise/{i % 50}", str(i))

            await asyncio.gather(*(writer() for _ in range(16)))
            last = (await c.set(f"{root}/b/target", "m2")).node
            assert last is not None
            task = asyncio.create_task(follower.run(start_index=stale + 1))
            try:
                assert await follower.caught_up(last.modified_index, 30)
                assert follower.rereads >= 1
                assert view.leaves() == dict(flatten(await _fresh(c, root)))
                assert view.leaves() == {f"{root}/a/object": "new", f"{root}/b/target": "m2"}
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await kv.close()

    asyncio.run(scenario())


def test_watch_far_behind_rereads_once_instead_of_every_event(store: list[str]) -> None:
    async def scenario() -> None:
        root = f"/view{next(_roots)}/job"
        async with AsyncClient(store) as c:
            kv = KV(AsyncClient(store))
            view = TreeView(root)
            follower = Follower(kv, view, lag_limit=10)
            await follower.read()
            start = view.index + 1
            last = 0
            for i in range(60):
                r = await c.set(f"{root}/u{i % 7}/target-state", str(i))
                last = r.node.modified_index if r.node is not None else 0
            task = asyncio.create_task(follower.run(start_index=start))
            try:
                assert await follower.caught_up(last, 30)
                assert follower.rereads >= 1
                assert follower.events < 60  # the queued events were not fetched one by one
                assert view.leaves() == dict(flatten(await _fresh(c, root)))
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await kv.close()

    asyncio.run(scenario())


def test_engine_overlays_its_own_writes_until_the_view_shows_them() -> None:
    a = RegistryUnit("a.service", UNIT, JobState.LAUNCHED, "")
    b = RegistryUnit("b.service", UNIT, JobState.LAUNCHED, "m1")
    writes = {"a.service": ("m2", 12), "b.service": ("", 9), "gone.service": ("m1", 13)}
    units, ahead = overlay_targets([a, b], writes, index=10)
    assert [(u.name, u.target) for u in units] == [("a.service", "m2"), ("b.service", "m1")]
    assert ahead == {"a.service": ("m2", 12), "gone.service": ("m1", 13)}
    units, ahead = overlay_targets([a, b], ahead, index=13)
    assert units == [a, b] and ahead == {}
