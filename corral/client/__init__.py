"""corral's etcd v2 client: one sans-IO protocol core, a blocking and an asyncio shell.

    from corral.client import SyncClient
    with SyncClient("http://127.0.0.1:2379") as c:
        c.set("/greeting", "hello")
        for event in c.watch("/greeting", index=c.get("/greeting").etcd_index + 1):
            ...

Modules: `protocol` (requests, parsing, watch cursor, retry rule — no I/O), `endpoints`
(the endpoint pool), `errors` (the exception tree, one class per etcd error code),
`sync` (`SyncClient`, http.client) and `aio` (`AsyncClient`, aiohttp).
"""

from __future__ import annotations

from corral.client.endpoints import EndpointPool, normalize_endpoint
from corral.client.errors import (
    ClientError,
    ClusterUnavailable,
    CompareFailed,
    DirectoryNotEmpty,
    EtcdError,
    EventIndexCleared,
    InvalidRequest,
    KeyNotFound,
    MembersError,
    NodeExists,
    NotADirectory,
    NotAFile,
    OutcomeUnknown,
    ProtocolError,
    RaftInternalError,
    RootReadOnly,
    Unauthorized,
    UsageError,
)
from corral.client.protocol import KeyResult, Member, Node, RawAnswer, Request, WatchCursor
from corral.client.sync import SyncClient, Timeouts

__all__ = [
    "AsyncClient",
    "ClientError",
    "ClusterUnavailable",
    "CompareFailed",
    "DirectoryNotEmpty",
    "EndpointPool",
    "EtcdError",
    "EventIndexCleared",
    "InvalidRequest",
    "KeyNotFound",
    "KeyResult",
    "Member",
    "MembersError",
    "Node",
    "NodeExists",
    "NotADirectory",
    "NotAFile",
    "OutcomeUnknown",
    "ProtocolError",
    "RaftInternalError",
    "RawAnswer",
    "Request",
    "RootReadOnly",
    "SyncClient",
    "Timeouts",
    "Unauthorized",
    "UsageError",
    "WatchCursor",
    "normalize_endpoint",
]


def __getattr__(name: str) -> object:
    # aiohttp is imported only by users of the asyncio client.
    if name == "AsyncClient":
        from corral.client.aio import AsyncClient

        return AsyncClient
    raise AttributeError(name)
