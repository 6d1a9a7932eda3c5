"""`--discovery URL`: etcd 3.4's v2 discovery protocol, served by any etcd v2 keyspace.

Theory of operation (etcd-io/etcd v3.4 `etcdserver/api/v2discovery/discovery.go`,
`etcdmain/etcd.go`, `embed/config.go` PeerURLsMapAndToken):

* The URL is ``<scheme>://<host>/<token path>``; its path is the token, read through the v2
  keys API with no prefix (so ``http://h:2379/v2/keys/discovery/abc`` works against any
  etcd or corral member). ``<token>/_config/size`` holds the cluster size.
* With discovery, the cluster token is the discovery URL itself, and each member starts from
  a one-member map of its own name and advertised peer URLs; its id is derived from those, so
  every member computes the same ids for the cluster that comes out.
* Joining: check the size and the registered nodes; create ``<token>/<member id hex>`` with
  ``name=peerURL,…`` (``prevExist=false``; exists → "found duplicate id"); wait for that
  create; check again; then watch the token recursively until `size` nodes are registered.
  The nodes, ordered by creation index, are the cluster; a member that is not among the
  first `size` gets "cluster is full" (and, with ``--discovery-fallback proxy``, becomes a
  proxy of the cluster the first `size` nodes describe: `get_cluster`).
* Errors keep etcd's wording: "discovery: size key is bad", "discovery: bad discovery
  endpoint" (the answer is not an etcd answer), "discovery: cluster is full", "discovery:
  found duplicate name", an etcd error from the server as ``100: Key not found (/t) [7]``.
  An unreachable server, or a 500/503, is retried with etcd's back-off (2 s, 4 s … 256 s)
  and each attempt logged ("cluster status check: error connecting to …, retrying in 2s");
  etcd retries for ever, and so does corral. Unlike etcd (which retries "unsupported protocol
  scheme" for ever), a URL that is not ``http(s)://host/…`` is refused at once.

Pure helpers first (URL, node selection, the result string); `Discovery` is the asyncio
shell.
"""

from __future__ import annotations

import asyncio
import enum
import json
import posixpath
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from corral.kv.capnslog import log as _log

__all__ = [
    "Discovery",
    "DiscoveryError",
    "Failure",
    "Node",
    "check_cluster",
    "nodes_to_cluster",
    "parse_discovery_url",
    "parse_urls_map",
    "urls_map_string",
]

MAX_EXPONENTIAL_RETRIES = 8
REQUEST_TIMEOUT = 5.0  # the Go client's DefaultRequestTimeout
DIAL_TIMEOUT = 30.0  # discovery's transport


class Failure(enum.Enum):
    """etcd's discovery errors (their text is etcd's)."""

    INVALID_URL = "discovery: invalid URL"
    BAD_SIZE_KEY = "discovery: size key is bad"
    SIZE_NOT_FOUND = "discovery: size key not found"
    DUPLICATE_ID = "discovery: found duplicate id"
    DUPLICATE_NAME = "discovery: found duplicate name"
    FULL_CLUSTER = "discovery: cluster is full"
    BAD_ENDPOINT = "discovery: bad discovery endpoint"
    REMOTE = ""  # an etcd error answer, shown as the Go client shows it
    OTHER = "-"


class DiscoveryError(Exception):
    """Discovery failed: `failure` says which way; str() is etcd's message."""

    def __init__(self, failure: Failure, detail: str = "", code: int = 0) -> None:
        self.failure = failure
        self.code = code  # the etcd errorCode of a REMOTE failure
        self.detail = detail or failure.value
        super().__init__(self.detail)


@dataclass(frozen=True, slots=True)
class Node:
    key: str
    value: str
    created_index: int


def parse_discovery_url(durl: str) -> tuple[str, str]:
    """(base URL, token path) of a discovery URL; DiscoveryError if it cannot be one."""
    parts = urllib.parse.urlsplit(durl)
    if parts.scheme not in ("http", "https") or not parts.netloc or not parts.path.strip("/"):
        raise DiscoveryError(
            Failure.INVALID_URL,
            f"discovery: invalid discovery URL {durl!r} (want http://host:port/path/token)",
        )
    return f"{parts.scheme}://{parts.netloc}", parts.path


def urls_map_string(name: str, peer_urls: tuple[str, ...] | list[str]) -> str:
    """Go's `types.URLsMap.String()` for one name: sorted ``name=url`` pairs."""
    return ",".join(sorted(f"{name}={u}" for u in peer_urls))


