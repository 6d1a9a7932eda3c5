"""The etcd v2 client protocol, without I/O: operations → `Request`, answers → results.

Theory of operation. Every client operation is first turned into a frozen `Request` (method,
path, query, urlencoded form body, and whether re-sending it is safe). A shell (`SyncClient`,
`AsyncClient`) sends it to one endpoint and hands the status, headers and body back to a
`parse_*` function here, which returns a typed value (`KeyResult`, `Member` …) or raises the
`corral.client.errors` exception for the error code. The shells only decide *where* to send
(`EndpointPool`) and whether a failure may be retried (`may_retry`); the rules live here.

Wire rules followed (etcd v2 API reference: §2 conventions, §4 parameters, §5 operations,
§7 watches, §8 error codes, §9 other endpoints, §11 what the Go client sends):

* Keys are percent-encoded path segments below `/v2/keys`; a key without a leading `/`
  gets one. PUT/POST carry `value`, `ttl`, `dir` and `refresh` in an
  `application/x-www-form-urlencoded` body, conditions (`prevValue`, `prevIndex`,
  `prevExist`) in the query, as the Go client does; GET and DELETE use the query only
  (the server ignores DELETE bodies).
* Booleans are sent as `true`/`false` (Go `strconv.ParseBool`).
* Idempotent requests: GET (including watches and quorum reads), and the read-only
  members/stats/health/version endpoints. Everything else (PUT, POST, DELETE, member
  add/remove/update) is not, because re-sending it can change its answer (a re-sent create
  fails with 105, a re-sent delete with 100) or its effect (POST appends twice).
* Watch: `GET ?wait=true&waitIndex=N&recursive=…`. After an event the next watch starts at
  `node.modifiedIndex + 1`; an empty 200 body (server closed the watch) re-watches from the
  same index; 401 EventIndexCleared re-reads the key with a GET and watches from
  `X-Etcd-Index + 1` of that read (`WatchCursor`).
"""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from corral.client.errors import (
    ClientError,
    ClusterUnavailable,
    EtcdError,
    EventIndexCleared,
    KeyNotFound,
    MembersError,
    OutcomeUnknown,
    ProtocolError,
    RaftInternalError,
    UsageError,
    error_from_body,
)

__all__ = [
    "Failure",
    "KeyResult",
    "Member",
    "Node",
    "Request",
    "WatchCursor",
    "basic_auth",
    "keys_path",
    "may_retry",
    "parse_health",
    "parse_json",
    "parse_keys",
    "parse_machines",
    "parse_member",
    "parse_members",
    "req_add_member",
    "req_append",
    "req_delete",
    "req_get",
    "req_health",
    "req_leader",
    "req_machines",
    "req_members",
    "req_remove_member",
    "req_set",
    "req_stats",
    "req_update_member",
    "req_version",
    "req_watch",
]

FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"


class Parse(enum.Enum):
    """How a response body is to be parsed."""

    KEYS = "keys"
    JSON = "json"
    TEXT = "text"
    EMPTY = "empty"


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """An answer as the server sent it: status, headers (lower-case names) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to one etcd endpoint (the endpoint itself is chosen by the shell)."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    content_type: str | None = None
    idempotent: bool = True
    parse: Parse = Parse.KEYS
    watch: bool = False

    @property
    def target(self) -> str:
        """Path plus query string, as it goes on the request line."""
        return self.path + ("?" + urlencode(sorted(self.query)) if self.query else "")

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.content_type is not None:
            out["Content-Type"] = self.content_type
        return out


@dataclass(frozen=True, slots=True)
class Node:
    """A key or directory as the v2 API returns it."""

    key: str
    value: str | None = None
    dir: bool = False
    expiration: str | None = None
    ttl: int | None = None
    nodes: tuple[Node, ...] = ()
    created_index: int = 0
    modified_index: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Node:
        return cls(
            key=str(data.get("key", "")),
            value=data.get("value"),
            dir=bool(data.get("dir", False)),
            expiration=data.get("expiration"),
            ttl=data.get("ttl"),
            nodes=tuple(cls.from_json(n) for n in data.get("nodes") or ()),
            created_index=int(data.get("createdIndex", 0)),
            modified_index=int(data.get("modifiedIndex", 0)),
        )

    def walk(self) -> Iterable[Node]:
        """This node's descendants, depth first, in the order the server listed them."""
        for child in self.nodes:
            yield child
            yield from child.walk()


@dataclass(frozen=True, slots=True)
class KeyResult:
    """A keys API answer: the event plus the cluster's index headers."""

    action: str
    node: Node | None
    prev_node: Node | None = None
    etcd_index: int = 0
    raft_index: int = 0
    raft_term: int = 0
    cluster_id: str = ""

    @property
    def value(self) -> str | None:
        return None if self.node is None else self.node.value


