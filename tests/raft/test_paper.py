"""Raft rules, one test per rule, named after the thesis sections they check."""

from __future__ import annotations

import pytest

from corral.raft import (
    CAMPAIGN_TRANSFER,
    ConfChange,
    ConfChangeType,
    Config,
    ConfigError,
    ConfState,
    Entry,
    InvariantError,
    Message,
    MessageType,
    ProposalDroppedError,
    StateType,
)
from corral.testing.sim.memnet import MemNetwork

MT = MessageType


def elect(net: MemNetwork, i: int = 1) -> None:
    net.campaign(i)
    assert net.nodes[i].raft.state == StateType.LEADER


def test_3_3_servers_start_as_followers() -> None:
    net = MemNetwork([1, 2, 3])
    assert all(n.raft.state == StateType.FOLLOWER for n in net.nodes.values())


def test_3_3_higher_term_makes_any_server_a_follower() -> None:
    net = MemNetwork([1, 2, 3])
    elect(net)
    r = net.nodes[1].raft
    r.step(Message(MT.APP, to=1, from_=2, term=r.term + 5))
    assert r.state == StateType.FOLLOWER and r.term == 6 and r.lead == 2


def test_3_3_stale_term_messages_are_ignored() -> None:
    net = MemNetwork([1, 2, 3])
    elect(net)
    r = net.nodes[2].raft
    before = (r.term, r.log.last_index())
    r.step(Message(MT.APP, to=2, from_=3, term=r.term - 1, index=1, entries=(Entry(1, 5),)))
    assert (r.term, r.log.last_index()) == before


def test_3_4_election_timeout_starts_an_election_with_a_self_vote() -> None:
    net = MemNetwork([1, 2, 3], lambda i: Config(id=i, pre_vote=False))
    net.drop_type(MT.VOTE)
    net.tick(1, 25)
    r = net.nodes[1].raft
    assert r.state == StateType.CANDIDATE and r.vote == 1 and r.term >= 1


def test_3_4_majority_of_votes_wins_and_leader_heartbeats() -> None:
    net = MemNetwork([1, 2, 3])
    elect(net)
    net.sent.clear()
    net.tick(1)
    beats = [m for m in net.sent if m.type == MT.HEARTBEAT]
    assert sorted(m.to for m in beats) == [2, 3]


def test_3_4_election_timeouts_are_randomized_between_t_and_2t() -> None:
    net = MemNetwork([1, 2, 3])
    seen = set()
    for _ in range(30):
        net.nodes[1].raft.become_follower(net.nodes[1].raft.term + 1, 0)
        seen.add(net.nodes[1].raft.randomized_election_timeout)
    assert min(seen) >= 10 and max(seen) < 20 and len(seen) > 3


def test_3_4_a_server_votes_at_most_once_per_term() -> None:
    net = MemNetwork([1, 2, 3], lambda i: Config(id=i, pre_vote=False))
    r = net.nodes[3].raft
    r.step(Message(MT.VOTE, to=3, from_=1, term=2, index=0, log_term=0))
    r.step(Message(MT.VOTE, to=3, from_=2, term=2, index=0, log_term=0))
    resps = [m for m in r.msgs if m.type == MT.VOTE_RESP]
    assert [(m.to, m.reject) for m in resps] == [(1, False), (2, True)]
    assert r.vote == 1


def test_3_4_candidate_returns_to_follower_on_append_from_leader_of_its_term() -> None:
    net = MemNetwork([1, 2, 3], lambda i: Config(id=i, pre_vote=False))
    net.drop_type(MT.VOTE)
    net.tick(2, 25)
    r = net.nodes[2].raft
    assert r.state == StateType.CANDIDATE
    r.step(Message(MT.APP, to=2, from_=3, term=r.term, index=0, log_term=0))
    assert r.state == StateType.FOLLOWER and r.lead == 3


def test_3_6_1_election_restriction_rejects_a_less_up_to_date_candidate() -> None:
    net = MemNetwork([1, 2, 3], lambda i: Config(id=i, pre_vote=False))
    elect(net)
    net.propose(1, b"x")
    r = net.nodes[2].raft
    r.become_follower(r.term, 0)
    r.step(Message(MT.VOTE, to=2, from_=3, term=r.term + 1, index=1, log_term=1))
    assert [m.reject for m in r.msgs if m.type == MT.VOTE_RESP] == [True]


