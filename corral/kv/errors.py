"""The v2 keys API error vocabulary: etcd's `v2error` table, one exception class per code.

Hierarchy (one tree for the KV subsystem)::

    KVError
    ├── V2Error                  an answer on the wire: {"errorCode","message","cause","index"}
    │   ├── KeyNotFound          100  (404)
    │   ├── CompareFailed        101  (412)
    │   ├── NotAFile             102  (403)
    │   ├── NotADirectory        104  (400)
    │   ├── NodeExists           105  (412)
    │   ├── RootReadOnly         107  (400)
    │   ├── DirectoryNotEmpty    108  (403)
    │   ├── Unauthorized         110  (401)
    │   ├── PrevValueRequired    201, TTLNaN 202, IndexNaN 203, InvalidField 209,
    │   │   InvalidForm 210, RefreshValue 211, RefreshTTLRequired 212   (400)
    │   ├── RaftInternal         300  (500)
    │   ├── EventIndexCleared    401  (400, not 401: python-etcd maps HTTP 401 to code 110)
    │   └── ... every other code of the table (103 106 109 200 204-208 301 400 402-404 500)
    └── FormatError              a command or snapshot that cannot be decoded (also ValueError)

Messages are etcd 3.4's exact strings (`etcdserver/api/v2error/error.go`); HTTP statuses follow
its fixed map: 100→404; 101, 105→412; 102, 108→403; 110→401; 300, 301→500; all others 400.
`cause` is free text (usually a key) and `index` the etcd index when the error was raised
(0 for request-validation errors).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "MESSAGES",
    "ClientInternal",
    "CompareFailed",
    "DirectoryNotEmpty",
    "EventIndexCleared",
    "ExistingPeerAddr",
    "FormatError",
    "IndexNaN",
    "IndexOrValueRequired",
    "IndexValueMutex",
    "InvalidActiveSize",
    "InvalidField",
    "InvalidForm",
    "InvalidRemoveDelay",
    "KVError",
    "KeyIsPreserved",
    "KeyNotFound",
    "LeaderElect",
    "NameRequired",
    "NoMorePeer",
    "NodeExists",
    "NotADirectory",
    "NotAFile",
    "PrevValueRequired",
    "RaftInternal",
    "RefreshTTLRequired",
    "RefreshValue",
    "RootReadOnly",
    "StandbyInternal",
    "TTLNaN",
    "TimeoutNaN",
    "Unauthorized",
    "V2Error",
    "ValueOrTTLRequired",
    "ValueRequired",
    "WatcherCleared",
    "error_for",
    "http_status_for",
]

#: etcd's message for every code of the v2error table.
MESSAGES: dict[int, str] = {
    100: "Key not found",
    101: "Compare failed",
    102: "Not a file",
    103: "Reached the max number of peers in the cluster",
    104: "Not a directory",
    105: "Key already exists",
    106: "The prefix of given key is a keyword in etcd",
    107: "Root is read only",
    108: "Directory not empty",
    109: "Peer address has existed",
    110: "The request requires user authentication",
    200: "Value is Required in POST form",
    201: "PrevValue is Required in POST form",
    202: "The given TTL in POST form is not a number",
    203: "The given index in POST form is not a number",
    204: "Value or TTL is required in POST form",
    205: "The given timeout in POST form is not a number",
    206: "Name is required in POST form",
    207: "Index or value is required",
    208: "Index and value cannot both be specified",
    209: "Invalid field",
    210: "Invalid POST form",
    211: "Value provided on refresh",
    212: "A TTL must be provided on refresh",
    300: "Raft Internal Error",
    301: "During Leader Election",
    400: "watcher is cleared due to etcd recovery",
    401: "The event in requested index is outdated and cleared",
    402: "Standby Internal Error",
    403: "Invalid active size",
    404: "Standby remove delay",
    500: "Client Internal Error",
}

_STATUS: dict[int, int] = {
    100: 404,
    101: 412,
    105: 412,
    102: 403,
    108: 403,
    110: 401,
    300: 500,
    301: 500,
}


def http_status_for(code: int) -> int:
    """The HTTP status etcd sends with error `code` (400 unless the fixed map says otherwise)."""
    return _STATUS.get(code, 400)


class KVError(Exception):
    """Root of every error the KV subsystem raises on purpose."""


class FormatError(KVError, ValueError):
    """Bytes that are not a command or snapshot this release can read (bad or unknown version)."""


class V2Error(KVError):
    """An etcd v2 error answer. Subclasses fix `code`; `error_for` picks the right one."""

    code: ClassVar[int] = 300

    def __init__(self, cause: str = "", index: int = 0, *, message: str | None = None) -> None:
        self.message: str = MESSAGES.get(self.code, "") if message is None else message
        self.cause: str = cause
        self.index: int = index
        super().__init__(f"{self.code}: {self.message} ({self.cause}) [{self.index}]")

    @property
    def http_status(self) -> int:
        return http_status_for(self.code)

    def to_json(self) -> dict[str, Any]:
        """The error body's fields in etcd's order; `cause` is left out when empty."""
        body: dict[str, Any] = {"errorCode": self.code, "message": self.message}
        if self.cause:
            body["cause"] = self.cause
        body["index"] = self.index
        return body

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cause={self.cause!r}, index={self.index})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, V2Error):
            return NotImplemented
        return (self.code, self.message, self.cause, self.index) == (
            other.code,
            other.message,
            other.cause,
            other.index,
        )

    def __hash__(self) -> int:
        return hash((self.code, self.cause, self.index))


class KeyNotFound(V2Error):
    code = 100


class CompareFailed(V2Error):
    code = 101


class NotAFile(V2Error):
    code = 102


class NoMorePeer(V2Error):
    code = 103


class NotADirectory(V2Error):
    code = 104


class NodeExists(V2Error):
    code = 105


class KeyIsPreserved(V2Error):
    code = 106


class RootReadOnly(V2Error):
    code = 107


class DirectoryNotEmpty(V2Error):
    code = 108


class ExistingPeerAddr(V2Error):
    code = 109


class Unauthorized(V2Error):
    code = 110


class ValueRequired(V2Error):
    code = 200


class PrevValueRequired(V2Error):
    code = 201


class TTLNaN(V2Error):
    code = 202


class IndexNaN(V2Error):
    code = 203


class ValueOrTTLRequired(V2Error):
    code = 204


class TimeoutNaN(V2Error):
    code = 205


class NameRequired(V2Error):
    code = 206


class IndexOrValueRequired(V2Error):
    code = 207


class IndexValueMutex(V2Error):
    code = 208


class InvalidField(V2Error):
    code = 209


class InvalidForm(V2Error):
    code = 210


class RefreshValue(V2Error):
    code = 211


class RefreshTTLRequired(V2Error):
    code = 212


class RaftInternal(V2Error):
    code = 300


class LeaderElect(V2Error):
    code = 301


class WatcherCleared(V2Error):
    code = 400


class EventIndexCleared(V2Error):
    code = 401


class StandbyInternal(V2Error):
    code = 402


class InvalidActiveSize(V2Error):
    code = 403


class InvalidRemoveDelay(V2Error):
    code = 404


class ClientInternal(V2Error):
    code = 500


_BY_CODE: dict[int, type[V2Error]] = {
    cls.code: cls
    for cls in (
        KeyNotFound,
        CompareFailed,
        NotAFile,
        NoMorePeer,
        NotADirectory,
        NodeExists,
        KeyIsPreserved,
        RootReadOnly,
        DirectoryNotEmpty,
        ExistingPeerAddr,
        Unauthorized,
        ValueRequired,
        PrevValueRequired,
        TTLNaN,
        IndexNaN,
        ValueOrTTLRequired,
        TimeoutNaN,
        NameRequired,
        IndexOrValueRequired,
        IndexValueMutex,
        InvalidField,
        InvalidForm,
        RefreshValue,
        RefreshTTLRequired,
        RaftInternal,
        LeaderElect,
        WatcherCleared,
        EventIndexCleared,
        StandbyInternal,
        InvalidActiveSize,
        InvalidRemoveDelay,
        ClientInternal,
    )
}


def error_for(code: int, cause: str = "", index: int = 0) -> V2Error:
    """The exception for `code` (a code outside the table raises ValueError: a programming bug)."""
    try:
        cls = _BY_CODE[code]
    except KeyError:
        raise ValueError(f"unknown v2 error code {code}") from None
    return cls(cause, index)
