"""The short path for plain /v2/keys requests (`corral.kv.go_http.FastConnection`): the same
bytes as the aiohttp path, pipelining, partial reads, handing a connection over, shutdown."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from corral.kv.cluster import ClusterConfig, RaftMember
from corral.kv.http_api import API_KEY, ClientAPI, serve
from corral.testing.ports import free_port

FORM = b"Content-Type: application/x-www-form-urlencoded\r\n"
# A header the short path does not serve (aiohttp ignores it): the connection is handed over.
TO_AIOHTTP = b"TE: trailers\r\n"


def _put(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"PUT " + path + b" HTTP/1.1\r\nHost: m\r\n" + extra + FORM
        + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip


def _get(target: bytes, method: bytes = b"GET", extra: bytes = b"") -> bytes:
    return method + b" " + target + b" HTTP/1.1\r\nHost: m\r\n" + extra + b"\r\n"


REQUESTS = [
    _put(b"/v2/keys/a", b"value=1"),
    _put(b"/v2/keys/a", b"value=2"),
    _put(b"/v2/keys/a?noValueOnSuccess=true", b"value=3"),
    _put(b"/v2/keys/t?ttl=100", b"value=x"),
    _put(b"/v2/keys/a?prevExist=false", b"value=1"),
    _put(b"/v2/keys/a?prevValue=3", b"value=4"),
    _put(b"/v2/keys/a?ttl=%zz", b"value=1"),
    _put(b"/v2/keys/a", b"prevIndex=-1&value=1"),
    _put(b"/v2/keys/d?dir=true", b""),
    _put(b"/v2/keys/html", b"value=%3Cscript%3E%26%E2%80%A8"),
    _put(b"/v2/keys/utf8/%FF%FE", b"value=%C3%28%A0"),
    b"PUT /v2/keys/ct HTTP/1.1\r\nHost: m\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 7\r\n\r\nvalue=1",
    b"POST /v2/keys/q HTTP/1.1\r\nHost: m\r\n" + FORM + b"Content-Length: 7\r\n\r\nvalue=1",
    _get(b"/v2/keys/a"),
    _get(b"/v2/keys/a", b"HEAD"),
    _get(b"/v2/keys/nope"),
    _get(b"/v2/keys/nope", b"HEAD"),
    _get(b"/v2/keys/t"),
    _get(b"/v2/keys/?recursive=true&sorted=true"),
    _get(b"/v2/keys"),
    _get(b"/v2/keys/a?quorum=true"),
    _get(b"/v2/keys/a?recursive=maybe"),
    _get(b"/v2/keys/html", extra=b"Connection: keep-alive\r\n"),
    _get(b"/v2/keys/a?prevIndex=1", b"DELETE"),
    _get(b"/v2/keys/a", b"DELETE"),
    _get(b"/v2/keys/d", b"DELETE"),
]


def _single(data_dir: Path, url: str) -> RaftMember:
    peer = "http://127.0.0.1:1"
    return RaftMember(
        ClusterConfig("h", data_dir, (url,), (peer,), (("h", peer),), sync_interval=0.05)
    )


async def _served(tmp: Path, name: str) -> tuple[RaftMember, web.AppRunner, int, ClientAPI]:
    port = free_port()
    member = _single(tmp / name, f"http://127.0.0.1:{port}")
    runner = await serve(member, [("127.0.0.1", port)])
    app = runner.app
    assert isinstance(app, web.Application)
    return member, runner, port, app[API_KEY]


async def _read_answer(reader: asyncio.StreamReader, head_only: bool) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    m = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
    assert m is not None, head
    body = b"" if head_only else await reader.readexactly(int(m.group(1)))
    return head + body


def _normal(answer: bytes) -> bytes:
    answer = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: D", answer)
    answer = re.sub(rb"\r\nX-Raft-(Index|Term): \d+", rb"\r\nX-Raft-\1: N", answer)
    if b'"expiration":' in answer:  # its digits vary, and the length with them
        answer = re.sub(rb"\r\nContent-Length: \d+", b"\r\nContent-Length: L", answer)
    return re.sub(rb'"expiration":"[^"]*"', b'"expiration":"E"', answer)


def _run(tmp: Path, body: Callable[[Path], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body(tmp))


def test_short_path_answers_byte_for_byte_like_aiohttp(tmp_path: Path) -> None:
    async def body(tmp: Path) -> None:
        fast = await _served(tmp, "fast")
        slow = await _served(tmp, "slow")
        try:
            fr, fw = await asyncio.open_connection("127.0.0.1", fast[2])
            for i, raw in enumerate(REQUESTS):
                head_only = raw.startswith(b"HEAD")
                fw.write(raw)
                got = await _read_answer(fr, head_only)
                # A fresh connection per request: the header sends each one to aiohttp.
                sr, sw = await asyncio.open_connection("127.0.0.1", slow[2])
                sw.write(raw.replace(b"Host: m\r\n", b"Host: m\r\n" + TO_AIOHTTP, 1))
                want = await _read_answer(sr, head_only)
                sw.close()
                assert _normal(got) == _normal(want), (i, raw, got, want)
                assert len(fast[3]._fast) == 1  # still on the short path
            fw.close()
        finally:
            for member, runner, _, _ in (fast, slow):
                await runner.cleanup()
                await member.stop()

    _run(tmp_path, body)


def test_pipelined_and_fragmented_requests(tmp_path: Path) -> None:
    async def body(tmp: Path) -> None:
        member, runner, port, api = await _served(tmp, "m")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            batch = (
                _put(b"/v2/keys/p", b"value=1")
                + _put(b"/v2/keys/p", b"value=2")
                + _get(b"/v2/keys/p", b"HEAD")
                + _get(b"/v2/keys/p")
            )
            writer.write(batch)
            answers = [await _read_answer(reader, i == 2) for i in range(4)]
            assert answers[0].startswith(b"HTTP/1.1 201 Created\r\n")
            assert answers[1].startswith(b"HTTP/1.1 200 OK\r\n")
            assert b'"prevNode":{"key":"/p","value":"1"' in answers[1]
            assert answers[2].endswith(b"\r\n\r\n")
            assert b'{"action":"get","node":{"key":"/p","value":"2"' in answers[3]
            # One byte at a time: the request is answered once it is complete.
            for b in _put(b"/v2/keys/p", b"value=3"):
                writer.write(bytes([b]))
                await writer.drain()
            assert b'"value":"3"' in await _read_answer(reader, False)
            assert len(api._fast) == 1
            writer.close()
        finally:
            await runner.cleanup()
            await member.stop()

    _run(tmp_path, body)


def test_a_watch_hands_the_connection_to_aiohttp(tmp_path: Path) -> None:
    async def body(tmp: Path) -> None:
        member, runner, port, api = await _served(tmp, "m")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_get(b"/v2/keys/w"))
            assert (await _read_answer(reader, False)).startswith(b"HTTP/1.1 404 ")
            assert len(api._fast) == 1
            writer.write(_get(b"/v2/keys/w?wait=true"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"Transfer-Encoding: chunked" in head
            assert len(api._fast) == 0
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            w2.write(_put(b"/v2/keys/w", b"value=v"))
            assert (await _read_answer(r2, False)).startswith(b"HTTP/1.1 201 ")
            chunk = await asyncio.wait_for(reader.readuntil(b"}}\n"), 10)
            assert b'"action":"set","node":{"key":"/w","value":"v"' in chunk
            w2.close()
            writer.close()
        finally:
            await runner.cleanup()
            await member.stop()

    _run(tmp_path, body)


def test_shutdown_closes_idle_short_path_connections(tmp_path: Path) -> None:
    async def body(tmp: Path) -> None:
        member, runner, port, api = await _served(tmp, "m")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_get(b"/v2/keys"))
            await _read_answer(reader, False)
            assert len(api._fast) == 1
            await asyncio.wait_for(runner.cleanup(), 10)
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        finally:
            await member.stop()

    _run(tmp_path, body)