@dataclass(frozen=True, slots=True)
class Member:
    """A cluster member from `/v2/members` (id is lowercase hex, as on the wire)."""

    id: str
    name: str
    peer_urls: tuple[str, ...] = ()
    client_urls: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Member:
        return cls(
            id=str(data.get("id", "")),
            name=str(data.get("name", "")),
            peer_urls=tuple(data.get("peerURLs") or ()),
            client_urls=tuple(data.get("clientURLs") or ()),
        )


# --------------------------------------------------------------------------- request builders


def _bool(v: bool) -> str:
    return "true" if v else "false"


def keys_path(key: str) -> str:
    """`/v2/keys` + the percent-encoded key (a leading `/` is added when missing)."""
    if not isinstance(key, str):
        raise UsageError(f"key must be a string, not {type(key).__name__}")
    if not key.startswith("/"):
        key = "/" + key
    return "/v2/keys" + quote(key, safe="/!$&'()*+,;=:@")


def _ttl(ttl: int | None) -> str | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
        raise UsageError(f"ttl must be a non-negative integer, not {ttl!r}")
    return str(ttl)


def _index(name: str, index: int | None) -> int | None:
    if index is None:
        return None
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise UsageError(f"{name} must be a non-negative integer, not {index!r}")
    return index


def req_get(key: str, *, recursive: bool = False, sorted: bool = False,
            quorum: bool = False) -> Request:
    """GET a key or directory (`recursive` lists the subtree, `quorum` reads through Raft)."""
    query = (("quorum", _bool(quorum)), ("recursive", _bool(recursive)),
             ("sorted", _bool(sorted)))
    return Request("GET", keys_path(key), query)


def req_watch(key: str, *, wait_index: int | None = None, recursive: bool = False) -> Request:
    """One long-poll watch: the first event at or after `wait_index` (None: the next one)."""
    query: list[tuple[str, str]] = [("wait", "true")]
    if _index("wait_index", wait_index):
        query.append(("waitIndex", str(wait_index)))
    query.append(("recursive", _bool(recursive)))
    return Request("GET", keys_path(key), tuple(query), watch=True)


def req_set(
    key: str,
    value: str | None = None,
    *,
    ttl: int | None = None,
    dir: bool = False,
    prev_value: str | None = None,
    prev_index: int | None = None,
    prev_exist: bool | None = None,
    refresh: bool = False,
    no_value_on_success: bool = False,
) -> Request:
    """Every PUT form: set, create (prev_exist=False), update (prev_exist=True), CAS, refresh."""
    if value is not None and not isinstance(value, str):
        raise UsageError(f"value must be a string, not {type(value).__name__}")
    if dir and value:
        raise UsageError("a directory cannot have a value")
    if refresh and value:
        raise UsageError("a refresh cannot change the value")
    if refresh and ttl is None:
        raise UsageError("a refresh needs a ttl")
    if prev_value == "":
        raise UsageError("prev_value cannot be empty")
    form: list[tuple[str, str]] = []
    if value is not None and not dir:
        form.append(("value", value))
    t = _ttl(ttl)
    if t is not None:
        form.append(("ttl", t))
    if refresh:
        form.append(("refresh", "true"))
    query: list[tuple[str, str]] = []
    if dir:
        query.append(("dir", "true"))
    if prev_value is not None:
        query.append(("prevValue", prev_value))
    if _index("prev_index", prev_index):
        query.append(("prevIndex", str(prev_index)))
    if prev_exist is not None:
        query.append(("prevExist", _bool(prev_exist)))
    if no_value_on_success:
        query.append(("noValueOnSuccess", "true"))
    return Request("PUT", keys_path(key), tuple(query), urlencode(sorted(form)).encode(), FORM_TYPE,
                   idempotent=False)


def req_append(key: str, value: str | None = None, *, ttl: int | None = None,
               dir: bool = False) -> Request:
    """POST: create an in-order key `<key>/<index %020d>` below the directory `key`."""
    form: list[tuple[str, str]] = []
    if value is not None and not dir:
        form.append(("value", value))
    t = _ttl(ttl)
    if t is not None:
        form.append(("ttl", t))
    if dir:
        form.append(("dir", "true"))
    return Request("POST", keys_path(key), (), urlencode(sorted(form)).encode(), FORM_TYPE,
                   idempotent=False)