def parse_urls_map(text: str) -> dict[str, list[str]]:
    """Go's `types.NewURLsMap`: ``a=u1,a=u2,b=u3``; ValueError on a malformed pair."""
    out: dict[str, list[str]] = {}
    for item in text.split(","):
        name, eq, url = item.strip().partition("=")
        parts = urllib.parse.urlsplit(url)
        if not eq or parts.scheme not in ("http", "https", "unix", "unixs") or not parts.netloc:
            raise ValueError(f"invalid URL pair {item!r}")
        out.setdefault(name, []).append(url)
    return out


def check_cluster(nodes: list[Node], size: int, self_base: str) -> tuple[list[Node], bool]:
    """The registered nodes in creation order, and whether the cluster is full for `self`.

    etcd's rule: walking the nodes in creation order, the cluster is full for this member
    if `size` nodes come before it (or it is not registered and `size` nodes are).
    """
    ordered = sorted(nodes, key=lambda n: n.created_index)
    for i, n in enumerate(ordered):
        if posixpath.basename(n.key) == self_base:
            break
        if i >= size - 1:
            return ordered[:size], True
    return ordered, False


def nodes_to_cluster(values: list[str], size: int) -> str:
    """The initial-cluster string the registered values make; etcd's checks."""
    text = ",".join(values)
    try:
        urls = parse_urls_map(text)
    except ValueError:
        raise DiscoveryError(Failure.INVALID_URL) from None
    if len(urls) != size:
        raise DiscoveryError(Failure.DUPLICATE_NAME)
    return text


# ------------------------------------------------------------------------------ the shell


class _Unreachable(Exception):
    """The Go client's ClusterError: no endpoint answered (retried with back-off)."""


