"""The keyspace replays the captured etcd 3.4.23 session and answers byte for byte the same.

The steps below are the store-affecting requests of the captured session, in its order, on a
fresh member whose own three internal writes took indexes 1-3 (so user writes start at 4).
Each expected line is the body etcd sent. Request-validation answers (2xx codes, index 0)
belong to the HTTP layer and are left out; they do not change the store.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from corral.kv.commands import (
    Command,
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
from corral.kv.events import Event, render_event
from corral.kv.keyspace import Keyspace
from corral.kv.watch import Watcher

S = 1_000_000_000


def sub(template: str, *args: object) -> str:
    """Fill each "%s" of a captured body in turn (the bodies are full of braces)."""
    for arg in args:
        template = template.replace("%s", str(arg), 1)
    return template


def ns(stamp: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 UTC stamp with up to 9 fraction digits."""
    base, _, frac = stamp.rstrip("Z").partition(".")
    secs = int(datetime.fromisoformat(base).replace(tzinfo=UTC).timestamp())
    return secs * S + int((frac or "0").ljust(9, "0"))


class Session:
    """A keyspace driven like the captured member: a clock, and answers as etcd's bodies."""

    def __init__(self) -> None:
        self.ks = Keyspace()
        self.now = ns("2026-11-28T21:13:00Z")
        for i in range(3):  # member add, member attributes, cluster version
            self.ks.apply(InternalWrite(f"/0/internal/{i}", "x", self.now))

    def write(self, cmd: Command, expected: str, *, no_value: bool = False) -> Event:
        try:
            events = self.ks.apply(cmd)
        except V2Error as err:
            got = json.dumps(err.to_json(), separators=(",", ":"), ensure_ascii=False)
            assert got == expected, f"{cmd}: {got} != {expected}"
            return None  # type: ignore[return-value]
        assert len(events) == 1
        body = render_event(events[0], self.now, no_value=no_value).decode()
        assert body == expected + "\n", f"{cmd}:\n got {body}want {expected}"
        return events[0]

    def get(self, key: str, expected: str, **kw: bool) -> None:
        try:
            ev = self.ks.get(key, **kw)
        except V2Error as err:
            got = json.dumps(err.to_json(), separators=(",", ":"), ensure_ascii=False)
            assert got == expected, f"get {key}: {got} != {expected}"
            return
        body = render_event(ev, self.now).decode()
        assert body == expected + "\n", f"get {key}:\n got {body}want {expected}"

    def watch(self, key: str, since: int, expected: str, recursive: bool = False) -> None:
        got = self.ks.watch(key, recursive, False, since, None)
        assert isinstance(got, Event), f"watch {key} since {since} did not answer from history"
        assert render_event(got, self.now).decode() == expected + "\n"
        assert got.etcd_index == self.ks.index

    def sync(self, now: int, count: int) -> list[Event]:
        events = self.ks.apply(Sync(now))
        assert len(events) == count
        return events


