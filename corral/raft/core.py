"""The Raft state machine: one deterministic object, messages in, messages out.

Rulebook
========

This module holds *all* of Raft's transition logic (h11's rule 1); it knows nothing about
sockets, disks, clocks or threads (h11's rule 2: it does not know who drives it). Time is the
number of `tick()` calls; randomness is the `random.Random` handed in. Modelled on etcd-io/raft
`raft.go`; section numbers are Ongaro's thesis ("Consensus: Bridging Theory and Practice").

Roles are installed functions, not subclasses: ``become_follower`` sets ``self._step =
self._step_follower`` and ``self._tick = self._tick_election``; ``become_leader`` installs
``_step_leader`` / ``_tick_heartbeat``. `step()` handles terms once, then dispatches.

Invariants kept (and checked by the simulator after every step):

1. **Election safety** (§3.6.3): at most one leader per term. A node votes at most once per
   term (`vote` is part of the HardState, persisted before the vote is sent), and a
   candidate needs a majority of the current configuration.
2. **Leader append-only** (§3.5): a leader never overwrites or deletes its own entries.
3. **Log matching** (§3.5): AppendEntries carries (index, term) of the preceding entry and a
   follower accepts only if it holds that entry; it then truncates only from the first
   *conflicting* entry, never at or below its commit index (`RaftLog.maybe_append`).
4. **Leader completeness** (§3.6.3): votes go only to candidates whose log is at least as up
   to date (§3.6.1 election restriction, `RaftLog.is_up_to_date`); a leader commits by
   counting replicas only entries of its *current* term (§3.6.2, fig. 3.7), earlier ones
   commit indirectly.
5. **State-machine safety**: entries are handed to the application only once committed, in
   index order, each exactly once per incarnation.
6. **Durability before speech**: everything a message promises (votes, appended entries) is in
   the same `Ready` as the message and must be persisted first (RawNode contract). A leader
   counts its own new entries at once: followers can only acknowledge them after receiving
   messages that leave with the Ready that persists them (thesis §10.2.1).
7. A leader never moves a follower's `match` backwards (`Progress.maybe_update`).

Extensions implemented: pre-vote (§9.6: a pre-candidate asks with term+1 without raising its
own term; voters never change term on a pre-vote); check-quorum and leader stickiness (§6.2 /
§9.6: a leader steps down after an election timeout without hearing from a quorum; a voter
that heard from a leader within the election timeout ignores vote requests); ReadIndex
(§6.4: a leader serves a read at its commit index once it has committed an entry of its term
and a quorum acknowledged a heartbeat round); log compaction and InstallSnapshot (§5);
one-server membership changes (§4.1: at most one unapplied change in the log, applied when
the entry is applied, as etcd does); leadership transfer (§3.10: catch the target up, then
MsgTimeoutNow; proposals are dropped meanwhile).

Test mutants: `Config.mutations` switches on deliberately broken variants (`Mutation`), so the
simulator can prove it notices them. The set is empty unless a test passes one; nothing in a
server's configuration reaches it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from corral.raft.errors import (
    CompactedError,
    ConfigError,
    InvariantError,
    ProposalDroppedError,
)
from corral.raft.log import RaftLog
from corral.raft.progress import ProgressState, ProgressTracker, VoteResult
from corral.raft.readonly import ReadOnly
from corral.raft.storage import MemoryStorage
from corral.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    SoftState,
    StateType,
)

__all__ = ["CAMPAIGN_TRANSFER", "Config", "Mutation", "Raft"]

MT = MessageType

#: Vote-request context marking a campaign started by leadership transfer (bypasses lease).
CAMPAIGN_TRANSFER = b"CampaignTransfer"


class Mutation(Enum):
    """Deliberately broken variants of the algorithm, for testing the tests only."""

    COMMIT_PRIOR_TERM = "commit-prior-term"  # count replicas of earlier-term entries
    VOTE_TWICE = "vote-twice"  # ignore an earlier vote in the same term
    TRUNCATE_COMMITTED = "truncate-committed"  # drop everything after prev, committed or not
    VOTE_BEFORE_PERSIST = "vote-before-persist"  # term/vote changes not fsynced before send
    APPLY_BEFORE_COMMIT = "apply-before-commit"  # hand uncommitted entries to the app
    SKIP_LOG_MATCHING = "skip-log-matching"  # accept appends without the prev-entry check


@dataclass(frozen=True, slots=True)
class Config:
    """Knobs of one Raft node (etcd-io/raft `Config`; ticks are the unit of time)."""

    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    applied: int = 0
    max_size_per_msg: int = 1 << 20
    max_committed_size_per_ready: int = 1 << 62
    max_uncommitted_entries_size: int = 0
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 0
    check_quorum: bool = True
    pre_vote: bool = True
    disable_proposal_forwarding: bool = False
    step_down_on_removal: bool = True
    mutations: frozenset[Mutation] = field(default_factory=frozenset)

    def validate(self) -> None:
        if self.id == NONE:
            raise ConfigError("cannot use none as id")
        if self.heartbeat_tick <= 0:
            raise ConfigError("heartbeat tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ConfigError("election tick must be greater than heartbeat tick")
        if self.max_inflight_msgs <= 0:
            raise ConfigError("max inflight messages must be greater than 0")
        if self.max_size_per_msg < 0 or self.max_inflight_bytes < 0:
            raise ConfigError("sizes must not be negative")
        if 0 < self.max_inflight_bytes < self.max_size_per_msg:
            raise ConfigError("max inflight bytes must be ≥ max message size")


class Raft:
    """One Raft node. Drive it through `RawNode`, which adds the Ready/Advance contract."""

    def __init__(self, config: Config, storage: MemoryStorage, rng: random.Random) -> None:
        config.validate()
        self.id = config.id
        self.cfg = config
        self.rng = rng
        self.mut = config.mutations
        self.log = RaftLog(storage, config.max_committed_size_per_ready)
        self.log.apply_uncommitted = Mutation.APPLY_BEFORE_COMMIT in self.mut
        self._commit_any_term = Mutation.COMMIT_PRIOR_TERM in self.mut
        self.max_msg_size = config.max_size_per_msg
        self.max_uncommitted_size = config.max_uncommitted_entries_size
        self.trk = ProgressTracker(config.max_inflight_msgs, config.max_inflight_bytes)
        self.election_timeout = config.election_tick
        self.heartbeat_timeout = config.heartbeat_tick
        self.check_quorum = config.check_quorum
        self.pre_vote = config.pre_vote

        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.state = StateType.FOLLOWER
        self.is_learner = False
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only = ReadOnly()
        self.pending_read_index_messages: list[Message] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout
        self._step: Callable[[Message], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election

        hs, cs = storage.initial_state()
        self._apply_conf_state(cs)
        if not hs.is_empty():
            if not self.log.committed <= hs.commit <= self.log.last_index():
                raise InvariantError(
                    f"hard state commit {hs.commit} outside "
                    f"[{self.log.committed}, {self.log.last_index()}]"
                )
            self.log.committed = hs.commit
            self.term = hs.term
            self.vote = hs.vote
        if config.applied > 0:
            self.log.applied_to(config.applied)
        self.become_follower(self.term, NONE)

    # --- state -----------------------------------------------------------------------------
    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.state)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def promotable(self) -> bool:
        pr = self.trk.progress.get(self.id)
        return pr is not None and not pr.is_learner and not self.log.unstable.snapshot

    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    def _msg(self, type: MessageType, to: int, **kw: object) -> Message:
        kw.setdefault("term", self.term)
        return Message(type=type, to=to, from_=self.id, **kw)  # type: ignore[arg-type]

    # --- role changes ----------------------------------------------------------------------
    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            self.election_timeout
        )
        self.lead_transferee = NONE
        self.trk.reset_votes()
        last = self.log.last_index()
        for node, pr in self.trk.progress.items():
            learner = pr.is_learner
            self.trk.add(node, last + 1, learner)
            if node == self.id:
                self.trk.progress[node].match = last
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only = ReadOnly()

    def become_follower(self, term: int, lead: int) -> None:
        self._step = self._step_follower
        self._reset(term)
        self._tick = self._tick_election
        self.lead = lead
        self.state = StateType.FOLLOWER

    def become_candidate(self) -> None:
        if self.state == StateType.LEADER:
            raise InvariantError("invalid transition [leader -> candidate]")
        self._step = self._step_candidate
        self._reset(self.term + 1)
        self._tick = self._tick_election
        self.vote = self.id
        self.state = StateType.CANDIDATE

    def become_pre_candidate(self) -> None:
        if self.state == StateType.LEADER:
            raise InvariantError("invalid transition [leader -> pre-candidate]")
        # Changes neither term nor vote (§9.6).
        self._step = self._step_candidate
        self.trk.reset_votes()
        self._tick = self._tick_election
        self.lead = NONE
        self.state = StateType.PRE_CANDIDATE

    def become_leader(self) -> None:
        if self.state == StateType.FOLLOWER:
            raise InvariantError("invalid transition [follower -> leader]")
        self._step = self._step_leader
        self._reset(self.term)
        self._tick = self._tick_heartbeat
        self.lead = self.id
        self.state = StateType.LEADER
        pr = self.trk.progress[self.id]
        pr.become_replicate()
        pr.recent_active = True
        # No conf change may be proposed until everything before our term is applied.
        self.pending_conf_index = self.log.last_index()
        # The empty entry of our term lets earlier entries commit (§3.6.2) and ReadIndex work.
        self._append_entry([Entry(0, 0)])

    # --- ticks -----------------------------------------------------------------------------
    def tick(self) -> None:
        self._tick()

    def _past_election_timeout(self) -> bool:
        return self.election_elapsed >= self.randomized_election_timeout

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self._past_election_timeout():
            self.election_elapsed = 0
            self.step(Message(MT.HUP, from_=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(MT.CHECK_QUORUM, from_=self.id))
            # A transfer that did not finish within an election timeout is abandoned.
            if self.state == StateType.LEADER and self.lead_transferee != NONE:
                self.lead_transferee = NONE
        if self.state != StateType.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(MT.BEAT, from_=self.id))

    # --- elections -------------------------------------------------------------------------
    def _hup(self, transfer: bool) -> None:
        if self.state == StateType.LEADER or not self.promotable():
            return
        if self._has_unapplied_conf_change():
            return  # the configuration we would campaign in is not final yet
        self._campaign(pre=self.pre_vote and not transfer, transfer=transfer)

    def _has_unapplied_conf_change(self) -> bool:
        if self.log.applied >= self.log.committed:
            return False
        lo = max(self.log.applied + 1, self.log.first_index())
        ents = self.log.slice(lo, self.log.committed + 1)
        return any(e.type == EntryType.CONF_CHANGE for e in ents)

    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        if pre:
            self.become_pre_candidate()
            vote_msg, term = MT.PRE_VOTE, self.term + 1
        else:
            self.become_candidate()
            vote_msg, term = MT.VOTE, self.term
        if self._poll(self.id, True) == VoteResult.WON:
            # Single-voter cluster: won outright.
            if pre:
                self._campaign(pre=False)
            else:
                self.become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        last, last_term = self.log.last_index(), self.log.last_term()
        for node in sorted(self.trk.voters):
            if node == self.id:
                continue
            self._send(
                self._msg(vote_msg, node, term=term, index=last, log_term=last_term, context=ctx)
            )

    def _poll(self, node: int, granted: bool) -> VoteResult:
        self.trk.record_vote(node, granted)
        return self.trk.tally_votes()[2]

    # --- the one entry point ---------------------------------------------------------------
    def step(self, m: Message) -> None:
        """Handle one message (remote or local). Raises ProposalDroppedError for PROP."""
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.election_timeout
                )
                if not force and in_lease:
                    return  # leader stickiness (§4.2.3): we heard from a leader recently
            if m.type == MT.PRE_VOTE:
                pass  # never change term on a pre-vote
            elif m.type == MT.PRE_VOTE_RESP and not m.reject:
                pass  # term of a granted pre-vote is our future term
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.from_)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and m.type in (MT.HEARTBEAT, MT.APP):
                # A stale leader learns our term and steps down.
                self._send(self._msg(MT.APP_RESP, m.from_))
            elif m.type == MT.PRE_VOTE:
                self._send(self._msg(MT.PRE_VOTE_RESP, m.from_, reject=True))
            return

        if m.type == MT.HUP:
            self._hup(transfer=False)
        elif m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        else:
            self._step(m)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.from_
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        if Mutation.VOTE_TWICE in self.mut and self.lead == NONE:
            can_vote = True
        resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # Grant with the request's term: for a pre-vote that is our future term.
            self._send(self._msg(resp, m.from_, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.from_
        else:
            self._send(self._msg(resp, m.from_, reject=True))

    # --- leader ----------------------------------------------------------------------------
    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.BEAT:
            self._bcast_heartbeat()
            return
        if t == MT.CHECK_QUORUM:
            if not self.trk.quorum_active():
                self.become_follower(self.term, NONE)
            for node, other in self.trk.progress.items():
                if node != self.id:
                    other.recent_active = False
            return
        if t == MT.PROP:
            self._leader_propose(m)
            return
        if t == MT.READ_INDEX:
            if self.trk.is_singleton():
                self._respond_read_index(m, self.log.committed)
            elif not self._committed_entry_in_current_term():
                # §6.4 step 1: wait until our empty entry commits.
                self.pending_read_index_messages.append(m)
            else:
                self._send_read_index(m)
            return

        pr = self.trk.progress.get(m.from_)
        if pr is None:
            return
        if t == MT.APP_RESP:
            pr.recent_active = True
            if m.reject:
                if pr.maybe_decr_to(m.index, m.reject_hint):
                    if pr.state == ProgressState.REPLICATE:
                        pr.become_probe()
                    self._send_append(m.from_)
                return
            old_paused = pr.is_paused()
            if not pr.maybe_update(m.index):
                return
            if pr.state == ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
                pr.become_probe()
                pr.become_replicate()
            elif pr.state == ProgressState.REPLICATE:
                pr.inflights.free_le(m.index)
            if self._maybe_commit():
                self._release_pending_read_index_messages()
                self._bcast_append()
            elif old_paused:
                self._send_append(m.from_)
            while self._maybe_send_append(m.from_, send_if_empty=False):
                pass
            if m.from_ == self.lead_transferee and pr.match == self.log.last_index():
                self._send(self._msg(MT.TIMEOUT_NOW, m.from_))
        elif t == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.msg_app_flow_paused = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                # The window may hold lost messages: let one more through per heartbeat.
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index() or pr.state == ProgressState.PROBE:
                self._send_append(m.from_)
            if not m.context:
                return
            acks = self.read_only.recv_ack(m.from_, m.context)
            if acks is None or len(acks & self.trk.voters) < self.trk.quorum():
                return
            for rs in self.read_only.advance(m.context):
                self._respond_read_index(rs.req, rs.index)
        elif t == MT.SNAP_STATUS:
            if pr.state != ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            # Wait for a heartbeat response before probing again.
            pr.msg_app_flow_paused = True
        elif t == MT.UNREACHABLE:
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
        elif t == MT.TRANSFER_LEADER:
            self._leader_transfer(m.from_, pr.is_learner)

    def _leader_propose(self, m: Message) -> None:
        if not m.entries:
            raise InvariantError("stepped empty proposal")
        if self.id not in self.trk.progress:
            raise ProposalDroppedError("this node was removed from the configuration")
        if self.lead_transferee != NONE:
            raise ProposalDroppedError("leadership transfer in progress")
        ents = list(m.entries)
        for i, e in enumerate(ents):
            if e.type != EntryType.CONF_CHANGE:
                continue
            if self.pending_conf_index > self.log.applied:
                # One change at a time (§4.1): an earlier one is not applied yet.
                ents[i] = Entry(0, 0)
            else:
                self.pending_conf_index = self.log.last_index() + i + 1
        self._append_entry(ents)
        self._bcast_append()

    def _leader_transfer(self, transferee: int, learner: bool) -> None:
        if learner or transferee == self.id:
            return
        if self.lead_transferee == transferee:
            return
        self.lead_transferee = transferee
        self.election_elapsed = 0
        if self.trk.progress[transferee].match == self.log.last_index():
            self._send(self._msg(MT.TIMEOUT_NOW, transferee))
        else:
            self._send_append(transferee)

    def _append_entry(self, es: list[Entry]) -> None:
        li = self.log.last_index()
        size = sum(len(e.data) for e in es)
        if (
            self.max_uncommitted_size > 0
            and self.uncommitted_size > 0
            and self.uncommitted_size + size > self.max_uncommitted_size
        ):
            raise ProposalDroppedError("too many uncommitted entries")
        self.uncommitted_size += size
        ents = [Entry(self.term, li + 1 + i, e.type, e.data) for i, e in enumerate(es)]
        li = self.log.append(ents)
        pr = self.trk.progress.get(self.id)
        if pr is not None:
            pr.maybe_update(li)
        self._maybe_commit()

    def _maybe_commit(self) -> bool:
        mci = self.trk.committed()
        return self.log.maybe_commit(mci, self.term, self._commit_any_term)

    def _committed_entry_in_current_term(self) -> bool:
        return self.log.zero_term_on_range_err(self.log.committed) == self.term

    def _release_pending_read_index_messages(self) -> None:
        if not self.pending_read_index_messages or not self._committed_entry_in_current_term():
            return
        msgs, self.pending_read_index_messages = self.pending_read_index_messages, []
        for m in msgs:
            self._send_read_index(m)

    def _send_read_index(self, m: Message) -> None:
        self.read_only.add_request(self.log.committed, m)
        self.read_only.recv_ack(self.id, m.context)
        self._bcast_heartbeat(m.context)

    def _respond_read_index(self, req: Message, index: int) -> None:
        if req.from_ in (NONE, self.id):
            self.read_states.append(ReadState(index, req.context))
        else:
            self._send(self._msg(MT.READ_INDEX_RESP, req.from_, index=index, context=req.context))

    def _bcast_append(self) -> None:
        for node in self.trk.members():
            if node != self.id:
                self._send_append(node)

    def _bcast_heartbeat(self, ctx: bytes | None = None) -> None:
        if ctx is None:
            ctx = self.read_only.last_pending_request_ctx() or b""
        for node in self.trk.members():
            if node == self.id:
                continue
            # Never tell a follower to commit beyond what it is known to hold.
            commit = min(self.trk.progress[node].match, self.log.committed)
            self.msgs.append(
                Message(MT.HEARTBEAT, node, self.id, self.term, commit=commit, context=ctx)
            )

    def _send_append(self, to: int) -> None:
        self._maybe_send_append(to, send_if_empty=True)

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        pr = self.trk.progress[to]
        if pr.is_paused():
            return False
        prev = pr.next - 1
        try:
            prev_term = self.log.term(prev)
            ents = self.log.entries_from(pr.next, self.max_msg_size)
        except CompactedError:
            return self._send_snapshot(to)
        if not ents and not send_if_empty:
            return False
        self.msgs.append(
            Message(
                MT.APP, to, self.id, self.term, prev_term, prev, tuple(ents), self.log.committed
            )
        )
        pr.sent_entries(len(ents), sum([len(e.data) for e in ents]) if ents else 0)
        return True

    def _send_snapshot(self, to: int) -> bool:
        pr = self.trk.progress[to]
        if not pr.recent_active:
            return False
        snap = self.log.snapshot()
        if snap.is_empty():
            raise InvariantError("need a non-empty snapshot")
        self._send(self._msg(MT.SNAP, to, snapshot=snap))
        pr.become_snapshot(snap.metadata.index)
        return True

    # --- candidate -------------------------------------------------------------------------
    def _step_candidate(self, m: Message) -> None:
        my_resp = MT.PRE_VOTE_RESP if self.state == StateType.PRE_CANDIDATE else MT.VOTE_RESP
        t = m.type
        if t == MT.PROP:
            raise ProposalDroppedError("no leader (election in progress)")
        if t == MT.APP:
            self.become_follower(m.term, m.from_)
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self.become_follower(m.term, m.from_)
            self._handle_heartbeat(m)
        elif t == MT.SNAP:
            self.become_follower(m.term, m.from_)
            self._handle_snapshot(m)
        elif t == my_resp:
            res = self._poll(m.from_, not m.reject)
            if res == VoteResult.WON:
                if self.state == StateType.PRE_CANDIDATE:
                    self._campaign(pre=False)
                else:
                    self.become_leader()
                    self._bcast_append()
            elif res == VoteResult.LOST:
                self.become_follower(self.term, NONE)
        elif t == MT.READ_INDEX:
            raise ProposalDroppedError("no leader to serve a read index")

    # --- follower --------------------------------------------------------------------------
    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.PROP:
            if self.lead == NONE:
                raise ProposalDroppedError("no leader")
            if self.cfg.disable_proposal_forwarding:
                raise ProposalDroppedError("proposal forwarding disabled")
            self._send(Message(MT.PROP, to=self.lead, from_=m.from_ or self.id, entries=m.entries))
        elif t == MT.APP:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_heartbeat(m)
        elif t == MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_snapshot(m)
        elif t == MT.TRANSFER_LEADER:
            if self.lead == NONE:
                return
            self._send(Message(MT.TRANSFER_LEADER, to=self.lead, from_=m.from_))
        elif t == MT.TIMEOUT_NOW:
            self._hup(transfer=True)
        elif t == MT.READ_INDEX:
            if self.lead == NONE:
                raise ProposalDroppedError("no leader to serve a read index")
            self._send(Message(MT.READ_INDEX, to=self.lead, from_=self.id, context=m.context))
        elif t == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self._send(self._msg(MT.APP_RESP, m.from_, index=log.committed))
            return
        if self.mut and m.entries and self._mutant_append(m):
            return
        lastnew = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if lastnew is not None:
            self.msgs.append(Message(MT.APP_RESP, m.from_, self.id, self.term, index=lastnew))
            return
        hint = min(m.index, log.last_index())
        self._send(
            self._msg(
                MT.APP_RESP,
                m.from_,
                index=m.index,
                reject=True,
                reject_hint=hint,
                log_term=log.zero_term_on_range_err(hint),
            )
        )

    def _mutant_append(self, m: Message) -> bool:
        log = self.log
        if Mutation.SKIP_LOG_MATCHING in self.mut and log.first_index() <= m.index:
            if m.index > log.last_index():
                return False
            # Pretend the previous entry matched, whatever its term.
            lt = log.zero_term_on_range_err(m.index)
            lastnew = log.maybe_append(m.index, lt, m.commit, m.entries)
            self._send(self._msg(MT.APP_RESP, m.from_, index=lastnew))
            return True
        if not (Mutation.TRUNCATE_COMMITTED in self.mut and log.match_term(m.index, m.log_term)):
            return False
        # The prev entry matched, but the whole tail is replaced (committed or not).
        log.force_append(m.entries)
        lastnew = m.index + len(m.entries)
        if log.committed < min(m.commit, lastnew):
            log.commit_to(min(m.commit, lastnew))
        self._send(self._msg(MT.APP_RESP, m.from_, index=lastnew))
        return True

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(m.commit)
        self.msgs.append(Message(MT.HEARTBEAT_RESP, m.from_, self.id, self.term, context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        if self._restore(m.snapshot):
            self._send(self._msg(MT.APP_RESP, m.from_, index=self.log.last_index()))
        else:
            self._send(self._msg(MT.APP_RESP, m.from_, index=self.log.committed))

    def _restore(self, snap: Snapshot) -> bool:
        meta = snap.metadata
        if meta.index <= self.log.committed:
            return False
        if self.state != StateType.FOLLOWER:
            self.become_follower(self.term + 1, NONE)
            return False
        cs = meta.conf_state
        if self.id not in cs.voters and self.id not in cs.learners:
            return False  # a snapshot for a configuration we are not in
        if self.log.match_term(meta.index, meta.term):
            # We already hold the snapshot's last entry: just fast-forward the commit.
            self.log.commit_to(meta.index)
            return False
        self.log.restore(snap)
        self.trk = ProgressTracker(self.trk.max_inflight, self.trk.max_inflight_bytes)
        self._apply_conf_state(cs)
        pr = self.trk.progress.get(self.id)
        if pr is not None:
            pr.maybe_update(pr.next - 1)
        return True

    # --- membership ------------------------------------------------------------------------
    def _apply_conf_state(self, cs: ConfState) -> None:
        nxt = self.log.last_index() + 1
        for v in cs.voters:
            self.trk.add(v, nxt)
        for v in cs.learners:
            self.trk.add(v, nxt, learner=True)
        self.is_learner = self.id in self.trk.learners

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        nxt = self.log.last_index() + 1
        node = cc.node_id
        if cc.type == ConfChangeType.REMOVE_NODE:
            self.trk.remove(node)
        elif node == NONE:
            pass
        else:
            learner = cc.type == ConfChangeType.ADD_LEARNER
            pr = self.trk.progress.get(node)
            if pr is None:
                self.trk.add(node, nxt, learner)
                # A new member must not be counted inactive before it could answer.
                self.trk.progress[node].recent_active = True
            elif pr.is_learner and not learner:
                pr.is_learner = False
                self.trk.voters.add(node)
                self.trk.learners.discard(node)
        self.is_learner = self.id in self.trk.learners
        if self.state == StateType.LEADER:
            if self.id not in self.trk.voters and self.cfg.step_down_on_removal:
                self.become_follower(self.term, NONE)
            else:
                if self.lead_transferee != NONE and self.lead_transferee not in self.trk.voters:
                    self.lead_transferee = NONE
                # The quorum may have shrunk: entries may now be committed.
                if self.trk.voters and self._maybe_commit():
                    self._bcast_append()
                else:
                    for n in self.trk.members():
                        if n != self.id and self.trk.progress[n].match < self.log.last_index():
                            self._send_append(n)
        return self.conf_state()

    def conf_state(self) -> ConfState:
        return ConfState(tuple(sorted(self.trk.voters)), tuple(sorted(self.trk.learners)))

    # --- local reports ---------------------------------------------------------------------
    def advance_applied(self, index: int) -> None:
        self.log.applied_to(index)
        if self.state == StateType.LEADER:
            self.uncommitted_size = 0
