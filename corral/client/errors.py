"""The client's error hierarchy, mapped 1:1 to etcd v2's error codes.

::

    ClientError
    ├── EtcdError                  the server answered with an etcd error body (errorCode …)
    │   ├── KeyNotFound            100  (HTTP 404)
    │   ├── CompareFailed          101  (HTTP 412)
    │   ├── NotAFile               102  (HTTP 403)
    │   ├── NotADirectory          104
    │   ├── NodeExists             105  (HTTP 412)
    │   ├── RootReadOnly           107
    │   ├── DirectoryNotEmpty      108  (HTTP 403)
    │   ├── Unauthorized           110  (HTTP 401)
    │   ├── InvalidRequest         200–212 (the request was malformed)
    │   ├── RaftInternalError      300, 301 (HTTP 500: timeout, no leader, stopping)
    │   └── EventIndexCleared      401  (watch index older than the 1000-event history)
    ├── MembersError               /v2/members and /v2/stats answered {"message": …}
    ├── ClusterUnavailable         no endpoint could be reached; `.errors` per endpoint
    ├── OutcomeUnknown             a non-idempotent request may or may not have been applied
    ├── ProtocolError              the answer is not what the v2 API sends (the server's fault)
    └── UsageError (ValueError)    the caller's arguments are invalid (raised before any I/O)

Codes without their own class (103, 106, 109, 400, 402–404, 500) raise a plain `EtcdError`.
`OutcomeUnknown` is raised instead of silently re-sending a request that is not idempotent
(POST, set, create, update, CAS, delete, CAD) after it may have reached a server: the
connection broke or timed out after the request was written, or the server answered
`300 Raft Internal Error` (the proposal may still commit). The original failure is
`__cause__`. Reads never raise it: they fail over to the next endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "ClientError",
    "ClusterUnavailable",
    "CompareFailed",
    "DirectoryNotEmpty",
    "EtcdError",
    "EventIndexCleared",
    "InvalidRequest",
    "KeyNotFound",
    "MembersError",
    "NodeExists",
    "NotADirectory",
    "NotAFile",
    "OutcomeUnknown",
    "ProtocolError",
    "RaftInternalError",
    "RootReadOnly",
    "Unauthorized",
    "UsageError",
    "error_from_body",
]


class ClientError(Exception):
    """Base of every error raised by `corral.client`."""


class EtcdError(ClientError):
    """An etcd v2 error answer: `{"errorCode", "message", "cause", "index"}`."""

    code: int = 0

    def __init__(self, code: int, message: str, cause: str = "", index: int = 0) -> None:
        self.code = code
        self.message = message
        self.cause = cause
        self.index = index
        super().__init__(f"{code}: {message} ({cause}) [{index}]")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"errorCode": self.code, "message": self.message}
        if self.cause:
            out["cause"] = self.cause
        out["index"] = self.index
        return out


class KeyNotFound(EtcdError):
    """100: the key (or the first missing component, in `cause`) does not exist."""


class CompareFailed(EtcdError):
    """101: a prevValue/prevIndex condition did not hold."""


class NotAFile(EtcdError):
    """102: the operation needs a file but found a directory."""


class NotADirectory(EtcdError):
    """104: a path component is a file."""


class NodeExists(EtcdError):
    """105: create on a key that already exists."""


class RootReadOnly(EtcdError):
    """107: the root cannot be written or deleted."""


class DirectoryNotEmpty(EtcdError):
    """108: delete of a non-empty directory without recursive."""


class Unauthorized(EtcdError):
    """110: authentication is required or insufficient."""


class InvalidRequest(EtcdError):
    """200–212: the server rejected the request's parameters."""


class RaftInternalError(EtcdError):
    """300/301: the server could not complete the request through Raft."""


class EventIndexCleared(EtcdError):
    """401: the requested watch index is older than the server's event history."""


_BY_CODE: dict[int, type[EtcdError]] = {
    100: KeyNotFound,
    101: CompareFailed,
    102: NotAFile,
    104: NotADirectory,
    105: NodeExists,
    107: RootReadOnly,
    108: DirectoryNotEmpty,
    110: Unauthorized,
    300: RaftInternalError,
    301: RaftInternalError,
    401: EventIndexCleared,
}


def error_from_body(body: dict[str, Any]) -> EtcdError:
    """Build the right `EtcdError` subclass from a decoded error body."""
    code = int(body.get("errorCode", 0))
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = InvalidRequest if 200 <= code < 300 else EtcdError
    return cls(code, str(body.get("message", "")), str(body.get("cause", "")),
               int(body.get("index", 0)))


class MembersError(ClientError):
    """An error answer of the members/stats API: an HTTP status and a message."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status}: {message}")


class ClusterUnavailable(ClientError):
    """No endpoint answered. `errors` pairs each endpoint with the failure seen there."""

    def __init__(self, errors: Sequence[tuple[str, BaseException]]) -> None:
        self.errors = list(errors)
        # Worded as the Go v2 client's ClusterError, which etcdctl prints.
        super().__init__(
            "client: etcd cluster is unavailable or misconfigured"
            + "".join(f"; error #{i}: {describe_failure(ep, e)}\n"
                      for i, (ep, e) in enumerate(errors))
        )

    def detail(self) -> str:
        return "".join(
            f"error #{i}: {describe_failure(ep, e)}\n" for i, (ep, e) in enumerate(self.errors)
        )

    @property
    def connection_only(self) -> bool:
        """True when every failure was a connection failure (not a bad answer)."""
        return all(isinstance(e, OSError) for _, e in self.errors)


class OutcomeUnknown(ClientError):
    """A non-idempotent request may or may not have been applied; it was not re-sent."""

    def __init__(self, endpoint: str, method: str, path: str, reason: str) -> None:
        self.endpoint = endpoint
        self.method = method
        self.path = path
        self.reason = reason
        super().__init__(
            f"outcome unknown: {method} {path} on {endpoint} may have been applied ({reason})"
        )


class ProtocolError(ClientError):
    """The server's answer does not follow the v2 API."""


class UsageError(ClientError, ValueError):
    """The caller's arguments are invalid; nothing was sent."""


def describe_failure(endpoint: str, exc: BaseException) -> str:
    """A one-line description of a transport failure, in etcdctl's words where they exist."""
    hostport = endpoint.split("://", 1)[-1].rstrip("/")
    if isinstance(exc, ConnectionRefusedError):
        return f"dial tcp {hostport}: connect: connection refused"
    if isinstance(exc, TimeoutError):
        return f"client: endpoint {endpoint} exceeded header timeout"
    return str(exc) or type(exc).__name__
