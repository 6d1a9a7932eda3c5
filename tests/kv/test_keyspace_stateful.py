"""Hypothesis state machine: the keyspace tree against a plain dict model of etcd's rules."""

from __future__ import annotations

from dataclasses import dataclass

import msgpack
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from corral.kv.commands import (
    Command,
    CompareAndDelete,
    CompareAndSwap,
    Create,
    Delete,
    Set,
    Update,
)
from corral.kv.errors import V2Error
from corral.kv.events import Action
from corral.kv.keyspace import Keyspace

keys = st.lists(st.sampled_from(["a", "b", "_h"]), min_size=1, max_size=3).map(
    lambda parts: "/" + "/".join(parts)
)
values = st.sampled_from(["", "x", "y"])


@dataclass
class Entry:
    dir: bool
    value: str | None
    created: int
    modified: int


class Model:
    """etcd's v2 rules for files and dirs, written as directly as possible over a dict."""

    def __init__(self) -> None:
        self.nodes: dict[str, Entry] = {}
        self.index = 0

    @staticmethod
    def prefixes(key: str) -> list[str]:
        parts = key[1:].split("/")
        return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]

    def lookup(self, key: str) -> tuple[int, str] | Entry:
        for p in [*self.prefixes(key), key]:
            if p not in self.nodes:
                return (100, p)
            if not self.nodes[p].dir and p != key:
                return (104, p)
        return self.nodes[key]

    def file_in_the_way(self, key: str) -> str | None:
        for p in self.prefixes(key):
            if p in self.nodes and not self.nodes[p].dir:
                return p
        return None

    def make(self, key: str, is_dir: bool, value: str) -> None:
        self.index += 1
        for p in self.prefixes(key):
            self.nodes.setdefault(p, Entry(True, None, self.index, self.index))
        self.nodes[key] = Entry(is_dir, None if is_dir else value, self.index, self.index)

    def drop(self, key: str) -> None:
        self.index += 1
        for p in [p for p in self.nodes if p == key or p.startswith(key + "/")]:
            del self.nodes[p]

    def compare(self, e: Entry, pv: str, pi: int) -> tuple[int, str] | None:
        if (pv and e.value != pv) or (pi and e.modified != pi):
            return (101, "")
        return None


class KeyspaceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ks = Keyspace()
        self.model = Model()

    def check(self, cmd: Command, expected: tuple[int, str] | None) -> None:
        try:
            events = self.ks.apply(cmd)
        except V2Error as err:
            assert expected is not None, f"{cmd} failed: {err!r}"
            assert err.code == expected[0], (cmd, err, expected)
            if expected[1]:
                assert err.cause == expected[1], (cmd, err, expected)
            assert err.index == self.ks.index
            return
        assert expected is None, f"{cmd} succeeded, model expected {expected}"
        assert len(events) == 1 and events[0].index == self.ks.index
        assert self.ks.history.last_index == self.ks.index  # already in the history

    @rule(key=keys, value=values, is_dir=st.booleans())
    def set(self, key: str, value: str, is_dir: bool) -> None:
        m = self.model
        found = m.lookup(key)
        if isinstance(found, tuple) and found[0] == 104:
            expected: tuple[int, str] | None = found
        elif isinstance(found, Entry) and found.dir:
            expected = (102, key)
        else:
            expected = None
        self.check(Set(key, value, dir=is_dir), expected)
        if expected is None:
            m.make(key, is_dir, value)

    @rule(key=keys, value=values, is_dir=st.booleans())
    def create(self, key: str, value: str, is_dir: bool) -> None:
        m = self.model
        blocker = m.file_in_the_way(key)
        if blocker is not None:
            expected: tuple[int, str] | None = (104, blocker)
        elif key in m.nodes:
            expected = (105, key)
        else:
            expected = None
        self.check(Create(key, value, dir=is_dir), expected)
        if expected is None:
            m.make(key, is_dir, value)

    @rule(key=keys)
    def create_in_order(self, key: str) -> None:
        m = self.model
        blocker = m.file_in_the_way(key + "/x")
        events = None
        try:
            events = self.ks.apply(Create(key, "q", unique=True))
        except V2Error as err:
            assert blocker is not None and (err.code, err.cause) == (104, blocker)
            return
        assert blocker is None
        new_key = f"{key}/{m.index + 1:020d}"
        assert events[0].key == new_key and events[0].action == Action.CREATE
        m.make(new_key, False, "q")

    @rule(key=keys, value=values)
    def update(self, key: str, value: str) -> None:
        m = self.model
        found = m.lookup(key)
        if isinstance(found, tuple):
            expected: tuple[int, str] | None = found
        elif found.dir and value:
            expected = (102, key)
        else:
            expected = None
        self.check(Update(key, value), expected)
        if expected is None and isinstance(found, Entry):
            m.index += 1
            if not found.dir:  # a dir's stored modifiedIndex never changes
                found.value, found.modified = value, m.index

    @rule(key=keys, value=values, pv=values, pi=st.integers(0, 30))
    def compare_and_swap(self, key: str, value: str, pv: str, pi: int) -> None:
        m = self.model
        found = m.lookup(key)
        if isinstance(found, tuple):
            expected: tuple[int, str] | None = found
        elif found.dir:
            expected = (102, key)
        else:
            expected = m.compare(found, pv, pi)
        self.check(CompareAndSwap(key, value, prev_value=pv, prev_index=pi), expected)
        if expected is None and isinstance(found, Entry):
            m.index += 1
            found.value, found.modified = value, m.index

    @rule(key=keys, is_dir=st.booleans(), recursive=st.booleans())
    def delete(self, key: str, is_dir: bool, recursive: bool) -> None:
        m = self.model
        found = m.lookup(key)
        if isinstance(found, tuple):
            expected: tuple[int, str] | None = found
        elif found.dir and not (is_dir or recursive):
            expected = (102, key)
        elif found.dir and not recursive and any(p.startswith(key + "/") for p in m.nodes):
            expected = (108, key)
        else:
            expected = None
        self.check(Delete(key, dir=is_dir, recursive=recursive), expected)
        if expected is None:
            m.drop(key)

    @rule(key=keys, pv=values, pi=st.integers(0, 30))
    def compare_and_delete(self, key: str, pv: str, pi: int) -> None:
        m = self.model
        found = m.lookup(key)
        if isinstance(found, tuple):
            expected: tuple[int, str] | None = found
        elif found.dir:
            expected = (102, key)
        else:
            expected = m.compare(found, pv, pi)
        self.check(CompareAndDelete(key, prev_value=pv, prev_index=pi), expected)
        if expected is None:
            m.drop(key)

    @rule(key=keys)
    def get(self, key: str) -> None:
        found = self.model.lookup(key)
        try:
            ev = self.ks.get(key)
        except V2Error as err:
            assert isinstance(found, tuple) and (err.code, err.cause) == found
            return
        assert isinstance(found, Entry)
        assert ev.node.dir == found.dir and ev.node.value == found.value
        if found.dir:
            want = sorted(
                p
                for p in self.model.nodes
                if p.rsplit("/", 1)[0] == key and not p.rsplit("/", 1)[1].startswith("_")
            )
            assert sorted(n.key for n in ev.node.nodes or ()) == want

    @invariant()
    def same_tree(self) -> None:
        m = self.model
        assert self.ks.index == m.index
        stored = msgpack.unpackb(self.ks.snapshot())[3]
        assert {row[0]: (row[2], row[1], row[3], row[4]) for row in stored} == {
            k: (e.dir, e.value, e.created, e.modified) for k, e in m.nodes.items()
        }
        assert self.ks.get("/").node.dir


TestKeyspaceStateful = KeyspaceMachine.TestCase
TestKeyspaceStateful.settings = settings(max_examples=40, stateful_step_count=30)
