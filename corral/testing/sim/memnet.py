"""A tiny in-memory network of RawNodes for unit tests (etcd-io/raft `raft_test.go network`).

Messages are delivered synchronously in FIFO order by `stabilize()`; `isolate`, `cut`,
`drop_type` and `recover` shape what gets through. Ready processing follows the RawNode
contract (persist → send → apply → advance) with a `MemoryStorage` per node.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from corral.raft import (
    Config,
    ConfState,
    EntryType,
    Message,
    MessageType,
    RawNode,
    ReadState,
    decode_conf_change,
)
from corral.raft.storage import MemoryStorage

__all__ = ["MemNetwork"]


class MemNetwork:
    def __init__(
        self,
        ids: list[int],
        config: Callable[[int], Config] | None = None,
        bootstrap: bool = True,
    ) -> None:
        self.ids = list(ids)
        self.config = config or (lambda i: Config(id=i, election_tick=10, heartbeat_tick=1))
        self.nodes: dict[int, RawNode] = {}
        self.storage: dict[int, MemoryStorage] = {}
        self.applied: dict[int, list[bytes]] = {}
        self.read_states: dict[int, list[ReadState]] = {}
        self.conf: dict[int, ConfState] = {}
        self.queue: deque[Message] = deque()
        self.blocked: set[tuple[int, int]] = set()
        self.dropped_types: set[MessageType] = set()
        self.sent: list[Message] = []
        for i in ids:
            self.add(i, ConfState(voters=tuple(ids)) if bootstrap else ConfState())

    def add(self, i: int, conf: ConfState | None = None) -> RawNode:
        st = MemoryStorage(conf or ConfState())
        self.storage[i] = st
        self.nodes[i] = RawNode(self.config(i), st, random.Random(i))
        self.applied[i] = []
        self.read_states[i] = []
        self.conf[i] = conf or ConfState()
        return self.nodes[i]

    # --- shaping ---------------------------------------------------------------------------
    def isolate(self, i: int) -> None:
        for j in self.nodes:
            if j != i:
                self.blocked |= {(i, j), (j, i)}

    def cut(self, a: int, b: int) -> None:
        self.blocked |= {(a, b), (b, a)}

    def drop_type(self, t: MessageType) -> None:
        self.dropped_types.add(t)

    def recover(self) -> None:
        self.blocked.clear()
        self.dropped_types.clear()

    # --- driving ---------------------------------------------------------------------------
    def process(self, i: int) -> None:
        n = self.nodes[i]
        st = self.storage[i]
        while n.has_ready():
            rd = n.ready()
            if rd.snapshot is not None:
                st.apply_snapshot(rd.snapshot)
                self.conf[i] = rd.snapshot.metadata.conf_state
            st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            for m in rd.messages:
                self.sent.append(m)
                if (m.from_, m.to) in self.blocked or m.type in self.dropped_types:
                    continue
                self.queue.append(m)
            for e in rd.committed_entries:
                if e.type == EntryType.CONF_CHANGE:
                    self.conf[i] = n.apply_conf_change(decode_conf_change(e.data))
                elif e.data:
                    self.applied[i].append(e.data)
            self.read_states[i].extend(rd.read_states)
            n.advance()

    def process_all(self) -> None:
        for i in list(self.nodes):
            self.process(i)

    def stabilize(self, limit: int = 100_000) -> None:
        self.process_all()
        steps = 0
        while self.queue:
            steps += 1
            if steps > limit:
                raise RuntimeError("network did not stabilize")
            m = self.queue.popleft()
            if m.to in self.nodes:
                self.nodes[m.to].step(m)
                self.process(m.to)

    def tick(self, i: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[i].tick()
            self.process(i)

    def campaign(self, i: int) -> None:
        self.nodes[i].campaign()
        self.stabilize()

    def propose(self, i: int, data: bytes) -> None:
        self.nodes[i].propose(data)
        self.stabilize()

    def leader(self) -> int | None:
        from corral.raft import StateType

        leaders = [i for i, n in self.nodes.items() if n.raft.state == StateType.LEADER]
        return max(leaders, key=lambda i: self.nodes[i].raft.term) if leaders else None
