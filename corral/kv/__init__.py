"""corral's etcd v2 key-value store.

The pure core (no I/O, no clock): `keyspace` (the v2 tree as a state machine), `commands`
(the write commands a member proposes), `events` (node/event values and their JSON),
`watch` (the 1000-event history and the watcher hub), `errors` (etcd's v2error table).
The HTTP API and the `corral etcd` member server are the asyncio shell around it.
"""

from corral.kv.commands import (
    CompareAndDelete,
    CompareAndSwap,
    Create,
    Delete,
    InternalWrite,
    Set,
    Sync,
    Update,
    decode,
    encode,
)
from corral.kv.errors import FormatError, KVError, V2Error, error_for
from corral.kv.events import Action, Event, Node, render_event
from corral.kv.keyspace import Keyspace
from corral.kv.watch import EventHistory, Watcher, WatcherHub

__all__ = [
    "Action",
    "CompareAndDelete",
    "CompareAndSwap",
    "Create",
    "Delete",
    "Event",
    "EventHistory",
    "FormatError",
    "InternalWrite",
    "KVError",
    "Keyspace",
    "Node",
    "Set",
    "Sync",
    "Update",
    "V2Error",
    "Watcher",
    "WatcherHub",
    "decode",
    "encode",
    "error_for",
    "render_event",
]