def req_delete(key: str, *, recursive: bool = False, dir: bool = False,
               prev_value: str | None = None, prev_index: int | None = None) -> Request:
    """DELETE (plain, dir, recursive) or compare-and-delete (prev_value / prev_index)."""
    if prev_value == "":
        raise UsageError("prev_value cannot be empty")
    query: list[tuple[str, str]] = []
    if dir:
        query.append(("dir", "true"))
    if recursive:
        query.append(("recursive", "true"))
    if prev_value is not None:
        query.append(("prevValue", prev_value))
    if _index("prev_index", prev_index):
        query.append(("prevIndex", str(prev_index)))
    return Request("DELETE", keys_path(key), tuple(query), idempotent=False)


def basic_auth(user: str, password: str) -> dict[str, str]:
    """The `Authorization` header of v2 auth (HTTP basic)."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def req_members() -> Request:
    return Request("GET", "/v2/members", parse=Parse.JSON)


def req_leader() -> Request:
    return Request("GET", "/v2/members/leader", parse=Parse.JSON)


def req_add_member(peer_urls: list[str]) -> Request:
    body = json.dumps({"peerURLs": list(peer_urls)}).encode()
    return Request("POST", "/v2/members", (), body, JSON_TYPE, idempotent=False,
                   parse=Parse.JSON)


def _member_id(member_id: str) -> str:
    try:
        int(member_id, 16)
    except ValueError:
        raise UsageError(f"member id must be hexadecimal, not {member_id!r}") from None
    return member_id


def req_remove_member(member_id: str) -> Request:
    return Request("DELETE", f"/v2/members/{_member_id(member_id)}", idempotent=False,
                   parse=Parse.EMPTY)


def req_update_member(member_id: str, peer_urls: list[str]) -> Request:
    body = json.dumps({"peerURLs": list(peer_urls)}).encode()
    return Request("PUT", f"/v2/members/{_member_id(member_id)}", (), body, JSON_TYPE,
                   idempotent=False, parse=Parse.EMPTY)


def req_machines() -> Request:
    return Request("GET", "/v2/machines", parse=Parse.TEXT)


def req_version() -> Request:
    return Request("GET", "/version", parse=Parse.JSON)


def req_health() -> Request:
    return Request("GET", "/health", parse=Parse.JSON)


def req_stats(which: str) -> Request:
    if which not in ("self", "leader", "store"):
        raise UsageError(f"stats must be self, leader or store, not {which!r}")
    return Request("GET", f"/v2/stats/{which}", parse=Parse.JSON)


# --------------------------------------------------------------------------- response parsing


def _header(headers: Mapping[str, str], name: str) -> str:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return ""


def _int_header(headers: Mapping[str, str], name: str) -> int:
    raw = _header(headers, name)
    try:
        return int(raw) if raw else 0
    except ValueError:
        raise ProtocolError(f"header {name} is not an integer: {raw!r}") from None


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"answer is not JSON: {body[:200]!r}") from exc


def parse_keys(status: int, headers: Mapping[str, str], body: bytes) -> KeyResult:
    """A keys API answer → `KeyResult`, or raise the `EtcdError` for its errorCode."""
    if status >= 400 or (status >= 300 and body.strip().startswith(b"{")):
        data = _decode(body) if body.strip() else {}
        if isinstance(data, dict) and "errorCode" in data:
            raise error_from_body(data)
        if status == 404:
            # A 404 without an etcd body: the v2 API is not enabled on that server.
            raise ProtocolError(f"404 without an etcd error body: {body[:200]!r}")
        raise ProtocolError(f"HTTP {status}: {body[:200]!r}")
    data = _decode(body)
    if not isinstance(data, dict) or "action" not in data:
        raise ProtocolError(f"answer has no action: {body[:200]!r}")
    node = data.get("node")
    prev = data.get("prevNode")
    return KeyResult(
        action=str(data["action"]),
        node=Node.from_json(node) if isinstance(node, dict) else None,
        prev_node=Node.from_json(prev) if isinstance(prev, dict) else None,
        etcd_index=_int_header(headers, "x-etcd-index"),
        raft_index=_int_header(headers, "x-raft-index"),
        raft_term=_int_header(headers, "x-raft-term"),
        cluster_id=_header(headers, "x-etcd-cluster-id"),
    )


def parse_json(status: int, headers: Mapping[str, str], body: bytes) -> Any:
    """A members/stats/version answer → decoded JSON, or `MembersError` with its message."""
    if status >= 400:
        data = _decode(body) if body.strip().startswith(b"{") else {}
        message = data.get("message") if isinstance(data, dict) else None
        raise MembersError(status, str(message or body.decode(errors="replace").strip()))
    if status == 204 or not body.strip():
        return None
    return _decode(body)


def parse_members(data: Any) -> list[Member]:
    if not isinstance(data, dict) or not isinstance(data.get("members"), list):
        raise ProtocolError(f"not a member list: {data!r}")
    return [Member.from_json(m) for m in data["members"]]


def parse_member(data: Any) -> Member:
    if not isinstance(data, dict):
        raise ProtocolError(f"not a member: {data!r}")
    return Member.from_json(data)


def parse_machines(body: bytes) -> list[str]:
    return [m.strip() for m in body.decode().split(",") if m.strip()]


def parse_health(status: int, body: bytes) -> bool:
    """`/health` → healthy? Accepts `"true"` and `true`, as etcdctl does."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return status == 200 and isinstance(data, dict) and data.get("health") in ("true", True)


