"""Write commands of the v2 keyspace: what a member proposes, and (later) a Raft entry payload.

Time is data. The member that accepts a request stamps its own clock into the command (`now`,
integer nanoseconds since the Unix epoch, UTC) and computes `expire_at` itself
(`now + ttl * 10**9`; ttl=0 gives `now`; `None` means permanent). `Keyspace.apply` never reads
a clock, so every replica applying the same commands ends in the same state. Expiry only
happens through `Sync(now)`, which the leader proposes (etcd's SYNC, `etcdserver/server.go`).

Which command a request becomes follows etcd's `apply_v2.go` (reference §5.2, §5.4):

==========================  =============================================================
PUT prevExist=true          `Update` (no prevValue/prevIndex) else `CompareAndSwap`
PUT prevExist=false         `Create(unique=False)`
PUT prevValue/prevIndex>0   `CompareAndSwap`
PUT otherwise               `Set`
POST                        `Create(unique=True)` (key becomes key/%020d of the new index)
DELETE prevValue/prevIndex  `CompareAndDelete`
DELETE otherwise            `Delete(dir=dir or recursive, recursive)`
==========================  =============================================================

`InternalWrite` is etcd's own write under its hidden `/0` namespace (member add, cluster
version): it takes an index and a history slot but is unreachable from `/v2/keys`.
`InternalChange` is the conditional write or delete v2 auth makes under the hidden `/2`
namespace (etcd's `setResource`/`deleteResource` in `v2auth/auth_requests.go`).

Wire format: msgpack array ``[FORMAT_VERSION, tag, *fields]``. `decode` rejects other versions
and malformed payloads with `FormatError`. Release N must keep reading N−1's tags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import msgpack

from corral.kv.errors import FormatError

__all__ = [
    "FORMAT_VERSION",
    "Command",
    "CompareAndDelete",
    "CompareAndSwap",
    "Create",
    "Delete",
    "InternalChange",
    "InternalWrite",
    "Set",
    "Sync",
    "Update",
    "decode",
    "encode",
    "expire_at_for",
]

#: Version of the command encoding (the first element of every encoded command).
FORMAT_VERSION = 1

NANOS = 1_000_000_000


def expire_at_for(now: int, ttl: int | None) -> int | None:
    """`expire_at` for a request received at `now` with `ttl` seconds (None = permanent)."""
    if ttl is None:
        return None
    return now + ttl * NANOS


@dataclass(frozen=True, slots=True)
class Set:
    """PUT without conditions: replace (or create) the node. `refresh` keeps the old value."""

    key: str
    value: str = ""
    dir: bool = False
    expire_at: int | None = None
    refresh: bool = False
    now: int = 0


@dataclass(frozen=True, slots=True)
class Create:
    """PUT prevExist=false (`unique=False`) or POST (`unique=True`: an in-order key under key)."""

    key: str
    value: str = ""
    dir: bool = False
    expire_at: int | None = None
    unique: bool = False
    now: int = 0


@dataclass(frozen=True, slots=True)
class Update:
    """PUT prevExist=true: new value and TTL, createdIndex kept. `refresh` keeps the value."""

    key: str
    value: str = ""
    expire_at: int | None = None
    refresh: bool = False
    now: int = 0


@dataclass(frozen=True, slots=True)
class CompareAndSwap:
    """PUT with prevValue/prevIndex conditions ("" and 0 are "no condition")."""

    key: str
    value: str = ""
    prev_value: str = ""
    prev_index: int = 0
    expire_at: int | None = None
    refresh: bool = False
    now: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    """DELETE: a file always; a dir needs `dir`; a non-empty dir needs `recursive`."""

    key: str
    dir: bool = False
    recursive: bool = False
    now: int = 0


@dataclass(frozen=True, slots=True)
class CompareAndDelete:
    """DELETE with prevValue/prevIndex conditions; files only."""

    key: str
    prev_value: str = ""
    prev_index: int = 0
    now: int = 0


@dataclass(frozen=True, slots=True)
class Sync:
    """Expire every node whose `expire_at <= now` (etcd's SYNC, proposed by the leader)."""

    now: int


@dataclass(frozen=True, slots=True)
class InternalWrite:
    """A write to etcd's hidden namespace (`/0/...`): an index and a history slot, no user key."""

    key: str
    value: str
    now: int = 0


@dataclass(frozen=True, slots=True)
class InternalChange:
    """A hidden-namespace write (`value`) or delete (`value=None`) with etcd's prevExist rule:
    True needs the key (100 otherwise), False needs it absent (105 otherwise), None neither."""

    key: str
    value: str | None
    prev_exist: bool | None = None
    now: int = 0


Command = (
    Set
    | Create
    | Update
    | CompareAndSwap
    | Delete
    | CompareAndDelete
    | Sync
    | InternalWrite
    | InternalChange
)

# Tags are part of the wire format: never renumber, only add.
_TAGS: dict[type[Any], int] = {
    Set: 1,
    Create: 2,
    Update: 3,
    CompareAndSwap: 4,
    Delete: 5,
    CompareAndDelete: 6,
    Sync: 7,
    InternalWrite: 8,
    InternalChange: 9,
}
_TYPES: dict[int, type[Any]] = {tag: cls for cls, tag in _TAGS.items()}
# Field names in order per command class (`astuple` deep-copies; every field is a scalar).
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _TAGS
}