class Discovery:
    """One discovery session (etcd's `discovery` struct)."""

    def __init__(
        self,
        durl: str,
        member_id: int = 0,
        proxy: str = "",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.durl = durl
        self.base, self.token = parse_discovery_url(durl)
        self.member_id = member_id
        self.proxy = _proxy_url(proxy)
        self.retries = 0
        self.sleep = sleep
        self._session: aiohttp.ClientSession | None = None

    def self_key(self) -> str:
        return posixpath.join("/", self.token.strip("/"), f"{self.member_id:x}")

    async def __aenter__(self) -> Discovery:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=DIAL_TIMEOUT)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    # -- the v2 keys requests the Go client sends --------------------------------------------
    def _url(self, key: str) -> str:
        path = posixpath.normpath("/" + key.strip("/"))
        return self.base + urllib.parse.quote(path, safe="/")

    async def _call(
        self,
        method: str,
        key: str,
        query: dict[str, str],
        form: dict[str, str] | None = None,
        limit: float | None = REQUEST_TIMEOUT,
    ) -> tuple[dict[str, Any], int]:
        """One request; (answer, X-Etcd-Index). Raises _Unreachable or DiscoveryError."""
        assert self._session is not None
        kwargs: dict[str, Any] = {"params": query, "proxy": self.proxy or None}
        if form is not None:
            kwargs["data"] = form
        if limit is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=limit, sock_connect=DIAL_TIMEOUT)
        while True:
            try:
                async with self._session.request(method, self._url(key), **kwargs) as r:
                    body = await r.read()
                    status = r.status
                    index = r.headers.get("X-Etcd-Index", "0")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise _Unreachable(str(exc) or type(exc).__name__) from None
            if status in (500, 503):
                raise _Unreachable(f"server answered {status}")
            if not body and query.get("wait") == "true":
                continue  # the Go watcher re-polls an empty answer
            try:
                doc = json.loads(body)
                if not isinstance(doc, dict):
                    raise ValueError
            except ValueError:
                raise DiscoveryError(
                    Failure.BAD_ENDPOINT,
                    "client: response is invalid json. The endpoint is probably not valid "
                    "etcd cluster endpoint.",
                ) from None
            if status not in (200, 201):
                if "errorCode" not in doc:
                    raise DiscoveryError(Failure.BAD_ENDPOINT)
                code = doc.get("errorCode")
                text = (
                    f"{code}: {doc.get('message')} ({doc.get('cause', '')}) [{doc.get('index', 0)}]"
                )
                raise DiscoveryError(Failure.REMOTE, text, code if isinstance(code, int) else 0)
            try:
                idx = int(index)
            except ValueError:
                idx = 0
            return doc, idx

    async def _backoff(self, step: str, why: str) -> None:
        self.retries += 1
        wait = 1 << min(self.retries, MAX_EXPONENTIAL_RETRIES)
        _log("E", f"discovery: error #0: {why}")
        _log("I", f"discovery: {step}: error connecting to {self.base}, retrying in {wait}s")
        await self.sleep(wait)

    # -- etcd's steps ------------------------------------------------------------------------
    async def check_cluster(self) -> tuple[list[Node], int, int, bool]:
        """(nodes, size, index, full); retries while the server is unreachable."""
        while True:
            try:
                return await self._check_once()
            except _Unreachable as exc:
                await self._backoff("cluster status check", str(exc))

    async def _check_once(self) -> tuple[list[Node], int, int, bool]:
        config = posixpath.join(self.token, "_config")
        try:
            doc, _ = await self._call("GET", config + "/size", _GET)
        except DiscoveryError as err:
            if err.failure is Failure.BAD_ENDPOINT:
                raise DiscoveryError(Failure.BAD_ENDPOINT) from None
            raise
        try:
            size = int(str(doc.get("node", {}).get("value", "")), 10)
            if size < 0:
                raise ValueError
        except (ValueError, AttributeError):
            raise DiscoveryError(Failure.BAD_SIZE_KEY) from None
        doc, index = await self._call("GET", self.token, _GET)
        nodes = [
            Node(str(n.get("key", "")), str(n.get("value", "")), int(n.get("createdIndex", 0)))
            for n in (doc.get("node", {}).get("nodes") or [])
            if posixpath.basename(str(n.get("key", ""))) != "_config"
        ]
        ordered, full = check_cluster(nodes, size, posixpath.basename(self.self_key()))
        return ordered, size, index, full

    async def _create_self(self, config: str) -> None:
        try:
            doc, _ = await self._call(
                "PUT", self.self_key(), {"prevExist": "false"}, {"value": config}
            )
        except DiscoveryError as err:
            if err.code == 105:
                raise DiscoveryError(Failure.DUPLICATE_ID) from None
            raise
        except _Unreachable as exc:
            raise DiscoveryError(Failure.OTHER, str(exc)) from None
        created = int(doc.get("node", {}).get("createdIndex", 0))
        try:
            await self._call(
                "GET", self.self_key(), {"wait": "true", "waitIndex": str(created)}, limit=None
            )
        except _Unreachable as exc:
            raise DiscoveryError(Failure.OTHER, str(exc)) from None

    async def _wait_nodes(self, nodes: list[Node], size: int, index: int) -> list[Node]:
        while True:
            nodes = nodes[:size]
            me = posixpath.basename(self.self_key())
            for n in nodes:
                if posixpath.basename(n.key) == me:
                    _log("N", f"discovery: found self {me} in the cluster")
                else:
                    _log("N", f"discovery: found peer {posixpath.basename(n.key)} in the cluster")
            all_nodes = list(nodes)
            wait_index = index + 1
            try:
                while len(all_nodes) < size:
                    _log(
                        "N",
                        f"discovery: found {len(all_nodes)} peer(s), waiting for "
                        f"{size - len(all_nodes)} more",
                    )
                    doc, _ = await self._call(
                        "GET",
                        self.token,
                        {"wait": "true", "waitIndex": str(wait_index), "recursive": "true"},
                        limit=None,
                    )
                    n = doc.get("node", {})
                    node = Node(
                        str(n.get("key", "")),
                        str(n.get("value", "")),
                        int(n.get("createdIndex", 0)),
                    )
                    wait_index = int(n.get("modifiedIndex", wait_index)) + 1
                    _log(
                        "N", f"discovery: found peer {posixpath.basename(node.key)} in the cluster"
                    )
                    all_nodes.append(node)
            except _Unreachable as exc:
                await self._backoff("waiting for other nodes", str(exc))
                nodes, size, index, full = await self.check_cluster()
                if full:
                    raise DiscoveryError(Failure.FULL_CLUSTER) from None
                continue
            _log("N", f"discovery: found {len(all_nodes)} needed peer(s)")
            return all_nodes

    async def join_cluster(self, config: str) -> str:
        """Register this member (`config` = its ``name=peerURL`` pairs) and return the
        cluster's initial-cluster string once `size` members are registered."""
        _, _, _, full = await self.check_cluster()
        if full:
            raise DiscoveryError(Failure.FULL_CLUSTER)
        await self._create_self(config)
        nodes, size, index, full = await self.check_cluster()
        if full:
            raise DiscoveryError(Failure.FULL_CLUSTER)
        found = await self._wait_nodes(nodes, size, index)
        return nodes_to_cluster([n.value for n in found], size)

    async def get_cluster(self) -> str:
        """The cluster the registered members describe (a proxy's view); waits for `size`."""
        nodes, size, index, full = await self.check_cluster()
        if full:
            return nodes_to_cluster([n.value for n in nodes], size)
        found = await self._wait_nodes(nodes, size, index)
        return nodes_to_cluster([n.value for n in found], size)


_GET = {"quorum": "false", "recursive": "false", "sorted": "false"}


def _proxy_url(proxy: str) -> str:
    """`--discovery-proxy`: an http(s) URL, or a bare host:port taken as http (etcd)."""
    if not proxy:
        return ""
    if urllib.parse.urlsplit(proxy).scheme.startswith("http"):
        return proxy
    return "http://" + proxy