# --------------------------------------------------------------------------- retry policy


class Failure(enum.Enum):
    """Where a transport failure happened, which decides whether a retry is safe."""

    NOT_SENT = "not sent"  # connect refused/timed out: the server never saw the request
    SENT = "sent"  # broke or timed out after the request was written
    SERVER = "server"  # the server answered 5xx (no leader, proposal timeout …)


def may_retry(request: Request, failure: Failure) -> bool:
    """May `request` be sent to another endpoint after `failure`?

    Idempotent requests always may. Others only when the server cannot have seen them.
    """
    return request.idempotent or failure is Failure.NOT_SENT


# --------------------------------------------------------------------------- watches


@dataclass
class WatchCursor:
    """Where a watch stands: decides each next request and absorbs each answer.

    `next_index` None means "from now on". After an event the cursor moves to
    `modifiedIndex + 1`; after EventIndexCleared the caller must re-read (`resync_request`)
    and hand the answer to `resynced`, which restarts the watch after that read.
    """

    key: str
    recursive: bool = False
    next_index: int | None = None
    needs_resync: bool = field(default=False)

    def request(self) -> Request:
        if self.needs_resync:
            return self.resync_request()
        return req_watch(self.key, wait_index=self.next_index, recursive=self.recursive)

    def resync_request(self) -> Request:
        return req_get(self.key, recursive=self.recursive, quorum=True)

    def on_event(self, result: KeyResult) -> None:
        if result.node is not None:
            self.next_index = result.node.modified_index + 1

    def on_error(self, error: EtcdError) -> None:
        """EventIndexCleared → resync; any other error is the caller's."""
        if not isinstance(error, EventIndexCleared):
            raise error
        self.needs_resync = True

    def resynced(self, result: KeyResult | KeyNotFound) -> KeyResult:
        """Absorb the re-read; returns it as the value to hand to the watcher's user.

        A missing key yields a `get` result whose node is None.
        """
        self.needs_resync = False
        if isinstance(result, KeyNotFound):
            self.next_index = result.index + 1
            return KeyResult(action="get", node=None, etcd_index=result.index)
        self.next_index = result.etcd_index + 1
        return result


class TransportFailure(Exception):
    """An exchange that got no answer; `failure` says whether the server may have seen it."""

    def __init__(self, failure: Failure, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.failure = failure
        self.exc = exc


def server_error(request: Request, answer: RawAnswer) -> ClientError:
    """The exception a 5xx answer stands for."""
    try:
        if request.parse is Parse.KEYS:
            parse_keys(answer.status, answer.headers, answer.body)
        else:
            parse_json(answer.status, answer.headers, answer.body)
    except ClientError as exc:
        return exc
    return MembersError(answer.status, answer.body.decode(errors="replace").strip())


@dataclass
class Failover:
    """One request's walk over the endpoints, shared by the sync and asyncio clients: what
    each outcome means (try the next endpoint, or raise), never re-sending a request the
    server may have applied (`may_retry`)."""

    request: Request
    errors: list[tuple[str, BaseException]] = field(default_factory=list)
    answered: ClientError | None = None

    def transport_failed(self, endpoint: str, tf: TransportFailure) -> None:
        if not may_retry(self.request, tf.failure):
            raise OutcomeUnknown(endpoint, self.request.method, self.request.path,
                                 str(tf.exc) or type(tf.exc).__name__) from tf.exc
        self.errors.append((endpoint, tf.exc))

    def accepts(self, endpoint: str, answer: RawAnswer) -> bool:
        """True if `answer` is the request's answer; a 5xx is raised or left for the next
        endpoint to answer."""
        if answer.status < 500:
            return True
        failure = server_error(self.request, answer)
        if not may_retry(self.request, Failure.SERVER):
            if isinstance(failure, RaftInternalError):
                raise OutcomeUnknown(endpoint, self.request.method, self.request.path,
                                     str(failure)) from failure
            raise failure
        self.errors.append((endpoint, failure))
        self.answered = failure
        return False

    def exhausted(self) -> ClientError:
        """What to raise when every endpoint was tried."""
        return self.answered if self.answered is not None else ClusterUnavailable(self.errors)
