"""The shells' retry and connection rules, against a scripted loopback HTTP server.

A real etcd only answers `300 Raft Internal Error` after losing quorum for seconds, and
never closes idle keep-alive connections on cue, so these cases use a small scripted server
(stdlib `http.server` on a free port) instead: each request gets the next scripted answer.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from corral.client import (
    AsyncClient,
    ClientError,
    KeyNotFound,
    OutcomeUnknown,
    RaftInternalError,
    SyncClient,
    Timeouts,
)
from corral.testing.ports import free_port

OK = (200, {"action": "get", "node": {"key": "/k", "value": "v", "modifiedIndex": 4,
                                      "createdIndex": 4}})
RAFT_300 = (500, {"errorCode": 300, "message": "Raft Internal Error",
                  "cause": "etcdserver: request timed out", "index": 0})


class Scripted:
    """A loopback HTTP/1.1 server answering from a script; records what it was sent."""

    def __init__(self, script: list[tuple[int, dict[str, object]]], close_after: bool = False,
                 silent_close: bool = False):
        self.script = list(script)
        self.closed = threading.Event()
        self.seen: list[tuple[str, str]] = []
        self.connections = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                outer.connections += 1
                super().setup()

            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                outer.seen.append((self.command, self.path))
                status, body = outer.script.pop(0) if outer.script else OK
                data = json.dumps(body).encode() + b"\n"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Etcd-Index", "4")
                self.send_header("Content-Length", str(len(data)))
                if close_after:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
                if silent_close:
                    self.close_connection = True  # hang up without saying so

            do_GET = do_PUT = do_POST = do_DELETE = _answer

            def log_message(self, format: str, *args: object) -> None:
                return

        class Server(ThreadingHTTPServer):
            def shutdown_request(self, request: object) -> None:
                super().shutdown_request(request)  # type: ignore[arg-type]
                outer.closed.set()

        self.server = Server(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers() -> Iterator[list[Scripted]]:
    made: list[Scripted] = []
    yield made
    for s in made:
        s.close()


def test_raft_error_on_a_write_is_outcome_unknown_and_not_resent(
        servers: list[Scripted]) -> None:
    a, b = Scripted([RAFT_300]), Scripted([])
    servers += [a, b]
    with SyncClient([a.url, b.url]) as c, pytest.raises(OutcomeUnknown) as info:
        c.set("/k", "v")
    assert isinstance(info.value.__cause__, RaftInternalError)
    assert [m for m, _ in a.seen] == ["PUT"] and b.seen == []


def test_raft_error_on_a_read_fails_over(servers: list[Scripted]) -> None:
    a, b = Scripted([RAFT_300]), Scripted([OK])
    servers += [a, b]
    with SyncClient([a.url, b.url]) as c:
        assert c.get("/k").value == "v"
        assert c.pool.pinned == b.url
    # Every endpoint failing with the same server error raises that error itself.
    d = Scripted([RAFT_300])
    servers.append(d)
    with SyncClient([d.url]) as c, pytest.raises(RaftInternalError):
        c.get("/k")


def test_keep_alive_reuses_one_connection(servers: list[Scripted]) -> None:
    s = Scripted([])
    servers.append(s)
    with SyncClient(s.url) as c:
        for _ in range(5):
            c.get("/k")
    assert s.connections == 1 and len(s.seen) == 5


@pytest.mark.parametrize("how", ["announced", "silent"])
def test_server_closed_connection_is_not_an_unknown_outcome(
        servers: list[Scripted], how: str) -> None:
    # The server hangs up after each answer (with `Connection: close`, or silently, as an
    # idle timeout does); the next write must use a fresh connection, not fail on the dead
    # one and report OutcomeUnknown.
    s = Scripted([], close_after=how == "announced", silent_close=how == "silent")
    servers.append(s)
    with SyncClient(s.url) as c:
        for i in range(3):
            s.closed.clear()
            c.set("/k", str(i))
            assert s.closed.wait(timeout=10)
    assert [m for m, _ in s.seen] == ["PUT"] * 3 and s.connections == 3


def test_async_client_rules(servers: list[Scripted]) -> None:
    a, b = Scripted([RAFT_300, RAFT_300]), Scripted([OK])
    servers += [a, b]
    nf = (404, {"errorCode": 100, "message": "Key not found", "cause": "/x", "index": 4})
    c404 = Scripted([nf])
    servers.append(c404)

    async def scenario() -> None:
        async with AsyncClient([a.url, b.url]) as c:
            with pytest.raises(OutcomeUnknown):
                await c.append("/q", "x")
            assert (await c.get("/k")).value == "v"
        async with AsyncClient(c404.url) as c:
            with pytest.raises(KeyNotFound):
                await c.get("/x")

    asyncio.run(scenario())
    assert [m for m, _ in a.seen] == ["POST", "GET"] and [m for m, _ in b.seen] == ["GET"]


def test_watch_timeout_on_a_quiet_key_rewatches() -> None:
    # A listener that accepts and never answers: every watch times out, and the iterator
    # keeps watching instead of failing (a bounded number of attempts is observed).
    listener = socket.create_server(("127.0.0.1", free_port()))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    accepted: list[socket.socket] = []

    def accept() -> None:
        while len(accepted) < 3:
            conn, _ = listener.accept()
            accepted.append(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    c = SyncClient(url, Timeouts(connect=1, request=1, watch=0.2))
    events = c.watch("/quiet")
    finished: list[object] = []
    def consume() -> None:
        try:
            finished.append(next(events))
        except ClientError as exc:  # once the listener is gone
            finished.append(exc)

    runner = threading.Thread(target=consume, daemon=True)
    runner.start()
    t.join(timeout=30)
    assert len(accepted) == 3 and not finished  # re-watched twice, still waiting
    listener.close()
    for conn in accepted:
        conn.close()
    runner.join(timeout=30)
    assert len(finished) == 1 and isinstance(finished[0], ClientError)
