"""Hypothesis state machine: the Raft log (stable + unstable parts) against a list model."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from corral.raft import Entry
from corral.raft.errors import InvariantError
from corral.raft.log import RaftLog
from corral.raft.storage import MemoryStorage


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.storage = MemoryStorage()
        self.log = RaftLog(self.storage)
        self.model: list[int] = []  # model[i-1] = term of entry i
        self.first = 1  # first index still held (after compaction)
        self.term = 1

    def _entries(self, start: int, terms: list[int]) -> list[Entry]:
        return [Entry(t, start + k) for k, t in enumerate(terms)]

    @rule(n=st.integers(1, 4), bump=st.booleans())
    def leader_append(self, n: int, bump: bool) -> None:
        if bump:
            self.term += 1
        start = len(self.model) + 1
        self.log.append(self._entries(start, [self.term] * n))
        self.model.extend([self.term] * n)

    @rule(
        prev=st.integers(0, 30),
        terms=st.lists(st.integers(1, 6), min_size=0, max_size=4),
        commit=st.integers(0, 30),
    )
    def follower_append(self, prev: int, terms: list[int], commit: int) -> None:
        terms = sorted(terms)
        prev_term = self.model[prev - 1] if 0 < prev <= len(self.model) else 0
        if prev > len(self.model) or prev < self.first - 1:
            return
        if terms and prev_term > terms[0]:
            return  # terms never decrease along a log
        ents = self._entries(prev + 1, terms)
        # Model: truncate at the first conflict only.
        conflict = next(
            (
                e.index
                for e in ents
                if e.index > len(self.model) or self.model[e.index - 1] != e.term
            ),
            0,
        )
        if conflict and conflict <= self.log.committed:
            try:
                self.log.maybe_append(prev, prev_term, commit, tuple(ents))
            except InvariantError:
                return
            raise AssertionError("truncating committed entries must be refused")
        before_commit = self.log.committed
        last = self.log.maybe_append(prev, prev_term, commit, tuple(ents))
        assert last == prev + len(ents)
        if conflict:
            del self.model[conflict - 1 :]
            self.model.extend(e.term for e in ents[conflict - prev - 1 :])
        assert self.log.committed == max(before_commit, min(commit, prev + len(ents)))

    @rule(data=st.data())
    def persist(self, data: st.DataObject) -> None:
        ents = self.log.unstable_entries()
        if not ents:
            return
        k = data.draw(st.integers(1, len(ents)))
        self.storage.append(ents[:k])
        self.log.stable_to(ents[k - 1].index, ents[k - 1].term)

    @precondition(lambda self: self.log.committed > self.log.applied)
    @rule()
    def apply(self) -> None:
        ents = self.log.next_committed_ents()
        assert [e.term for e in ents] == self.model[self.log.applied : self.log.committed]
        self.log.applied_to(ents[-1].index)

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        stable_applied = min(self.log.applied, self.storage.last_index())
        if stable_applied < self.first:
            return
        i = data.draw(st.integers(self.first, stable_applied))
        self.storage.compact(i)
        self.first = i + 1

    @invariant()
    def log_equals_model(self) -> None:
        assert self.log.last_index() == len(self.model)
        assert self.log.first_index() == self.first
        got = [e.term for e in self.log.slice(self.first, len(self.model) + 1)]
        assert got == self.model[self.first - 1 :]
        assert self.log.applied <= self.log.committed <= self.log.last_index()


LogMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30)
TestLog = LogMachine.TestCase