def test_3_6_2_leader_commits_earlier_term_entries_only_through_its_own() -> None:
    # Figure 3.7: a leader must not count replicas of an entry from an earlier term.
    net = MemNetwork([1, 2, 3], lambda i: Config(id=i, pre_vote=False, max_size_per_msg=1))
    elect(net)
    net.isolate(1)
    net.nodes[1].propose(b"old")  # term-2 entry only on node 1
    net.stabilize()
    net.recover()
    r = net.nodes[1].raft
    # Node 1 becomes leader of a later term with the old entry uncommitted.
    r.become_follower(r.term + 1, 0)
    for i in (2, 3):
        net.nodes[i].raft.become_follower(r.term, 0)
    net.drop_type(MT.APP)
    net.campaign(1)
    assert r.state == StateType.LEADER
    old_index = r.log.last_index() - 1
    assert r.log.term(old_index) < r.term
    # A follower acknowledges the old entry alone: counting would commit it, Raft must not.
    r.step(Message(MT.APP_RESP, to=1, from_=2, term=r.term, index=old_index))
    assert r.log.committed < old_index
    r.step(Message(MT.APP_RESP, to=1, from_=2, term=r.term, index=old_index + 1))
    assert r.log.committed == old_index + 1


def test_3_5_follower_rejects_append_whose_previous_entry_does_not_match() -> None:
    net = MemNetwork([1, 2, 3])
    r = net.nodes[2].raft
    r.step(Message(MT.APP, to=2, from_=1, term=1, index=5, log_term=1, entries=(Entry(1, 6),)))
    (resp,) = [m for m in r.msgs if m.type == MT.APP_RESP]
    assert resp.reject and resp.reject_hint == 0 and r.log.last_index() == 0


def test_3_5_follower_truncates_only_from_the_first_conflicting_entry() -> None:
    net = MemNetwork([1, 2, 3])
    r = net.nodes[2].raft
    ents = tuple(Entry(1, i) for i in range(1, 5))
    r.step(Message(MT.APP, to=2, from_=1, term=1, index=0, log_term=0, entries=ents))
    # A stale, shorter append must not cut entries 3 and 4.
    r.step(Message(MT.APP, to=2, from_=1, term=1, index=0, log_term=0, entries=ents[:2]))
    assert r.log.last_index() == 4
    # A conflicting one replaces from the conflict on.
    r.step(Message(MT.APP, to=2, from_=1, term=2, index=2, log_term=1, entries=(Entry(2, 3),)))
    assert [r.log.term(i) for i in range(1, r.log.last_index() + 1)] == [1, 1, 2]


def test_3_5_follower_never_truncates_committed_entries() -> None:
    net = MemNetwork([1, 2, 3])
    r = net.nodes[2].raft
    ents = tuple(Entry(1, i) for i in range(1, 4))
    r.step(Message(MT.APP, to=2, from_=1, term=1, index=0, log_term=0, entries=ents, commit=3))
    assert r.log.committed == 3
    with pytest.raises(InvariantError):
        r.log.maybe_append(1, 1, 3, (Entry(2, 2),))


def test_leader_never_moves_a_followers_match_backwards() -> None:
    net = MemNetwork([1, 2, 3])
    elect(net)
    for k in range(3):
        net.propose(1, b"%d" % k)
    r = net.nodes[1].raft
    match = r.trk.progress[2].match
    r.step(Message(MT.APP_RESP, to=1, from_=2, term=r.term, index=1))
    r.step(Message(MT.APP_RESP, to=1, from_=2, term=r.term, index=1, reject=True, reject_hint=0))
    assert r.trk.progress[2].match == match


def test_replication_commits_and_applies_on_every_node() -> None:
    net = MemNetwork([1, 2, 3])
    elect(net)
    for k in range(5):
        net.propose(2, b"v%d" % k)  # through a follower: forwarded to the leader
    assert all(net.applied[i] == [b"v%d" % k for k in range(5)] for i in (1, 2, 3))


def test_flow_control_bounds_inflight_appends() -> None:
    net = MemNetwork([1, 2, 3], lambda i: Config(id=i, max_inflight_msgs=2, max_size_per_msg=1))
    elect(net)
    net.isolate(1)  # acks cannot come back
    net.sent.clear()
    for k in range(6):
        net.nodes[1].propose(b"%d" % k)
        net.process(1)
    to2 = [m for m in net.sent if m.type == MT.APP and m.to == 2]
    assert len(to2) == 2 and all(len(m.entries) == 1 for m in to2)


def test_9_6_pre_vote_does_not_raise_terms() -> None:
    net = MemNetwork([1, 2, 3])
    elect(net)
    term = net.nodes[1].raft.term
    net.isolate(3)
    net.tick(3, 100)
    assert net.nodes[3].raft.term == term  # a partitioned node cannot win a pre-vote
    net.recover()
    net.tick(1)
    net.stabilize()
    assert net.nodes[1].raft.state == StateType.LEADER and net.nodes[1].raft.term == term


def test_6_2_check_quorum_leader_steps_down_without_a_quorum() -> None:
    net = MemNetwork([1, 2, 3])
    elect(net)
    net.isolate(1)
    net.tick(1, 25)
    assert net.nodes[1].raft.state == StateType.FOLLOWER


