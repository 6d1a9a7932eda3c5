"""Hypothesis drives a 3-node cluster message by message; Raft's safety invariants hold.

Rules pick which message to deliver (so any reordering), drop or duplicate, which node
ticks, proposes or restarts (from its fully persisted storage). Hypothesis shrinks a failing
schedule to a minimal one.
"""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from corral.raft import (
    Config,
    EntryType,
    MessageType,
    ProposalDroppedError,
    RawNode,
    StateType,
    decode_conf_change,
)
from corral.testing.sim import InvariantChecker
from corral.testing.sim.memnet import MemNetwork

IDS = [1, 2, 3]


class Cluster(MemNetwork):
    def __init__(self) -> None:
        self.inv = InvariantChecker()
        self.commit = dict.fromkeys(IDS, 0)
        self.done = dict.fromkeys(IDS, 0)
        super().__init__(IDS, lambda i: Config(id=i, election_tick=4, heartbeat_tick=1))

    def process(self, i: int) -> None:
        n = self.nodes[i]
        st = self.storage[i]
        inv = self.inv
        while n.has_ready():
            rd = n.ready()
            r = n.raft
            if rd.soft_state is not None:
                if rd.soft_state.raft_state == StateType.LEADER:
                    inv.on_leader(0, i, r)
                elif rd.soft_state.raft_state == StateType.CANDIDATE:
                    inv.on_vote(0, i, r.term, i)
            st.append(rd.entries)
            if rd.entries:
                inv.on_append(0, i, r, rd.entries, self.commit[i])
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
                if rd.hard_state.commit > self.commit[i]:
                    inv.on_commit(0, i, r, self.commit[i], rd.hard_state.commit)
                    self.commit[i] = rd.hard_state.commit
            for m in rd.messages:
                if m.type == MessageType.VOTE_RESP and not m.reject:
                    inv.on_vote(0, m.from_, m.term, m.to)
                self.queue.append(m)
            for e in rd.committed_entries:
                inv.on_apply(0, i, r, e, self.done[i])
                self.done[i] = e.index
                if e.type == EntryType.CONF_CHANGE:
                    n.apply_conf_change(decode_conf_change(e.data))
            n.advance()
            inv.on_log_check(0, i, r)

    def restart(self, i: int) -> None:
        # Everything was persisted before advance(): a restart loses only volatile state.
        self.nodes[i] = RawNode(self.config(i), self.storage[i], random.Random(i))
        self.done[i] = 0
        self.process(i)


class ClusterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.c = Cluster()
        self.value = 0

    @rule(node=st.sampled_from(IDS))
    def tick(self, node: int) -> None:
        self.c.tick(node)

    @precondition(lambda self: bool(self.c.queue))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        k = data.draw(st.integers(0, len(self.c.queue) - 1))
        m = self.c.queue[k]
        del self.c.queue[k]
        self.c.nodes[m.to].step(m)
        self.c.process(m.to)

    @precondition(lambda self: bool(self.c.queue))
    @rule(data=st.data(), duplicate=st.booleans())
    def drop_or_duplicate(self, data: st.DataObject, duplicate: bool) -> None:
        k = data.draw(st.integers(0, len(self.c.queue) - 1))
        if duplicate:
            self.c.queue.append(self.c.queue[k])
        else:
            del self.c.queue[k]

    @rule(node=st.sampled_from(IDS))
    def propose(self, node: int) -> None:
        self.value += 1
        try:
            self.c.nodes[node].propose(b"%d" % self.value)
        except ProposalDroppedError:
            return
        self.c.process(node)

    @rule(node=st.sampled_from(IDS))
    def restart(self, node: int) -> None:
        self.c.restart(node)

    @invariant()
    def safe(self) -> None:
        assert self.c.inv.violations == []


ClusterMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=120)
TestCluster = ClusterMachine.TestCase
