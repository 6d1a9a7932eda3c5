"""Node and Event value types of the v2 keyspace, and their JSON rendering.

A `Node` is an immutable snapshot of a tree node as the API shows it (etcd's `NodeExtern`);
an `Event` is one answer (etcd's `Event`: action, node, prevNode). Both are plain values: the
keyspace builds them when it applies a command or answers a get, and they never change after.

Rendering (`render_event`) follows Go's `encoding/json` as etcd 3.4.23 (Go 1.19) uses it,
because clients and the differential tests compare bytes:

* compact, fields in etcd's order, one object followed by ``\\n`` (``json.Encoder``);
* every node field is ``omitempty``: no ``key`` on the root, ``value`` only when the node has
  one (``""`` included), ``dir`` only when true, ``nodes`` only when non-empty, indexes only
  when non-zero; an event's ``prevNode`` only when there is one;
* ``expiration`` is RFC 3339 in UTC with nanoseconds and trailing zeros trimmed (Go's
  ``RFC3339Nano``); ``ttl`` is ``ceil((expire_at - now) / 1s)`` in Go's integer arithmetic
  (truncation toward zero once negative) and omitted when 0;
* strings escape ``<`` ``>`` ``&`` U+2028 U+2029 as ``\\u00XX``/``\\u20XX`` (Go's HTML-safe
  default), control characters other than ``\\n \\r \\t`` as ``\\u00XX``, and leave other
  non-ASCII as UTF-8; a lone surrogate (an undecodable byte) becomes U+FFFD as in Go.

Which `now` gives the ttl: etcd computes a node's ttl when the event is *made*, so a write's
answer and every watch notification of it (live or from history) show the ttl as of apply
time. Events made by `Keyspace.apply` therefore carry their command's ``now`` and render
with it (whatever ``now`` is passed), which makes their bytes constant: they are rendered once
and cached on the event, so a write watched by 10,000 clients is serialised once. Events of
`Keyspace.get` carry the ``now`` given to `get` if any, else use the ``now`` passed here
(etcd computes a get's ttl when the get runs).
"""

from __future__ import annotations

import enum
import json.encoder
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["Action", "Event", "Node", "format_expiration", "render_event", "ttl_seconds"]

NANOS = 1_000_000_000


class Action(enum.StrEnum):
    """The `action` of an event (etcd v2store `event.go`)."""

    GET = "get"
    CREATE = "create"
    SET = "set"
    UPDATE = "update"
    DELETE = "delete"
    COMPARE_AND_SWAP = "compareAndSwap"
    COMPARE_AND_DELETE = "compareAndDelete"
    EXPIRE = "expire"


