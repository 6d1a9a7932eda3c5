"""The simulator's parts on their own: disk, network, state machine, invariant checker."""

from __future__ import annotations

import random

from corral.raft import Config, Entry, HardState, RawNode, StateType
from corral.raft.storage import MemoryStorage
from corral.testing.linearizability import KVInput
from corral.testing.sim import InvariantChecker, NetworkOptions, SimDisk, SimNetwork
from corral.testing.sim.kv import KVStateMachine, encode_command


def test_disk_loses_only_unsynced_writes_on_crash() -> None:
    d = SimDisk()
    d.save(None, (Entry(1, 1), Entry(1, 2)), HardState(1, 1, 0), sync=True)
    d.save(None, (Entry(1, 3),), HardState(1, 1, 2), sync=False)
    assert d.crash() is True
    st, _ = d.load()
    assert st.last_index() == 2 and st.hard_state == HardState(1, 1, 0)
    assert d.crash() is False  # nothing left to lose


def test_disk_overwrites_from_the_first_written_index() -> None:
    d = SimDisk()
    d.save(None, (Entry(1, 1), Entry(1, 2), Entry(1, 3)), None, sync=True)
    d.save(None, (Entry(2, 2),), None, sync=True)
    st, _ = d.load()
    assert [st.term(i) for i in (1, 2)] == [1, 2] and st.last_index() == 2


def test_network_partitions_and_reliable_mode() -> None:
    net = SimNetwork(random.Random(1), NetworkOptions(drop=0.5, duplicate=0.5))
    net.one_way(1, 2)
    assert net.deliveries(1, 2) == []
    net.reliable = True
    assert net.deliveries(1, 2) == []  # a partition still holds until healed
    assert all(len(net.deliveries(2, 1)) == 1 for _ in range(50))
    net.heal()
    assert len(net.deliveries(1, 2)) == 1


def test_network_drops_and_duplicates_at_its_rates() -> None:
    net = SimNetwork(random.Random(2), NetworkOptions(drop=0.2, duplicate=0.2))
    counts = [len(net.deliveries(1, 2)) for _ in range(2000)]
    assert 300 < counts.count(0) < 500 and 250 < counts.count(2) < 450


def test_state_machine_applies_each_op_once_and_snapshots() -> None:
    sm = KVStateMachine()
    cmd = encode_command(7, KVInput("set", "k", "v"))
    assert sm.apply(cmd) == (7, True)
    assert sm.apply(cmd) is None  # a duplicated proposal
    assert sm.apply(encode_command(8, KVInput("cas", "k", "w", "v"))) == (8, True)
    copy = KVStateMachine.decode(sm.encode())
    assert copy.data == {"k": "w"} and copy.seen == {7, 8}


def _raft(node_id: int, term: int) -> RawNode:
    n = RawNode(Config(id=node_id), MemoryStorage(), random.Random(0))
    n.raft.term = term
    n.raft.state = StateType.LEADER
    return n


def test_checker_flags_two_leaders_in_one_term() -> None:
    inv = InvariantChecker()
    inv.on_leader(0, 1, _raft(1, 3).raft)
    inv.on_leader(1, 2, _raft(2, 4).raft)
    assert inv.violations == []
    inv.on_leader(2, 3, _raft(3, 4).raft)
    assert "election safety" in inv.violations[0]


def test_checker_flags_a_second_vote_in_a_term() -> None:
    inv = InvariantChecker()
    inv.on_vote(0, 1, 5, 2)
    inv.on_vote(0, 1, 5, 2)
    assert inv.violations == []
    inv.on_vote(0, 1, 5, 3)
    assert "double vote" in inv.violations[0]


def test_checker_flags_entries_breaking_log_matching() -> None:
    inv = InvariantChecker()
    a = RawNode(Config(id=1), MemoryStorage(), random.Random(0)).raft
    a.log.append([Entry(1, 1), Entry(2, 2)])
    inv.on_append(0, 1, a, (Entry(1, 1), Entry(2, 2)), 0)
    b = RawNode(Config(id=2), MemoryStorage(), random.Random(0)).raft
    b.log.append([Entry(2, 1), Entry(2, 2)])  # same (2, 2) after a different entry
    inv.on_append(0, 2, b, (Entry(2, 1), Entry(2, 2)), 0)
    assert any("log matching" in v for v in inv.violations)
