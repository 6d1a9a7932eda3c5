"""The Raft core's error hierarchy.

::

    RaftError
    ├── ConfigError              bad Config (local misuse, raised at construction)
    ├── ProposalDroppedError     a proposal was not appended (no leader, transfer, learner…)
    ├── StorageError
    │   ├── CompactedError       the requested index is below the first kept entry
    │   ├── UnavailableError     the requested index is above the last entry
    │   └── SnapshotOutOfDateError  the snapshot is older than the one held
    ├── DecodeError              bytes on the wire/disk are not a valid message (peer's fault)
    └── InvariantError           the core detected a broken Raft invariant (a bug; never ignore)

`ProposalDroppedError` is what etcd calls `ErrProposalDropped`; the server maps it to etcd's
`300 Raft Internal Error` / a retryable failure. `DecodeError` is the remote peer's fault, the
others are local.
"""

from __future__ import annotations

__all__ = [
    "CompactedError",
    "ConfigError",
    "DecodeError",
    "InvariantError",
    "ProposalDroppedError",
    "RaftError",
    "SnapshotOutOfDateError",
    "StorageError",
    "UnavailableError",
]


class RaftError(Exception):
    """Base of every error raised by `corral.raft`."""


class ConfigError(RaftError, ValueError):
    """The configuration handed to the core is invalid."""


class ProposalDroppedError(RaftError):
    """The proposal was dropped; it may be retried (possibly on another node)."""


class StorageError(RaftError):
    """Storage cannot answer for the requested range."""


class CompactedError(StorageError):
    """The requested index has been compacted into a snapshot."""


class UnavailableError(StorageError):
    """The requested index is beyond the last stored entry."""


class SnapshotOutOfDateError(StorageError):
    """The offered snapshot is older than the one already held."""


class DecodeError(RaftError, ValueError):
    """Bytes could not be decoded into a Raft value (wrong version or shape)."""


class InvariantError(RaftError, AssertionError):
    """A Raft invariant would be broken; this is a bug in the caller or the core."""