@dataclass(frozen=True, slots=True)
class Node:
    """A node as shown by the API.

    `key` is the user key ("/" for the root, which renders without a key). `value` is None for
    dirs and for the `node` of delete/compareAndDelete/expire events. `nodes` is None when the
    children are not listed. `expire_at` is nanoseconds since the epoch, None if permanent.
    """

    key: str
    value: str | None = None
    dir: bool = False
    expire_at: int | None = None
    nodes: tuple[Node, ...] | None = None
    modified_index: int = 0
    created_index: int = 0
    # The node's JSON once rendered (only for nodes without a TTL and without listed children,
    # whose bytes never change); a keyspace reuses Node objects across gets, so listings of
    # unchanged nodes are rendered once.
    _frag: list[str] = field(default_factory=list, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Event:
    """One keyspace event: the answer to a request, a history entry, a watch notification.

    `etcd_index` is the store index when the event was made (for a get: the current index).
    `refresh` marks TTL refreshes (in history, never notified, skipped by scans). `internal`
    marks writes to etcd's hidden namespace (history only, never matched by a user watch).
    `now` is the clock the event's ttl is computed with (see the module docstring).
    `removed` lists the paths of the nodes a delete/expire removed (the key itself for a file;
    the dir and every descendant for a dir), so watchers on them can be told; it is only kept
    for freshly applied events (not in snapshots) and takes no part in equality.
    """

    action: Action
    node: Node
    prev_node: Node | None = None
    etcd_index: int = 0
    refresh: bool = False
    internal: bool = False
    now: int | None = None
    removed: tuple[str, ...] = field(default=(), compare=False, repr=False)
    _json: list[bytes] = field(default_factory=list, compare=False, repr=False)

    @property
    def index(self) -> int:
        """The index the event happened at (etcd's `Event.Index()`: node.modifiedIndex)."""
        return self.node.modified_index

    @property
    def key(self) -> str:
        return self.node.key


def ttl_seconds(expire_at: int, now: int) -> int:
    """Seconds left as etcd shows them: ceil for a future deadline, truncation once past."""
    diff = expire_at - now
    if diff >= 0:
        return -(-diff // NANOS)
    return -((-diff) // NANOS)


def _civil_from_days(days: int) -> tuple[int, int, int]:
    # Proleptic Gregorian date from days since 1970-01-01 (H. Hinnant's algorithm): works for
    # any year, so absurd TTLs cannot crash rendering the way datetime would.
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m, d


def format_expiration(expire_at: int) -> str:
    """RFC 3339 UTC with nanoseconds, trailing zeros trimmed (Go `time.RFC3339Nano`)."""
    secs, nanos = divmod(expire_at, NANOS)
    days, rem = divmod(secs, 86400)
    y, mo, d = _civil_from_days(days)
    hh, rem = divmod(rem, 3600)
    mm, ss = divmod(rem, 60)
    frac = f".{nanos:09d}".rstrip("0") if nanos else ""
    return f"{y:04d}-{mo:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}{frac}Z"


_encode_basestring = json.encoder.encode_basestring  # C-accelerated when available
_GO_SPECIAL = re.compile("[<>&\u2028\u2029\x08\x0c\ud800-\udfff]")
_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
    "\x08": "\\u0008",
    "\x0c": "\\u000c",
}


def _q(s: str) -> str:
    """A JSON string literal as Go's encoder writes it."""
    if _GO_SPECIAL.search(s) is None:
        return _encode_basestring(s)
    out: list[str] = []
    last = 0
    for m in _GO_SPECIAL.finditer(s):
        out.append(_encode_basestring(s[last : m.start()])[1:-1])
        out.append(_GO_ESCAPES.get(m.group(), "\ufffd"))
        last = m.end()
    out.append(_encode_basestring(s[last:])[1:-1])
    return '"' + "".join(out) + '"'


def _fields(node: Node, ref: int | None) -> tuple[list[str], list[str]]:
    """The node's JSON fields before and after `nodes`."""
    pre: list[str] = []
    if node.key != "/":
        pre.append('"key":' + _q(node.key))
    if node.value is not None:
        pre.append('"value":' + _q(node.value))
    if node.dir:
        pre.append('"dir":true')
    if node.expire_at is not None:
        pre.append('"expiration":"' + format_expiration(node.expire_at) + '"')
        if ref is None:
            raise ValueError("rendering a node with a TTL needs `now`")
        ttl = ttl_seconds(node.expire_at, ref)
        if ttl:
            pre.append('"ttl":' + str(ttl))
    post: list[str] = []
    if node.modified_index:
        post.append('"modifiedIndex":' + str(node.modified_index))
    if node.created_index:
        post.append('"createdIndex":' + str(node.created_index))
    return pre, post


def _leaf(node: Node, ref: int | None) -> str:
    """A node rendered without children; cached when it has no TTL (then it never changes)."""
    if node.expire_at is None:
        cache = node._frag
        if cache:
            return cache[0]
        pre, post = _fields(node, ref)
        text = "{" + ",".join(pre + post) + "}"
        cache.append(text)
        return text
    pre, post = _fields(node, ref)
    return "{" + ",".join(pre + post) + "}"


def _write_node(root: Node, ref: int | None, out: list[str]) -> None:
    # An explicit stack instead of recursion: trees can be deeper than Python's recursion limit.
    stack: list[tuple[Iterator[Node], str]] = []
    node: Node | None = root
    while True:
        if node is not None:
            if node.nodes:
                pre, post = _fields(node, ref)
                out.append("{" + "".join(f + "," for f in pre) + '"nodes":[')
                it = iter(node.nodes)
                stack.append((it, "]" + "".join("," + f for f in post) + "}"))
                node = next(it)
                continue
            out.append(_leaf(node, ref))
        node = None
        while stack:
            it, closing = stack[-1]
            nxt = next(it, None)
            if nxt is not None:
                out.append(",")
                node = nxt
                break
            stack.pop()
            out.append(closing)
        if node is None:
            return


def _render(event: Event, ref: int | None) -> bytes:
    out = ['{"action":"', event.action.value, '","node":']
    _write_node(event.node, ref, out)
    if event.prev_node is not None:
        out.append(',"prevNode":')
        _write_node(event.prev_node, ref, out)
    out.append("}\n")
    return "".join(out).encode("utf-8")


def render_event(event: Event, now: int | None = None, *, no_value: bool = False) -> bytes:
    """The event as etcd writes it: compact JSON + "\\n".

    `now` (ns since the epoch) computes `ttl` for events that carry no clock of their own
    (gets made without one); events from `apply` use their apply-time clock, as etcd does.
    `no_value=True` gives the `noValueOnSuccess` form (`{"action":"set"}`).
    """
    if no_value:
        return b'{"action":"' + event.action.value.encode() + b'"}\n'
    if event.now is None:
        return _render(event, now)
    cache = event._json
    if cache:
        return cache[0]
    data = _render(event, event.now)
    cache.append(data)
    return data
