"""Following a registry subtree: one read, then a recursive watch (asyncio shell).

The shell around :class:`corral.fleet.view.TreeView`: a recursive ``GET`` of the subtree
fills the view at the answer's ``X-Etcd-Index``; a recursive watch from that index + 1
applies every later event (v2 API: ``?wait=true&recursive=true&waitIndex=N``). When the
watch falls out of the store's event history (401 ``EventIndexCleared``, 1000 events in
etcd v2) the client re-reads the subtree and the view is replaced. A watch broken by a
transport error resumes from the view's index + 1: nothing is lost while the history still
holds it. Each answer (the read, every event, every re-read) counts as one KV request.

``lag_limit`` (optional) coalesces bursts: an event delivered from the history when the store
is already more than ``lag_limit`` indexes ahead means many more are queued behind it, one
request each; one re-read of the subtree is cheaper, so the follower re-reads and watches on
from there, no sooner than ``reread_gap`` seconds after its previous read (a long burst is
absorbed by one read per gap). ``None`` follows every event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from corral.client import ClientError, ClusterUnavailable, EventIndexCleared, KeyNotFound, Node
from corral.client import protocol as p
from corral.client.protocol import KeyResult
from corral.fleet.store import KV
from corral.fleet.view import TreeView, WatchEvent

__all__ = ["Follower", "to_event"]

log = logging.getLogger("corral.fleet")


def leaves(node: Node | None) -> Iterator[tuple[str, str]]:
    """(key, value) of every leaf under a client node (what :func:`view.flatten` gives for
    the JSON shape, without building it)."""
    stack = [node] if node is not None else []
    while stack:
        n = stack.pop()
        if n.dir:
            stack.extend(n.nodes)
        else:
            yield n.key, n.value or ""


def raw_leaves(node: Mapping[str, Any] | None) -> Iterator[tuple[str, str]]:
    """(key, value) of every leaf of a v2 JSON node tree, read straight from the JSON."""
    stack = [node] if node else []
    while stack:
        n = stack.pop()
        if n.get("dir"):
            stack.extend(n.get("nodes") or ())
        else:
            yield str(n.get("key", "")), str(n.get("value") or "")


def to_event(r: KeyResult) -> WatchEvent | None:
    if r.node is None:
        return None
    return WatchEvent(r.action, r.node.key, r.node.modified_index, r.node.value, r.node.dir)


class Follower:
    """Keeps ``view`` equal to the store's subtree at ``view.root`` (eventually)."""

    def __init__(
        self,
        kv: KV,
        view: TreeView,
        on_change: Callable[[WatchEvent | None, set[str]], None] | None = None,
        *,
        lag_limit: int | None = None,
        reread_gap: float = 1.0,
        retry: float = 1.0,
    ) -> None:
        self.kv = kv
        self.view = view
        # called after each applied event (with its group) and after each re-read (None and
        # the groups whose content changed)
        self.on_change = on_change or (lambda ev, groups: None)
        self.lag_limit = lag_limit
        self.reread_gap = reread_gap
        self.retry = retry
        self.ready = asyncio.Event()
        self.events = 0  # watch events received
        self.rereads = 0  # reads after the first (history cleared, lag)
        self._last_read = float("-inf")
        self._moved = asyncio.Condition()

    async def read(self) -> None:
        """A fresh recursive read replaces the view (empty if the subtree is absent).

        The answer is decoded straight from its JSON into leaves: a re-read of a large
        tree is the costliest thing a follower does, and building client nodes for it
        would more than double that."""
        self.kv.requests += 1
        client = self.kv.client
        a = await client.send_raw(p.req_get(self.view.root, recursive=True))
        if a.status == 200:
            try:
                data = json.loads(a.body)
                index = int(a.headers.get("x-etcd-index", "0"))
            except ValueError:
                raise OSError(f"malformed answer to a read of {self.view.root}") from None
            changed = self.view.reset(raw_leaves(data.get("node")), index)
        else:
            try:
                p.parse_keys(a.status, a.headers, a.body)  # raises the etcd error
            except KeyNotFound as exc:
                changed = self.view.reset((), exc.index)
            else:
                raise OSError(f"unexpected answer {a.status} to a read of {self.view.root}")
        self._last_read = time.monotonic()
        if self.ready.is_set():
            self.rereads += 1
        await self._changed(None, changed)

    async def _changed(self, ev: WatchEvent | None, groups: set[str]) -> None:
        self.on_change(ev, groups)
        async with self._moved:
            self._moved.notify_all()

    async def caught_up(self, index: int, within: float) -> bool:
        """Waits until the view reflects etcd index ``index`` (read-your-writes)."""
        if self.view.index >= index:
            return True
        try:
            async with asyncio.timeout(within), self._moved:
                await self._moved.wait_for(lambda: self.view.index >= index)
        except TimeoutError:
            return False
        return True

    async def run(self, start_index: int | None = None) -> None:
        """Forever: read (unless ``start_index`` is given), then watch and apply.

        ``start_index`` starts the watch there with the view as it is (tests use it to
        start from an index the history no longer holds)."""
        if start_index is not None:
            self.view.index = start_index - 1
            self.ready.set()
        while True:
            try:
                if not self.ready.is_set():
                    await self.read()
                    self.ready.set()
                await self._watch()
            except (ClientError, OSError) as exc:
                log.info("watch %s: %s; resuming", self.view.root, exc)
                await asyncio.sleep(self.retry)

    async def _watch(self) -> None:
        """Long polls from the view's index + 1 (the client's ``watch`` loop, with the
        re-read on ``EventIndexCleared`` done by :meth:`read`)."""
        client = self.kv.client
        while True:
            request = p.req_watch(self.view.root, wait_index=self.view.index + 1, recursive=True)
            try:
                a = await client.send_raw(request)
            except ClusterUnavailable as exc:
                # a quiet subtree times the long poll out everywhere: poll again
                if exc.errors and all(isinstance(e, TimeoutError) for _, e in exc.errors):
                    continue
                raise
            if a.status == 200 and not a.body.strip():
                continue
            try:
                r = p.parse_keys(a.status, a.headers, a.body)
            except EventIndexCleared:
                await self.read()  # fell out of the history: read again, watch on from there
                continue
            self.kv.requests += 1
            self.events += 1
            ev = to_event(r)
            if ev is None:
                continue
            if self.view.apply(ev):
                await self._changed(ev, self.view.last_groups)
            self.view.index = max(self.view.index, ev.modified_index)  # never ask twice
            if self.lag_limit is not None and r.etcd_index - ev.modified_index > self.lag_limit:
                # far behind: one read instead of the queued events, at most one per
                # reread_gap so a long burst is absorbed by few reads
                wait = self._last_read + self.reread_gap - time.monotonic()
                await asyncio.sleep(max(0.0, wait))
                await self.read()