def test_4_2_3_followers_with_a_live_leader_ignore_vote_requests() -> None:
    net = MemNetwork([1, 2, 3], lambda i: Config(id=i, pre_vote=False))
    elect(net)
    r = net.nodes[2].raft
    term = r.term
    r.step(Message(MT.VOTE, to=2, from_=3, term=term + 1, index=9, log_term=9))
    assert r.term == term and not r.msgs
    r.step(
        Message(
            MT.VOTE, to=2, from_=3, term=term + 1, index=9, log_term=9, context=CAMPAIGN_TRANSFER
        )
    )
    assert r.term == term + 1


def test_6_4_read_index_waits_for_a_heartbeat_quorum() -> None:
    net = MemNetwork([1, 2, 3])
    elect(net)
    net.propose(1, b"a")
    net.drop_type(MT.HEARTBEAT_RESP)
    net.nodes[1].read_index(b"r1")
    net.stabilize()
    assert net.read_states[1] == []
    net.recover()
    net.nodes[1].read_index(b"r2")
    net.stabilize()
    ctxs = [rs.request_ctx for rs in net.read_states[1]]
    assert ctxs == [b"r1", b"r2"]
    assert all(rs.index == net.nodes[1].raft.log.committed for rs in net.read_states[1])


def test_6_4_follower_read_index_is_forwarded_to_the_leader() -> None:
    net = MemNetwork([1, 2, 3])
    elect(net)
    net.nodes[3].read_index(b"f")
    net.stabilize()
    assert [rs.request_ctx for rs in net.read_states[3]] == [b"f"]


def test_proposals_without_a_leader_are_dropped() -> None:
    net = MemNetwork([1, 2, 3])
    with pytest.raises(ProposalDroppedError):
        net.nodes[1].propose(b"x")


def test_5_lagging_follower_catches_up_from_a_snapshot() -> None:
    net = MemNetwork([1, 2, 3])
    elect(net)
    net.isolate(3)
    for k in range(10):
        net.propose(1, b"%d" % k)
    st = net.storage[1]
    applied = net.nodes[1].raft.log.applied
    st.create_snapshot(applied, net.conf[1], b"image")
    st.compact(applied)
    net.recover()
    net.tick(1)
    net.stabilize()
    r3 = net.nodes[3].raft
    assert net.storage[3].snapshot().metadata.index == applied
    assert r3.log.committed == net.nodes[1].raft.log.committed


def test_4_1_membership_changes_one_at_a_time() -> None:
    net = MemNetwork([1, 2, 3])
    elect(net)
    net.add(
        4, ConfState(voters=(1, 2, 3))
    )  # joins knowing the cluster, as etcd's --initial-cluster
    net.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 4))
    # A second change while the first is unapplied becomes an empty entry.
    net.nodes[1].propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 2))
    net.stabilize()
    net.tick(1)
    net.stabilize()
    assert net.conf[1].voters == (1, 2, 3, 4)
    assert net.conf[4].voters == (1, 2, 3, 4)
    net.nodes[1].propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 2))
    net.stabilize()
    assert net.conf[1].voters == (1, 3, 4)
    net.propose(1, b"after")
    assert net.applied[4][-1] == b"after"


def test_3_10_leadership_transfer() -> None:
    net = MemNetwork([1, 2, 3])
    elect(net)
    net.propose(1, b"x")
    net.nodes[1].transfer_leader(3)
    net.stabilize()
    assert net.nodes[3].raft.state == StateType.LEADER
    assert net.nodes[1].raft.state == StateType.FOLLOWER


def test_ready_persists_a_vote_before_the_vote_is_sent() -> None:
    net = MemNetwork([1, 2, 3], lambda i: Config(id=i, pre_vote=False))
    n = net.nodes[2]
    n.step(Message(MT.VOTE, to=2, from_=1, term=2, index=0, log_term=0))
    rd = n.ready()
    assert rd.hard_state is not None and rd.hard_state.vote == 1 and rd.must_sync
    assert [m.type for m in rd.messages] == [MT.VOTE_RESP]


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        Config(id=0).validate()
    with pytest.raises(ConfigError):
        Config(id=1, election_tick=1, heartbeat_tick=1).validate()


def test_local_messages_cannot_be_stepped_from_the_network() -> None:
    net = MemNetwork([1])
    with pytest.raises(ValueError):
        net.nodes[1].step(Message(MT.HUP, to=1, from_=2))


def test_single_node_cluster_elects_itself_and_commits() -> None:
    net = MemNetwork([1])
    elect(net)
    net.propose(1, b"solo")
    assert net.applied[1] == [b"solo"]