def _probe1(s: Session) -> None:
    s.get("/", '{"action":"get","node":{"dir":true}}')
    s.get("/missing", '{"errorCode":100,"message":"Key not found","cause":"/missing","index":3}')
    s.write(
        Set("/message", "Hello world"),
        '{"action":"set","node":{"key":"/message","value":"Hello world","modifiedIndex":4,"createdIndex":4}}',
    )
    s.write(
        Set("/message", "Hello etcd"),
        '{"action":"set","node":{"key":"/message","value":"Hello etcd","modifiedIndex":5,"createdIndex":5},"prevNode":{"key":"/message","value":"Hello world","modifiedIndex":4,"createdIndex":4}}',
    )
    s.get(
        "/message",
        '{"action":"get","node":{"key":"/message","value":"Hello etcd","modifiedIndex":5,"createdIndex":5}}',
    )
    s.write(Set("/message", "x"), '{"action":"set"}', no_value=True)
    s.write(
        Create("/message", "x"),
        '{"errorCode":105,"message":"Key already exists","cause":"/message","index":6}',
    )
    s.write(
        Delete("/message"),
        '{"action":"delete","node":{"key":"/message","modifiedIndex":7,"createdIndex":6},"prevNode":{"key":"/message","value":"x","modifiedIndex":6,"createdIndex":6}}',
    )
    s.write(
        Delete("/message"),
        '{"errorCode":100,"message":"Key not found","cause":"/message","index":7}',
    )
    ro = '{"errorCode":107,"message":"Root is read only","cause":"/","index":7}'
    for cmd in (
        Set("/", "x"),
        Delete("/"),
        Delete("/", recursive=True),
        Delete("/", dir=True),
        Update("/", "x"),
        CompareAndSwap("/", "x", prev_value="y"),
        Create("/", "x"),
        Set("/", "", refresh=True, expire_at=1),
    ):
        s.write(cmd, ro)
    s.write(
        Create("/", "x", unique=True),
        '{"action":"create","node":{"key":"/00000000000000000008","value":"x","modifiedIndex":8,"createdIndex":8}}',
    )
    s.write(
        Set("/novalue"),
        '{"action":"set","node":{"key":"/novalue","value":"","modifiedIndex":9,"createdIndex":9}}',
    )
    s.get(
        "/novalue",
        '{"action":"get","node":{"key":"/novalue","value":"","modifiedIndex":9,"createdIndex":9}}',
    )
    s.write(
        Set("/emptyvalue", ""),
        '{"action":"set","node":{"key":"/emptyvalue","value":"","modifiedIndex":10,"createdIndex":10}}',
    )
    s.write(
        Set("/a/b/c", "deep"),
        '{"action":"set","node":{"key":"/a/b/c","value":"deep","modifiedIndex":11,"createdIndex":11}}',
    )
    s.get(
        "/a",
        '{"action":"get","node":{"key":"/a","dir":true,"nodes":[{"key":"/a/b","dir":true,"modifiedIndex":11,"createdIndex":11}],"modifiedIndex":11,"createdIndex":11}}',
    )
    s.get(
        "/a",
        '{"action":"get","node":{"key":"/a","dir":true,"nodes":[{"key":"/a/b","dir":true,"nodes":[{"key":"/a/b/c","value":"deep","modifiedIndex":11,"createdIndex":11}],"modifiedIndex":11,"createdIndex":11}],"modifiedIndex":11,"createdIndex":11}}',
        recursive=True,
    )
    not_dir = '{"errorCode":104,"message":"Not a directory","cause":"/a/b/c","index":11}'
    s.write(Set("/a/b/c/d", "x"), not_dir)
    s.get("/a/b/c/d", not_dir)
    s.write(Set("/a", "x"), '{"errorCode":102,"message":"Not a file","cause":"/a","index":11}')
    s.write(Set("/a", dir=True), '{"errorCode":102,"message":"Not a file","cause":"/a","index":11}')
    s.write(
        Set("/a/b", dir=True), '{"errorCode":102,"message":"Not a file","cause":"/a/b","index":11}'
    )
    s.write(
        Set("/newdir", dir=True),
        '{"action":"set","node":{"key":"/newdir","dir":true,"modifiedIndex":12,"createdIndex":12}}',
    )
    s.write(
        Set("/newdir", dir=True),
        '{"errorCode":102,"message":"Not a file","cause":"/newdir","index":12}',
    )
    s.write(
        Create("/newdir", dir=True),
        '{"errorCode":105,"message":"Key already exists","cause":"/newdir","index":12}',
    )
    s.write(
        Update("/newdir"),
        '{"action":"update","node":{"key":"/newdir","dir":true,"modifiedIndex":13,"createdIndex":12},"prevNode":{"key":"/newdir","dir":true,"modifiedIndex":12,"createdIndex":12}}',
    )
    s.write(
        Update("/newdir", "zz"),
        '{"errorCode":102,"message":"Not a file","cause":"/newdir","index":13}',
    )
    # The dir's stored modifiedIndex did not move: prevNode still says 12.
    s.write(
        Update("/newdir", ""),
        '{"action":"update","node":{"key":"/newdir","dir":true,"modifiedIndex":14,"createdIndex":12},"prevNode":{"key":"/newdir","dir":true,"modifiedIndex":12,"createdIndex":12}}',
    )
    s.write(
        Set("/a/b/c", dir=True),
        '{"action":"set","node":{"key":"/a/b/c","dir":true,"modifiedIndex":15,"createdIndex":15},"prevNode":{"key":"/a/b/c","value":"deep","modifiedIndex":11,"createdIndex":11}}',
    )
    s.write(
        Set("/dirval", "ignored", dir=True),
        '{"action":"set","node":{"key":"/dirval","dir":true,"modifiedIndex":16,"createdIndex":16}}',
    )
    s.get(
        "/dirval",
        '{"action":"get","node":{"key":"/dirval","dir":true,"modifiedIndex":16,"createdIndex":16}}',
    )
    s.write(Delete("/newdir"), '{"errorCode":102,"message":"Not a file","cause":"/newdir","index":16}')
    s.write(Delete("/a"), '{"errorCode":102,"message":"Not a file","cause":"/a","index":16}')
    s.write(
        Delete("/a", dir=True),
        '{"errorCode":108,"message":"Directory not empty","cause":"/a","index":16}',
    )
    s.write(
        Delete("/a/b/c", dir=True),
        '{"action":"delete","node":{"key":"/a/b/c","dir":true,"modifiedIndex":17,"createdIndex":15},"prevNode":{"key":"/a/b/c","dir":true,"modifiedIndex":15,"createdIndex":15}}',
    )
    s.write(
        Delete("/a", dir=True, recursive=True),
        '{"action":"delete","node":{"key":"/a","dir":true,"modifiedIndex":18,"createdIndex":11},"prevNode":{"key":"/a","dir":true,"modifiedIndex":11,"createdIndex":11}}',
    )
    s.write(
        Delete("/newdir", dir=True),
        '{"action":"delete","node":{"key":"/newdir","dir":true,"modifiedIndex":19,"createdIndex":12},"prevNode":{"key":"/newdir","dir":true,"modifiedIndex":12,"createdIndex":12}}',
    )
    s.write(
        Delete("/dirval", recursive=True),
        '{"action":"delete","node":{"key":"/dirval","dir":true,"modifiedIndex":20,"createdIndex":16},"prevNode":{"key":"/dirval","dir":true,"modifiedIndex":16,"createdIndex":16}}',
    )
    assert s.ks.index == 20


