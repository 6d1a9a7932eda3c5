"""corral's Raft consensus core: deterministic, no I/O (modelled on etcd-io/raft).

Usage (the RawNode contract, etcd-io/raft `doc.go`)::

    storage = MemoryStorage(ConfState(voters=(1, 2, 3)))    # or replayed from snapshot + WAL
    node = RawNode(Config(id=1), storage, random.Random(seed))
    loop:
        node.tick()            every tick interval (election = election_tick ticks)
        node.step(msg)         for every message received from a peer
        node.propose(data)     to replicate `data` (may raise ProposalDroppedError)
        node.read_index(ctx)   for a linearizable read point
        if node.has_ready():
            rd = node.ready()
            1. persist rd.snapshot, then rd.entries (writing entry i discards stored ≥ i),
               then rd.hard_state; fsync when rd.must_sync.  Make them visible in storage
               (storage.apply_snapshot / append / set_hard_state).
            2. send rd.messages (only now: they promise what step 1 made durable);
               after sending a SNAP call report_snapshot(), on failure report_unreachable().
            3. apply rd.snapshot, then rd.committed_entries in order; for CONF_CHANGE entries
               call node.apply_conf_change(decode_conf_change(e.data)); serve reads whose
               ReadState.index ≤ applied.
            4. node.advance()

Proposals are not guaranteed to commit (leader change, transfer): the caller must time out.

Message types (`MessageType`): HUP starts an election; BEAT makes a leader heartbeat; PROP
carries proposals (followers forward to the leader); APP/APP_RESP replicate and acknowledge
entries (a rejection carries a hint: the follower's last index); VOTE/PRE_VOTE and their
responses run (pre-)elections; SNAP installs a snapshot; HEARTBEAT(_RESP) keep leadership
and carry ReadIndex contexts; CHECK_QUORUM makes a leader step down without a quorum;
TRANSFER_LEADER / TIMEOUT_NOW hand leadership over; READ_INDEX(_RESP) serve linearizable
reads; UNREACHABLE / SNAP_STATUS are local reports from the transport.

Module map: `types` (vocabulary), `codec` (msgpack), `errors`, `storage`, `log`, `progress`
(flow control), `readonly` (ReadIndex), `core` (the state machine and its rulebook),
`rawnode` (Ready/Advance).
"""

from corral.raft.codec import (
    decode_conf_change,
    decode_entry,
    decode_hard_state,
    decode_message,
    decode_snapshot,
    encode_conf_change,
    encode_entry,
    encode_hard_state,
    encode_message,
    encode_snapshot,
)
from corral.raft.core import CAMPAIGN_TRANSFER, Config, Mutation, Raft
from corral.raft.errors import (
    CompactedError,
    ConfigError,
    DecodeError,
    InvariantError,
    ProposalDroppedError,
    RaftError,
    SnapshotOutOfDateError,
    StorageError,
    UnavailableError,
)
from corral.raft.rawnode import RawNode, Ready, Status
from corral.raft.storage import MemoryStorage
from corral.raft.types import (
    FORMAT_VERSION,
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
    SnapshotMetadata,
    SoftState,
    StateType,
)

__all__ = [
    "CAMPAIGN_TRANSFER",
    "FORMAT_VERSION",
    "NONE",
    "CompactedError",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Config",
    "ConfigError",
    "DecodeError",
    "Entry",
    "EntryType",
    "HardState",
    "InvariantError",
    "MemoryStorage",
    "Message",
    "MessageType",
    "Mutation",
    "ProposalDroppedError",
    "Raft",
    "RaftError",
    "RawNode",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMetadata",
    "SnapshotOutOfDateError",
    "SoftState",
    "StateType",
    "Status",
    "StorageError",
    "UnavailableError",
    "decode_conf_change",
    "decode_entry",
    "decode_hard_state",
    "decode_message",
    "decode_snapshot",
    "encode_conf_change",
    "encode_entry",
    "encode_hard_state",
    "encode_message",
    "encode_snapshot",
]
