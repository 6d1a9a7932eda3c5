"""Raft safety properties, checked incrementally after every step of the simulation.

Each check is fed by what the driver observes (a node's Ready, its role changes, the
messages it sends), so the cost per step is proportional to what changed, not to log size:

* election safety — at most one leader per term (thesis §3.6.3);
* one vote per term — a node never grants two candidates a vote in one term, even across a
  crash (the vote must have been durable before the grant was sent);
* log matching — every (index, term) identifies one entry whose predecessor always has the
  same term (by induction: identical prefixes, §3.5);
* leader completeness — a new leader holds every entry known committed (§3.6.3);
* the commit rule — a leader advances its commit index only to an entry of its own term;
* no committed entry is ever overwritten or lost from a node's log;
* state-machine safety — entries are applied in order, only once committed, and every node
  applies the same entry at an index.
"""

from __future__ import annotations

from corral.raft import Entry, EntryType, Raft, StateType

__all__ = ["InvariantChecker"]


class InvariantChecker:
    def __init__(self) -> None:
        self.violations: list[str] = []
        self.leaders: dict[int, int] = {}  # term → leader
        self.votes: dict[tuple[int, int], int] = {}  # (voter, term) → candidate
        self.entries: dict[tuple[int, int], tuple[int, EntryType, bytes]] = {}
        self.committed: dict[int, tuple[int, bytes]] = {}  # index → (term, data)
        self.max_committed = 0

    def fail(self, now: int, text: str) -> None:
        self.violations.append(f"t={now}ms: {text}")

    def on_leader(self, now: int, node: int, raft: Raft) -> None:
        term = raft.term
        other = self.leaders.setdefault(term, node)
        if other != node:
            self.fail(now, f"election safety: {other} and {node} both lead term {term}")
        log = raft.log
        first = log.first_index()
        for i in range(first, self.max_committed + 1):
            want = self.committed.get(i)
            if want is None:
                continue
            got = log.zero_term_on_range_err(i)
            if got != want[0]:
                self.fail(
                    now,
                    f"leader completeness: leader {node} of term {term} has term {got} "
                    f"at committed index {i} (committed term {want[0]})",
                )
                return

    def on_vote(self, now: int, voter: int, term: int, candidate: int) -> None:
        other = self.votes.setdefault((voter, term), candidate)
        if other != candidate:
            self.fail(now, f"double vote: {voter} voted for {other} and {candidate} in term {term}")

    def on_append(
        self, now: int, node: int, raft: Raft, entries: tuple[Entry, ...], commit: int
    ) -> None:
        """`commit` is the node's commit index before these entries were written."""
        log = raft.log
        for e in entries:
            prev = log.zero_term_on_range_err(e.index - 1) if e.index > 1 else 0
            key = (e.index, e.term)
            seen = self.entries.setdefault(key, (prev, e.type, e.data))
            if seen != (prev, e.type, e.data):
                self.fail(
                    now,
                    f"log matching: node {node} holds entry {key} after term {prev}; "
                    f"elsewhere it follows term {seen[0]}"
                    + (" with other data" if seen[1:] != (e.type, e.data) else ""),
                )
                return
            # A stale leader may append at an index committed elsewhere; only an entry the
            # node itself knew committed must never be replaced.
            c = self.committed.get(e.index) if e.index <= commit else None
            if c is not None and c != (e.term, e.data):
                self.fail(now, f"node {node} overwrote committed entry {e.index} (term {c[0]})")
                return

    def on_commit(self, now: int, node: int, raft: Raft, old: int, new: int) -> None:
        log = raft.log
        if new > log.last_index():
            self.fail(now, f"node {node} commit {new} beyond its last index {log.last_index()}")
            return
        lo = max(old + 1, log.first_index())
        for e in log.slice(lo, new + 1) if lo <= new else ():
            c = self.committed.setdefault(e.index, (e.term, e.data))
            if c != (e.term, e.data):
                self.fail(
                    now,
                    f"state-machine safety: node {node} commits term {e.term} at {e.index}, "
                    f"committed elsewhere with term {c[0]}",
                )
                return
        self.max_committed = max(self.max_committed, new)
        if raft.state == StateType.LEADER and log.zero_term_on_range_err(new) != raft.term:
            # §3.6.2: a leader commits by counting replicas only entries of its own term.
            self.fail(
                now,
                f"commit rule: leader {node} of term {raft.term} committed index {new} "
                f"of term {log.zero_term_on_range_err(new)} by counting",
            )

    def on_apply(self, now: int, node: int, raft: Raft, e: Entry, applied: int) -> None:
        if e.index != applied + 1:
            self.fail(now, f"node {node} applied {e.index} after {applied}")
        if e.index > raft.log.committed:
            self.fail(
                now, f"node {node} applied {e.index} beyond its commit index {raft.log.committed}"
            )
        c = self.committed.get(e.index)
        if c is not None and c != (e.term, e.data):
            self.fail(
                now,
                f"state-machine safety: node {node} applied term {e.term} at {e.index}, "
                f"committed term {c[0]}",
            )

    def on_log_check(self, now: int, node: int, raft: Raft) -> None:
        log = raft.log
        if log.committed > log.last_index():
            self.fail(
                now,
                f"node {node} lost committed entries: commit {log.committed}, "
                f"last index {log.last_index()}",
            )