def _probe2(s: Session) -> None:
    s.get("/newdir", '{"errorCode":100,"message":"Key not found","cause":"/newdir","index":20}')
    s.write(
        Set("/foo", "one"),
        '{"action":"set","node":{"key":"/foo","value":"one","modifiedIndex":21,"createdIndex":21}}',
    )
    for cmd, cause in (
        (CompareAndSwap("/foo", "three", prev_value="two"), "[two != one]"),
        (CompareAndSwap("/foo", "three", prev_index=1), "[1 != 21]"),
        (CompareAndSwap("/foo", "three", prev_value="two", prev_index=1), "[two != one] [1 != 21]"),
    ):
        s.write(cmd, sub('{"errorCode":101,"message":"Compare failed","cause":"%s","index":21}', cause))
    s.write(
        Set("/foo", "three"),  # prevIndex=0 is no condition: a plain set
        '{"action":"set","node":{"key":"/foo","value":"three","modifiedIndex":22,"createdIndex":22},"prevNode":{"key":"/foo","value":"one","modifiedIndex":21,"createdIndex":21}}',
    )
    s.write(
        CompareAndSwap("/foo", "two", prev_value="one"),
        '{"errorCode":101,"message":"Compare failed","cause":"[one != three]","index":22}',
    )
    s.write(
        CompareAndSwap("/foo", "four", prev_value="two"),
        '{"errorCode":101,"message":"Compare failed","cause":"[two != three]","index":22}',
    )
    s.write(
        Create("/foo", "four"),
        '{"errorCode":105,"message":"Key already exists","cause":"/foo","index":22}',
    )
    missing = '{"errorCode":100,"message":"Key not found","cause":"/nokey","index":22}'
    s.write(CompareAndSwap("/nokey", "four", prev_value="x"), missing)
    s.write(CompareAndSwap("/nokey", "four", prev_index=5), missing)
    s.write(Update("/nokey", "four"), missing)
    s.write(
        Create("/nokey", "four"),
        '{"action":"create","node":{"key":"/nokey","value":"four","modifiedIndex":23,"createdIndex":23}}',
    )
    s.write(
        Create("/nokey", "four"),
        '{"errorCode":105,"message":"Key already exists","cause":"/nokey","index":23}',
    )
    s.write(
        CompareAndDelete("/nokey", prev_value="four"),
        '{"action":"compareAndDelete","node":{"key":"/nokey","modifiedIndex":24,"createdIndex":23},"prevNode":{"key":"/nokey","value":"four","modifiedIndex":23,"createdIndex":23}}',
    )
    s.write(
        Set("/d1", dir=True),
        '{"action":"set","node":{"key":"/d1","dir":true,"modifiedIndex":25,"createdIndex":25}}',
    )
    not_file = '{"errorCode":102,"message":"Not a file","cause":"/d1","index":25}'
    s.write(CompareAndSwap("/d1", "y", prev_value="x"), not_file)
    s.write(CompareAndDelete("/d1", prev_value="x"), not_file)
    s.write(CompareAndDelete("/d1", prev_index=1), not_file)
    for cmd, cause in (
        (CompareAndDelete("/foo", prev_value="two"), "[two != three]"),
        (CompareAndDelete("/foo", prev_index=1), "[1 != 22]"),
        (CompareAndDelete("/foo", prev_value="zz", prev_index=1), "[zz != three] [1 != 22]"),
        (CompareAndDelete("/foo", prev_value="four", prev_index=1), "[four != three] [1 != 22]"),
        (CompareAndDelete("/foo", prev_value="four"), "[four != three]"),
        (CompareAndDelete("/foo", prev_index=99999), "[99999 != 22]"),
    ):
        s.write(cmd, sub('{"errorCode":101,"message":"Compare failed","cause":"%s","index":25}', cause))
    s.write(
        CompareAndDelete("/missing", prev_value="x"),
        '{"errorCode":100,"message":"Key not found","cause":"/missing","index":25}',
    )
    # ttl=0: expires "now" (expiration shown, no ttl field).
    s.now = ns("2026-11-28T21:14:22.726565787Z")
    s.write(
        Set("/foo", "x", expire_at=s.now, now=s.now),
        '{"action":"set","node":{"key":"/foo","value":"x","expiration":"2026-11-28T21:14:22.726565787Z","modifiedIndex":26,"createdIndex":26},"prevNode":{"key":"/foo","value":"three","modifiedIndex":22,"createdIndex":22}}',
    )
    s.get(
        "/foo",
        '{"action":"get","node":{"key":"/foo","value":"x","expiration":"2026-11-28T21:14:22.726565787Z","modifiedIndex":26,"createdIndex":26}}',
    )


