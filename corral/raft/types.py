"""Protocol vocabulary of the Raft core: messages, entries, snapshots, states.

Everything here is an immutable value (frozen, slotted dataclasses and `IntEnum`s), so a
message handed to the network or an entry handed to the disk can never be changed behind the
core's back. Messages, entries and snapshots carry a format `version` (DESIGN: "formats on
disk/wire carry a version"); `corral.raft.codec` writes and checks it.

The message types mirror etcd-io/raft's `raftpb.MessageType` (see the package docstring for
what each one means).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from enum import IntEnum
from typing import Any, TypeVar

__all__ = [
    "FORMAT_VERSION",
    "NONE",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryType",
    "HardState",
    "Message",
    "MessageType",
    "ReadState",
    "Snapshot",
    "SnapshotMetadata",
    "SoftState",
    "StateType",
]

_T = TypeVar("_T")


def _fast_init(cls: type[_T]) -> type[_T]:
    """Give a frozen, slotted dataclass an `__init__` that fills its slots directly.

    The generated frozen `__init__` goes through `object.__setattr__` per field, several
    times slower than a slot descriptor's setter; messages and entries are built for every
    write. Same parameters and defaults (plain defaults only), same immutability afterwards.
    """
    params, body, env = [], [], {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.default_factory is not MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: default factories are not supported")
        if f.default is MISSING:
            params.append(f.name)
        else:
            env[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
        env[f"_s_{f.name}"] = cls.__dict__[f.name].__set__
        body.append(f"    _s_{f.name}(self, {f.name})")
    src = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body) + "\n"
    ns: dict[str, Any] = {}
    exec(src, env, ns)  # the source is built from the class's own field names
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    setattr(cls, "__init__", init)  # noqa: B010 - mypy refuses assigning a method
    return cls


#: Version of the message/entry/snapshot formats this release writes.
FORMAT_VERSION = 1

#: Node id meaning "nobody" (no leader, no vote).
NONE = 0


class MessageType(IntEnum):
    HUP = 0  # local: start an election
    BEAT = 1  # local: leader sends heartbeats
    PROP = 2  # proposal (local, or forwarded by a follower)
    APP = 3  # AppendEntries
    APP_RESP = 4
    VOTE = 5  # RequestVote
    VOTE_RESP = 6
    SNAP = 7  # InstallSnapshot
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    UNREACHABLE = 10  # local: the transport could not reach a peer
    SNAP_STATUS = 11  # local: a snapshot send finished (reject = failed)
    CHECK_QUORUM = 12  # local: leader checks it heard from a quorum
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14  # transfer target: campaign now, skipping pre-vote and lease
    READ_INDEX = 15
    READ_INDEX_RESP = 16
    PRE_VOTE = 17
    PRE_VOTE_RESP = 18


#: Message types that never leave the node (etcd's IsLocalMsg).
LOCAL_MESSAGES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.UNREACHABLE,
        MessageType.SNAP_STATUS,
        MessageType.CHECK_QUORUM,
    }
)

#: Responses: their term may lag without being an attack on the current leader.
RESPONSE_MESSAGES = frozenset(
    {
        MessageType.APP_RESP,
        MessageType.VOTE_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.UNREACHABLE,
        MessageType.READ_INDEX_RESP,
        MessageType.PRE_VOTE_RESP,
    }
)


class EntryType(IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class StateType(IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


class ConfChangeType(IntEnum):
    ADD_NODE = 0
    REMOVE_NODE = 1
    ADD_LEARNER = 2


@_fast_init
@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. `data` is opaque to Raft (the KV store puts its commands there)."""

    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""
    version: int = FORMAT_VERSION

    def size(self) -> int:
        # etcd limits message size by the entries' encoded size; the payload dominates.
        return len(self.data) + 16


@_fast_init
@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message of the same Ready is sent (§3.8 / fig. 2)."""

    term: int = 0
    vote: int = NONE
    commit: int = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote == NONE and self.commit == 0


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership a snapshot (or the applied log) is at."""

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine image at `metadata.index`; `data` is opaque to Raft."""

    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""
    version: int = FORMAT_VERSION

    def is_empty(self) -> bool:
        return self.metadata.index == 0


@_fast_init
@dataclass(frozen=True, slots=True)
class Message:
    """One Raft message. Field meanings follow etcd's `raftpb.Message`.

    `from_` is the sender (``from`` is a Python keyword). For APP, `log_term`/`index` name
    the entry that precedes `entries`; for APP_RESP, `index` is the highest index the follower
    now matches (or, with `reject`, the rejected index and `reject_hint` the follower's last
    index). `context` carries ReadIndex request ids and the campaign kind of a transfer.
    """

    type: MessageType
    to: int = NONE
    from_: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    version: int = FORMAT_VERSION


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A one-server membership change (thesis §4.1), carried in a CONF_CHANGE entry."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""
    version: int = FORMAT_VERSION


@_fast_init
@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex answer: once applied ≥ `index`, a read tagged `request_ctx` may be served."""

    index: int
    request_ctx: bytes


@_fast_init
@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state: who leads, and what this node is. Never persisted."""

    lead: int
    raft_state: StateType
