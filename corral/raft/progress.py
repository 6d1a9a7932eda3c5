"""The leader's view of each follower: Progress, Inflights, and the quorum arithmetic.

Mirrors etcd-io/raft `tracker/` and its `design.md`. A follower's Progress is in one of
three states:

* PROBE — we do not know its log; send at most one AppendEntries per heartbeat interval
  and wait for the answer (`msg_app_flow_paused`).
* REPLICATE — it accepted our last append; stream entries optimistically, bounded by
  `Inflights` (at most `max_inflight_msgs` messages and `max_inflight_bytes` in flight).
* SNAPSHOT — it needs a snapshot; send nothing else until the snapshot is reported.

Invariant: `match` never decreases while a node stays leader (a stale or reordered
AppendEntries response must not move it back) and `next > match`.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum

__all__ = ["Inflights", "Progress", "ProgressState", "ProgressTracker", "VoteResult"]


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class VoteResult(IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


class Inflights:
    """Sliding window of in-flight appends: (last index, bytes) per message."""

    __slots__ = ("_q", "bytes", "max_bytes", "size")

    def __init__(self, size: int, max_bytes: int = 0) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._q: deque[tuple[int, int]] = deque()
        self.bytes = 0

    def add(self, index: int, nbytes: int) -> None:
        if self.full():
            raise OverflowError("cannot add into a full inflights window")
        self._q.append((index, nbytes))
        self.bytes += nbytes

    def free_le(self, to: int) -> None:
        """Free every inflight message whose last index is ≤ `to`."""
        q = self._q
        while q and q[0][0] <= to:
            self.bytes -= q.popleft()[1]

    def full(self) -> bool:
        return len(self._q) >= self.size or (0 < self.max_bytes <= self.bytes)

    def count(self) -> int:
        return len(self._q)

    def free_first_one(self) -> None:
        if self._q:
            self.bytes -= self._q.popleft()[1]

    def reset(self) -> None:
        self._q.clear()
        self.bytes = 0


class Progress:
    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "msg_app_flow_paused",
        "next",
        "pending_snapshot",
        "recent_active",
        "state",
    )

    def __init__(
        self, next_index: int, max_inflight: int, max_bytes: int = 0, learner: bool = False
    ) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.recent_active = False
        self.msg_app_flow_paused = False
        self.inflights = Inflights(max_inflight, max_bytes)
        self.is_learner = learner

    def __repr__(self) -> str:
        return f"Progress({self.state.name} match={self.match} next={self.next})"

    def _reset_state(self, state: ProgressState) -> None:
        self.msg_app_flow_paused = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def sent_entries(self, entries: int, nbytes: int) -> None:
        """Record that an append of `entries` entries starting at `next` went out."""
        if self.state == ProgressState.REPLICATE:
            if entries > 0:
                self.next += entries
                self.inflights.add(self.next - 1, nbytes)
            self.msg_app_flow_paused = self.inflights.full()
        elif self.state == ProgressState.PROBE:
            self.msg_app_flow_paused = True

    def maybe_update(self, n: int) -> bool:
        """An ack for index `n` arrived; returns whether it told us anything new."""
        if self.match < n:
            self.match = n
            self.msg_app_flow_paused = False
            updated = True
        else:
            updated = False
        self.next = max(self.next, n + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append at `rejected`; returns False if it is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False  # stale: we already know it matches further
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # stale: not the probe we are waiting for
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.msg_app_flow_paused = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.msg_app_flow_paused
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True


class ProgressTracker:
    """The configuration (voters, learners) plus each member's Progress and votes."""

    def __init__(self, max_inflight: int, max_inflight_bytes: int = 0) -> None:
        self.voters: set[int] = set()
        self.learners: set[int] = set()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def is_singleton(self) -> bool:
        return len(self.voters) == 1

    def committed(self) -> int:
        """Largest index replicated on a majority of voters (0 with no voters)."""
        if not self.voters:
            return 0
        matches = sorted((self.progress[v].match for v in self.voters), reverse=True)
        return matches[self.quorum() - 1]

    def record_vote(self, node: int, granted: bool) -> None:
        self.votes.setdefault(node, granted)

    def reset_votes(self) -> None:
        self.votes = {}

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        granted = sum(1 for v in self.voters if self.votes.get(v) is True)
        rejected = sum(1 for v in self.voters if self.votes.get(v) is False)
        q = self.quorum()
        if granted >= q:
            return granted, rejected, VoteResult.WON
        if len(self.voters) - rejected < q:
            return granted, rejected, VoteResult.LOST
        return granted, rejected, VoteResult.PENDING

    def quorum_active(self) -> bool:
        active = sum(1 for v in self.voters if self.progress[v].recent_active)
        return active >= self.quorum()

    def add(self, node: int, next_index: int, learner: bool = False) -> None:
        self.progress[node] = Progress(
            next_index, self.max_inflight, self.max_inflight_bytes, learner
        )
        if learner:
            self.learners.add(node)
            self.voters.discard(node)
        else:
            self.voters.add(node)
            self.learners.discard(node)

    def remove(self, node: int) -> None:
        self.voters.discard(node)
        self.learners.discard(node)
        self.progress.pop(node, None)

    def members(self) -> list[int]:
        return sorted(self.progress)