def _probe3(s: Session) -> None:
    s.now = ns("2026-11-28T21:14:23.1Z")
    expired = s.sync(s.now, 1)
    assert render_event(expired[0]).decode() == (
        '{"action":"expire","node":{"key":"/foo","modifiedIndex":27,"createdIndex":26},"prevNode":{"key":"/foo","value":"x","expiration":"2026-11-28T21:14:22.726565787Z","modifiedIndex":26,"createdIndex":26}}\n'
    )
    s.get("/foo", '{"errorCode":100,"message":"Key not found","cause":"/foo","index":27}')
    s.watch(
        "/foo",
        26,
        '{"action":"set","node":{"key":"/foo","value":"x","expiration":"2026-11-28T21:14:22.726565787Z","modifiedIndex":26,"createdIndex":26},"prevNode":{"key":"/foo","value":"three","modifiedIndex":22,"createdIndex":22}}',
    )
    s.watch(
        "/foo",
        27,
        '{"action":"expire","node":{"key":"/foo","modifiedIndex":27,"createdIndex":26},"prevNode":{"key":"/foo","value":"x","expiration":"2026-11-28T21:14:22.726565787Z","modifiedIndex":26,"createdIndex":26}}',
    )
    exp = "2026-11-28T21:14:37.72751464Z"
    s.now = ns(exp) - 5 * S
    s.write(
        Set("/t1", "bar", expire_at=ns(exp), now=s.now),
        sub('{"action":"set","node":{"key":"/t1","value":"bar","expiration":"%s","ttl":5,"modifiedIndex":28,"createdIndex":28}}', exp),
    )
    s.get(
        "/t1",
        sub('{"action":"get","node":{"key":"/t1","value":"bar","expiration":"%s","ttl":5,"modifiedIndex":28,"createdIndex":28}}', exp),
    )
    exp2 = "2026-11-28T21:14:52.729239687Z"
    s.now = ns(exp2) - 20 * S
    refreshed = s.write(
        Set("/t1", "", expire_at=ns(exp2), refresh=True, now=s.now),
        sub('{"action":"set","node":{"key":"/t1","value":"bar","expiration":"%s","ttl":20,"modifiedIndex":29,"createdIndex":29},"prevNode":{"key":"/t1","value":"bar","expiration":"%s","ttl":5,"modifiedIndex":28,"createdIndex":28}}', exp2, exp),
    )
    assert refreshed.refresh
    exp3 = "2026-11-28T21:15:02.730361751Z"
    s.now = ns(exp3) - 30 * S
    s.write(
        Update("/t1", "", expire_at=ns(exp3), refresh=True, now=s.now),
        sub('{"action":"update","node":{"key":"/t1","value":"bar","expiration":"%s","ttl":30,"modifiedIndex":30,"createdIndex":29},"prevNode":{"key":"/t1","value":"bar","expiration":"%s","ttl":20,"modifiedIndex":29,"createdIndex":29}}', exp3, exp2),
    )
    exp4 = "2026-11-28T21:15:12.731122897Z"
    s.now = ns(exp4) - 40 * S
    s.write(
        CompareAndSwap("/t1", "", prev_value="bar", expire_at=ns(exp4), refresh=True, now=s.now),
        sub('{"action":"compareAndSwap","node":{"key":"/t1","value":"bar","expiration":"%s","ttl":40,"modifiedIndex":31,"createdIndex":29},"prevNode":{"key":"/t1","value":"bar","expiration":"%s","ttl":30,"modifiedIndex":30,"createdIndex":29}}', exp4, exp3),
    )
    s.write(
        CompareAndSwap("/t1", "", prev_index=1, expire_at=ns(exp4), refresh=True, now=s.now),
        '{"errorCode":101,"message":"Compare failed","cause":"[1 != 31]","index":31}',
    )
    s.write(
        Set("/nott", "", expire_at=s.now + 40 * S, refresh=True, now=s.now),
        '{"errorCode":100,"message":"Key not found","cause":"/nott","index":31}',
    )
    # A plain update without ttl drops the TTL (the documented way to make a key permanent).
    s.write(
        Update("/t1", "bar", now=s.now),
        sub('{"action":"update","node":{"key":"/t1","value":"bar","modifiedIndex":32,"createdIndex":29},"prevNode":{"key":"/t1","value":"bar","expiration":"%s","ttl":40,"modifiedIndex":31,"createdIndex":29}}', exp4),
    )
    s.get(
        "/t1", '{"action":"get","node":{"key":"/t1","value":"bar","modifiedIndex":32,"createdIndex":29}}'
    )
    exp5 = "2026-11-28T21:14:35.735227979Z"
    s.now = ns(exp5) - 3 * S
    s.write(
        Set("/t1", "v", expire_at=ns(exp5), now=s.now),
        sub('{"action":"set","node":{"key":"/t1","value":"v","expiration":"%s","ttl":3,"modifiedIndex":33,"createdIndex":33},"prevNode":{"key":"/t1","value":"bar","modifiedIndex":32,"createdIndex":29}}', exp5),
    )
    s.write(
        Update("/t1", "v2", now=s.now),
        sub('{"action":"update","node":{"key":"/t1","value":"v2","modifiedIndex":34,"createdIndex":33},"prevNode":{"key":"/t1","value":"v","expiration":"%s","ttl":3,"modifiedIndex":33,"createdIndex":33}}', exp5),
    )
    exp6 = "2026-11-28T21:14:35.737313974Z"
    s.now = ns(exp6) - 3 * S
    s.write(
        Set("/t1", "v", expire_at=ns(exp6), now=s.now),
        sub('{"action":"set","node":{"key":"/t1","value":"v","expiration":"%s","ttl":3,"modifiedIndex":35,"createdIndex":35},"prevNode":{"key":"/t1","value":"v2","modifiedIndex":34,"createdIndex":33}}', exp6),
    )
    s.write(
        Set("/t1", "v", now=s.now),
        sub('{"action":"set","node":{"key":"/t1","value":"v","modifiedIndex":36,"createdIndex":36},"prevNode":{"key":"/t1","value":"v","expiration":"%s","ttl":3,"modifiedIndex":35,"createdIndex":35}}', exp6),
    )
    exp7 = "2026-11-28T21:14:34.738941157Z"
    s.now = ns(exp7) - 2 * S
    s.write(
        Set("/td", dir=True, expire_at=ns(exp7), now=s.now),
        sub('{"action":"set","node":{"key":"/td","dir":true,"expiration":"%s","ttl":2,"modifiedIndex":37,"createdIndex":37}}', exp7),
    )
    s.write(
        Set("/td/child", "c", now=s.now),
        '{"action":"set","node":{"key":"/td/child","value":"c","modifiedIndex":38,"createdIndex":38}}',
    )
    exp8 = "2026-11-28T21:14:35.74058013Z"
    s.now = ns(exp8) - 3 * S
    s.write(
        Update("/td", expire_at=ns(exp8), now=s.now),
        sub('{"action":"update","node":{"key":"/td","dir":true,"expiration":"%s","ttl":3,"modifiedIndex":39,"createdIndex":37},"prevNode":{"key":"/td","dir":true,"expiration":"%s","ttl":2,"modifiedIndex":37,"createdIndex":37}}', exp8, exp7),
    )
    exp9 = "2026-11-28T21:14:33.741497307Z"
    s.now = ns(exp9) - 1 * S
    s.write(
        Set("/t2", "gone", expire_at=ns(exp9), now=s.now),
        sub('{"action":"set","node":{"key":"/t2","value":"gone","expiration":"%s","ttl":1,"modifiedIndex":40,"createdIndex":40}}', exp9),
    )
    s.now = ns(exp9) + S // 4
    s.sync(s.now, 1)
    s.get("/t2", '{"errorCode":100,"message":"Key not found","cause":"/t2","index":41}')
    # History keeps the ttl as of apply time.
    s.watch(
        "/t2",
        36,
        sub('{"action":"set","node":{"key":"/t2","value":"gone","expiration":"%s","ttl":1,"modifiedIndex":40,"createdIndex":40}}', exp9),
    )
    s.get(
        "/td/child",
        '{"action":"get","node":{"key":"/td/child","value":"c","modifiedIndex":38,"createdIndex":38}}',
    )
    s.watch(
        "/td",
        34,
        sub('{"action":"set","node":{"key":"/td","dir":true,"expiration":"%s","ttl":2,"modifiedIndex":37,"createdIndex":37}}', exp7),
    )
    s.watch(
        "/td/child",
        36,
        '{"action":"set","node":{"key":"/td/child","value":"c","modifiedIndex":38,"createdIndex":38}}',
    )
    # The dir was refreshed to exp8, so the sync at exp7 (its first deadline) leaves it.
    s.sync(ns(exp7) + S // 4, 0)
    s.now = ns(exp8) + S // 4
    s.sync(s.now, 1)
    s.watch(
        "/td/child",
        37,
        '{"action":"set","node":{"key":"/td/child","value":"c","modifiedIndex":38,"createdIndex":38}}',
    )
    s.get("/td", '{"errorCode":100,"message":"Key not found","cause":"/td","index":42}')


def _probe4(s: Session) -> None:
    s.watch(
        "/td/child",
        39,
        '{"action":"expire","node":{"key":"/td","dir":true,"modifiedIndex":42,"createdIndex":37},"prevNode":{"key":"/td","dir":true,"expiration":"2026-11-28T21:14:35.74058013Z","modifiedIndex":37,"createdIndex":37}}',
    )
    s.watch(
        "/td",
        39,
        '{"action":"update","node":{"key":"/td","dir":true,"expiration":"2026-11-28T21:14:35.74058013Z","ttl":3,"modifiedIndex":39,"createdIndex":37},"prevNode":{"key":"/td","dir":true,"expiration":"2026-11-28T21:14:34.738941157Z","ttl":2,"modifiedIndex":37,"createdIndex":37}}',
    )
    s.write(
        Create("/queue", "Job1", unique=True),
        '{"action":"create","node":{"key":"/queue/00000000000000000043","value":"Job1","modifiedIndex":43,"createdIndex":43}}',
    )
    s.write(
        Create("/queue", "Job2", unique=True),
        '{"action":"create","node":{"key":"/queue/00000000000000000044","value":"Job2","modifiedIndex":44,"createdIndex":44}}',
    )
    exp = "2026-11-28T21:16:26.85386936Z"
    s.now = ns(exp) - 100 * S
    s.write(
        Create("/queue", "Job3", unique=True, expire_at=ns(exp), now=s.now),
        sub('{"action":"create","node":{"key":"/queue/00000000000000000045","value":"Job3","expiration":"%s","ttl":100,"modifiedIndex":45,"createdIndex":45}}', exp),
    )
    s.write(
        Create("/queue", dir=True, unique=True),
        '{"action":"create","node":{"key":"/queue/00000000000000000046","dir":true,"modifiedIndex":46,"createdIndex":46}}',
    )
    s.write(
        Create("/queue", unique=True),
        '{"action":"create","node":{"key":"/queue/00000000000000000047","value":"","modifiedIndex":47,"createdIndex":47}}',
    )
    s.write(
        Create("/queue", "x", unique=True),
        '{"action":"create","node":{"key":"/queue/00000000000000000048","value":"x","modifiedIndex":48,"createdIndex":48}}',
    )
    s.write(
        Create("/queue", "y", unique=True),
        '{"action":"create","node":{"key":"/queue/00000000000000000049","value":"y","modifiedIndex":49,"createdIndex":49}}',
    )
    queue = (
        '{"action":"get","node":{"key":"/queue","dir":true,"nodes":[{"key":"/queue/00000000000000000043","value":"Job1","modifiedIndex":43,"createdIndex":43},{"key":"/queue/00000000000000000044","value":"Job2","modifiedIndex":44,"createdIndex":44},{"key":"/queue/00000000000000000045","value":"Job3","expiration":"2026-11-28T21:16:26.85386936Z","ttl":100,"modifiedIndex":45,"createdIndex":45},{"key":"/queue/00000000000000000046","dir":true,"modifiedIndex":46,"createdIndex":46},{"key":"/queue/00000000000000000047","value":"","modifiedIndex":47,"createdIndex":47},{"key":"/queue/00000000000000000048","value":"x","modifiedIndex":48,"createdIndex":48},{"key":"/queue/00000000000000000049","value":"y","modifiedIndex":49,"createdIndex":49}],"modifiedIndex":43,"createdIndex":43}}'
    )
    s.get("/queue", queue, recursive=True, sorted=True)
    s.get("/queue", queue, sorted=True)
    s.write(
        Create("/t1", "x", unique=True),
        '{"errorCode":104,"message":"Not a directory","cause":"/t1","index":49}',
    )
    s.write(
        Create("/newq/sub", "x", unique=True),
        '{"action":"create","node":{"key":"/newq/sub/00000000000000000050","value":"x","modifiedIndex":50,"createdIndex":50}}',
    )
    s.write(
        Set("/_hidden", "h"),
        '{"action":"set","node":{"key":"/_hidden","value":"h","modifiedIndex":51,"createdIndex":51}}',
    )
    s.write(
        Set("/vis/_h2", "h"),
        '{"action":"set","node":{"key":"/vis/_h2","value":"h","modifiedIndex":52,"createdIndex":52}}',
    )
    s.write(
        Set("/vis/v", "v"),
        '{"action":"set","node":{"key":"/vis/v","value":"v","modifiedIndex":53,"createdIndex":53}}',
    )
    s.write(
        Set("/_hd/x", "v"),
        '{"action":"set","node":{"key":"/_hd/x","value":"v","modifiedIndex":54,"createdIndex":54}}',
    )
    # Unsorted listing: etcd's order is a Go map's; compare as a set of children.
    root = json.loads(render_event(s.ks.get("/"), s.now))
    want = json.loads(
        '{"action":"get","node":{"dir":true,"nodes":[{"key":"/novalue","value":"","modifiedIndex":9,"createdIndex":9},{"key":"/d1","dir":true,"modifiedIndex":25,"createdIndex":25},{"key":"/newq","dir":true,"modifiedIndex":50,"createdIndex":50},{"key":"/vis","dir":true,"modifiedIndex":52,"createdIndex":52},{"key":"/00000000000000000008","value":"x","modifiedIndex":8,"createdIndex":8},{"key":"/emptyvalue","value":"","modifiedIndex":10,"createdIndex":10},{"key":"/t1","value":"v","modifiedIndex":36,"createdIndex":36},{"key":"/queue","dir":true,"modifiedIndex":43,"createdIndex":43}]}}'
    )
    assert sorted(map(json.dumps, root["node"].pop("nodes"))) == sorted(
        map(json.dumps, want["node"].pop("nodes"))
    )
    assert root == want
    s.get(
        "/",
        '{"action":"get","node":{"dir":true,"nodes":[{"key":"/00000000000000000008","value":"x","modifiedIndex":8,"createdIndex":8},{"key":"/d1","dir":true,"modifiedIndex":25,"createdIndex":25},{"key":"/emptyvalue","value":"","modifiedIndex":10,"createdIndex":10},{"key":"/newq","dir":true,"nodes":[{"key":"/newq/sub","dir":true,"nodes":[{"key":"/newq/sub/00000000000000000050","value":"x","modifiedIndex":50,"createdIndex":50}],"modifiedIndex":50,"createdIndex":50}],"modifiedIndex":50,"createdIndex":50},{"key":"/novalue","value":"","modifiedIndex":9,"createdIndex":9},{"key":"/queue","dir":true,"nodes":[{"key":"/queue/00000000000000000043","value":"Job1","modifiedIndex":43,"createdIndex":43},{"key":"/queue/00000000000000000044","value":"Job2","modifiedIndex":44,"createdIndex":44},{"key":"/queue/00000000000000000045","value":"Job3","expiration":"2026-11-28T21:16:26.85386936Z","ttl":100,"modifiedIndex":45,"createdIndex":45},{"key":"/queue/00000000000000000046","dir":true,"modifiedIndex":46,"createdIndex":46},{"key":"/queue/00000000000000000047","value":"","modifiedIndex":47,"createdIndex":47},{"key":"/queue/00000000000000000048","value":"x","modifiedIndex":48,"createdIndex":48},{"key":"/queue/00000000000000000049","value":"y","modifiedIndex":49,"createdIndex":49}],"modifiedIndex":43,"createdIndex":43},{"key":"/t1","value":"v","modifiedIndex":36,"createdIndex":36},{"key":"/vis","dir":true,"nodes":[{"key":"/vis/v","value":"v","modifiedIndex":53,"createdIndex":53}],"modifiedIndex":52,"createdIndex":52}]}}',
        recursive=True,
        sorted=True,
    )
    s.get(
        "/_hidden",
        '{"action":"get","node":{"key":"/_hidden","value":"h","modifiedIndex":51,"createdIndex":51}}',
    )
    s.get(
        "/_hd",
        '{"action":"get","node":{"key":"/_hd","dir":true,"nodes":[{"key":"/_hd/x","value":"v","modifiedIndex":54,"createdIndex":54}],"modifiedIndex":54,"createdIndex":54}}',
        recursive=True,
    )
    s.get(
        "/vis",
        '{"action":"get","node":{"key":"/vis","dir":true,"nodes":[{"key":"/vis/v","value":"v","modifiedIndex":53,"createdIndex":53}],"modifiedIndex":52,"createdIndex":52}}',
        recursive=True,
    )
    for i, k in enumerate(("/s/b", "/s/a", "/s/c/z", "/s/c/a", "/s/B", "/s/10", "/s/9")):
        s.write(
            Set(k, "1"),
            sub('{"action":"set","node":{"key":"%s","value":"1","modifiedIndex":%s,"createdIndex":%s}}', k, 55 + i, 55 + i),
        )
    s.get(
        "/s",
        '{"action":"get","node":{"key":"/s","dir":true,"nodes":[{"key":"/s/10","value":"1","modifiedIndex":60,"createdIndex":60},{"key":"/s/9","value":"1","modifiedIndex":61,"createdIndex":61},{"key":"/s/B","value":"1","modifiedIndex":59,"createdIndex":59},{"key":"/s/a","value":"1","modifiedIndex":56,"createdIndex":56},{"key":"/s/b","value":"1","modifiedIndex":55,"createdIndex":55},{"key":"/s/c","dir":true,"nodes":[{"key":"/s/c/a","value":"1","modifiedIndex":58,"createdIndex":58},{"key":"/s/c/z","value":"1","modifiedIndex":57,"createdIndex":57}],"modifiedIndex":57,"createdIndex":57}],"modifiedIndex":55,"createdIndex":55}}',
        recursive=True,
        sorted=True,
    )
    s.get(
        "/s",
        '{"action":"get","node":{"key":"/s","dir":true,"nodes":[{"key":"/s/10","value":"1","modifiedIndex":60,"createdIndex":60},{"key":"/s/9","value":"1","modifiedIndex":61,"createdIndex":61},{"key":"/s/B","value":"1","modifiedIndex":59,"createdIndex":59},{"key":"/s/a","value":"1","modifiedIndex":56,"createdIndex":56},{"key":"/s/b","value":"1","modifiedIndex":55,"createdIndex":55},{"key":"/s/c","dir":true,"modifiedIndex":57,"createdIndex":57}],"modifiedIndex":55,"createdIndex":55}}',
        sorted=True,
    )
    # Unsorted keeps insertion order (any order is legal; this one is deterministic).
    unsorted = json.loads(render_event(s.ks.get("/s", recursive=True), s.now))
    assert [n["key"] for n in unsorted["node"]["nodes"]] == [
        "/s/b", "/s/a", "/s/c", "/s/B", "/s/10", "/s/9"
    ]  # fmt: skip
    s.write(
        Set("/unicodeé", "✓"),
        '{"action":"set","node":{"key":"/unicodeé","value":"✓","modifiedIndex":62,"createdIndex":62}}',
    )
    s.write(
        Set("/sp ace", "a b"),
        '{"action":"set","node":{"key":"/sp ace","value":"a b","modifiedIndex":63,"createdIndex":63}}',
    )
    s.write(
        Set("/q?mark", "1"),
        '{"action":"set","node":{"key":"/q?mark","value":"1","modifiedIndex":64,"createdIndex":64}}',
    )


def test_probe1_basic_actions_dirs_and_root_rules() -> None:
    _probe1(Session())


def test_captured_session_in_order() -> None:
    s = Session()
    _probe1(s)
    _probe2(s)
    _probe3(s)
    _probe4(s)
    assert s.ks.index == 64


@pytest.mark.parametrize("since", [1, 85, 185])
def test_history_window_401(since: int) -> None:
    ks = Keyspace()
    for i in range(85):
        ks.apply(Set("/pre", str(i)))
    for i in range(1100):
        ks.apply(Set("/hist", str(i)))
    assert ks.index == 1185
    with pytest.raises(V2Error) as info:
        ks.watch("/hist", False, False, since, None)
    assert info.value.code == 401
    assert info.value.http_status == 400
    assert info.value.to_json() == {
        "errorCode": 401,
        "message": "The event in requested index is outdated and cleared",
        "cause": f"the requested history has been cleared [186/{since}]",
        "index": 1185,
    }


def test_history_window_oldest_kept() -> None:
    ks = Keyspace()
    for i in range(85):
        ks.apply(Set("/pre", str(i)))
    for i in range(1100):
        ks.apply(Set("/hist", str(i)))
    got = ks.watch("/hist", False, False, 186, None)
    assert isinstance(got, Event)
    assert render_event(got).decode() == (
        '{"action":"set","node":{"key":"/hist","value":"100","modifiedIndex":186,"createdIndex":186},"prevNode":{"key":"/hist","value":"99","modifiedIndex":185,"createdIndex":185}}\n'
    )
    assert not isinstance(ks.watch("/hist", False, False, 0, None), Event)
    assert isinstance(ks.watch("/hist", False, False, 1186, None), Watcher)
