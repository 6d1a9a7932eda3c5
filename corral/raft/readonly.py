"""ReadIndex bookkeeping (thesis §6.4; etcd-io/raft `read_only.go`, ReadOnlySafe only).

The leader records its commit index for each read request, tags a heartbeat round with the
request context, and releases the request (and every earlier one, since heartbeats are
answered in order of rounds) once a quorum of voters acknowledged that round.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.raft.types import Message

__all__ = ["ReadIndexStatus", "ReadOnly"]


@dataclass(slots=True)
class ReadIndexStatus:
    req: Message
    index: int
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, m: Message) -> None:
        ctx = m.context
        if ctx in self.pending:
            return
        self.pending[ctx] = ReadIndexStatus(m, index)
        self.queue.append(ctx)

    def recv_ack(self, node: int, ctx: bytes) -> set[int] | None:
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks.add(node)
        return rs.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Release every request queued up to and including `ctx`."""
        if ctx not in self.pending:
            return []
        i = self.queue.index(ctx)
        released = [self.pending.pop(c) for c in self.queue[: i + 1]]
        del self.queue[: i + 1]
        return released

    def last_pending_request_ctx(self) -> bytes | None:
        return self.queue[-1] if self.queue else None