# Field types per tag, checked on decode so a corrupt payload cannot build a bad command.
_FIELD_TYPES: dict[int, tuple[tuple[type[Any], ...], ...]] = {
    1: ((str,), (str,), (bool,), (int, type(None)), (bool,), (int,)),
    2: ((str,), (str,), (bool,), (int, type(None)), (bool,), (int,)),
    3: ((str,), (str,), (int, type(None)), (bool,), (int,)),
    4: ((str,), (str,), (str,), (int,), (int, type(None)), (bool,), (int,)),
    5: ((str,), (bool,), (bool,), (int,)),
    6: ((str,), (str,), (int,), (int,)),
    7: ((int,),),
    8: ((str,), (str,), (int,)),
    9: ((str,), (str, type(None)), (bool, type(None)), (int,)),
}


def encode(cmd: Command) -> bytes:
    """Serialise a command (msgpack, versioned)."""
    try:
        tag = _TAGS[type(cmd)]
    except KeyError:
        raise TypeError(f"not a keyspace command: {cmd!r}") from None
    # Keys may hold bytes that are not UTF-8 (lone surrogates, kept so they render as Go does).
    return msgpack.packb(
        [FORMAT_VERSION, tag, *[getattr(cmd, name) for name in _FIELDS[type(cmd)]]],
        use_bin_type=True,
        unicode_errors="surrogateescape",
    )


def decode(data: bytes) -> Command:
    """Parse bytes made by `encode`. Raises FormatError for anything else."""
    try:
        obj = msgpack.unpackb(
            data, raw=False, strict_map_key=True, unicode_errors="surrogateescape"
        )
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise FormatError(f"keyspace command is not valid msgpack: {exc}") from None
    if not isinstance(obj, list) or len(obj) < 2:
        raise FormatError("keyspace command must be an array [version, tag, fields...]")
    version, tag, *fields = obj
    if version != FORMAT_VERSION:
        raise FormatError(
            f"keyspace command format version {version!r} is not supported "
            f"(this release reads version {FORMAT_VERSION})"
        )
    types = _FIELD_TYPES.get(tag) if isinstance(tag, int) else None
    if types is None:
        raise FormatError(f"unknown keyspace command tag {tag!r}")
    if len(fields) != len(types):
        raise FormatError(f"keyspace command tag {tag} needs {len(types)} fields, got {len(fields)}")
    for value, allowed in zip(fields, types, strict=True):
        # bool is an int subclass: an int field must not accept a bool and vice versa.
        if type(value) not in allowed:
            raise FormatError(f"keyspace command tag {tag}: bad field {value!r}")
    cmd: Command = _TYPES[tag](*fields)
    return cmd
