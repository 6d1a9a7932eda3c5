"""`RawNode`: the Ready/Advance contract around the core (etcd-io/raft `rawnode.go`).

See the package docstring for the processing order a driver must follow.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from corral.raft.codec import encode_conf_change
from corral.raft.core import Config, Mutation, Raft
from corral.raft.errors import InvariantError, ProposalDroppedError
from corral.raft.storage import MemoryStorage
from corral.raft.types import (
    LOCAL_MESSAGES,
    NONE,
    RESPONSE_MESSAGES,
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
    _fast_init,
)

__all__ = ["RawNode", "Ready", "Status"]


@_fast_init
@dataclass(frozen=True, slots=True)
class Ready:
    """Work for the driver: persist, then send, then apply, then call `advance()`.

    `hard_state` is None when unchanged; `snapshot` is None when there is none to install.
    `must_sync` says whether the write must be fsynced before the messages go out.
    """

    soft_state: SoftState | None
    hard_state: HardState | None
    read_states: tuple[ReadState, ...]
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    committed_entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    must_sync: bool


@dataclass(frozen=True, slots=True)
class Status:
    id: int
    term: int
    vote: int
    commit: int
    applied: int
    lead: int
    state: StateType
    progress: dict[int, tuple[int, int, str]]


class RawNode:
    """A single-threaded Raft node. Not thread-safe; one outstanding Ready at a time."""

    def __init__(
        self, config: Config, storage: MemoryStorage, rng: random.Random | None = None
    ) -> None:
        self.raft = Raft(config, storage, rng if rng is not None else random.Random(config.id))
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()
        self._in_ready: Ready | None = None

    def bootstrap(self, voters: list[int]) -> None:
        """Start a brand-new cluster: log one ADD_NODE entry per voter, committed at term 1.

        Like etcd's `RawNode.Bootstrap`: the entries reach the application as committed
        entries in the first Ready (applying them again is harmless), so members added later
        learn the initial configuration from the log itself.
        """
        r = self.raft
        if r.log.last_index() != 0:
            raise InvariantError("can only bootstrap an empty log")
        if not voters:
            raise ValueError("bootstrap needs at least one voter")
        r.become_follower(1, NONE)
        ents = [
            Entry(
                1,
                i + 1,
                EntryType.CONF_CHANGE,
                encode_conf_change(ConfChange(ConfChangeType.ADD_NODE, v)),
            )
            for i, v in enumerate(voters)
        ]
        r.log.append(ents)
        r.log.committed = len(ents)
        for v in voters:
            r.apply_conf_change(ConfChange(ConfChangeType.ADD_NODE, v))

    # --- inputs ----------------------------------------------------------------------------
    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        self.raft.step(Message(MessageType.HUP))

    def propose(self, data: bytes) -> None:
        """Propose `data` for the log. Raises ProposalDroppedError if it cannot be."""
        self.raft.step(
            Message(MessageType.PROP, from_=self.raft.id, entries=(Entry(0, 0, data=data),))
        )

    def propose_batch(self, datas: list[bytes]) -> None:
        """Propose several payloads at once: one log append and one message per follower.

        All or none: raises ProposalDroppedError if the batch cannot be appended.
        """
        if datas:
            ents = tuple(Entry(0, 0, data=d) for d in datas)
            self.raft.step(Message(MessageType.PROP, from_=self.raft.id, entries=ents))

    def propose_conf_change(self, cc: ConfChange) -> None:
        entry = Entry(0, 0, EntryType.CONF_CHANGE, encode_conf_change(cc))
        self.raft.step(Message(MessageType.PROP, from_=self.raft.id, entries=(entry,)))

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed conf change; must be called for every CONF_CHANGE entry."""
        return self.raft.apply_conf_change(cc)

    def step(self, m: Message) -> None:
        """Feed a message received from a peer. Local message types are refused."""
        if m.type in LOCAL_MESSAGES:
            raise ValueError(f"cannot step local message type {m.type.name}")
        if m.type in RESPONSE_MESSAGES and m.from_ not in self.raft.trk.progress:
            return  # a response from a peer we no longer track
        try:
            self.raft.step(m)
        except ProposalDroppedError:
            if m.type not in (MessageType.PROP, MessageType.READ_INDEX):
                raise
            # A forwarded proposal/read that cannot be served is dropped; its sender times out.

    def read_index(self, ctx: bytes) -> None:
        """Request a linearizable read point; answered by a ReadState carrying `ctx`."""
        self.raft.step(Message(MessageType.READ_INDEX, from_=NONE, context=ctx))

    def transfer_leader(self, transferee: int) -> None:
        self.raft.step(Message(MessageType.TRANSFER_LEADER, from_=transferee))

    def report_unreachable(self, node: int) -> None:
        self.raft.step(Message(MessageType.UNREACHABLE, from_=node))

    def report_snapshot(self, node: int, ok: bool) -> None:
        self.raft.step(Message(MessageType.SNAP_STATUS, from_=node, reject=not ok))

    # --- outputs ---------------------------------------------------------------------------
    def has_ready(self) -> bool:
        r = self.raft
        log = r.log
        u = log.unstable
        if r.msgs or r.read_states or u.entries or u.snapshot is not None:
            return True
        ps, ph = self._prev_soft, self._prev_hard
        if r.lead != ps.lead or r.state != ps.raft_state:
            return True
        if r.term != ph.term or r.vote != ph.vote or log.committed != ph.commit:
            return True
        return log.has_next_committed_ents()

    def ready(self) -> Ready:
        if self._in_ready is not None:
            raise InvariantError("ready() called twice without advance()")
        r = self.raft
        log = r.log
        # State objects are built only when they changed: most Readies of a busy member
        # carry neither a new leader nor a new term, and often no new commit index.
        ps = self._prev_soft
        soft: SoftState | None = None
        if r.lead != ps.lead or r.state != ps.raft_state:
            soft = self._prev_soft = SoftState(r.lead, r.state)
        ph = self._prev_hard
        hs: HardState | None = None
        term_or_vote = r.term != ph.term or r.vote != ph.vote
        if term_or_vote or log.committed != ph.commit:
            hs = self._prev_hard = HardState(r.term, r.vote, log.committed)
        u = log.unstable
        entries = tuple(u.entries) if u.entries else ()
        snap = u.snapshot
        must_sync = bool(entries) or snap is not None
        if term_or_vote and Mutation.VOTE_BEFORE_PERSIST not in r.mut:
            must_sync = True
        rd = Ready(
            soft_state=soft,
            hard_state=hs,
            read_states=tuple(r.read_states) if r.read_states else (),
            entries=entries,
            snapshot=snap,
            committed_entries=(
                tuple(log.next_committed_ents()) if log.has_next_committed_ents() else ()
            ),
            messages=tuple(r.msgs) if r.msgs else (),
            must_sync=must_sync,
        )
        if r.msgs:
            r.msgs = []
        if r.read_states:
            r.read_states = []
        self._in_ready = rd
        return rd

    def advance(self) -> None:
        """Acknowledge that the last Ready was persisted, sent and applied."""
        rd = self._in_ready
        if rd is None:
            raise InvariantError("advance() without ready()")
        self._in_ready = None
        log = self.raft.log
        if rd.snapshot is not None:
            log.stable_snap_to(rd.snapshot.metadata.index)
            if rd.snapshot.metadata.index > log.applied:
                log.applied = rd.snapshot.metadata.index
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            self.raft.advance_applied(rd.committed_entries[-1].index)

    def status(self) -> Status:
        r = self.raft
        prog = {n: (p.match, p.next, p.state.name) for n, p in sorted(r.trk.progress.items())}
        return Status(r.id, r.term, r.vote, r.log.committed, r.log.applied, r.lead, r.state, prog)
