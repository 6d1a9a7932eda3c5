"""10,000 idle long-poll watchers on one member: one write reaches all, memory stays bounded.

The clients are raw asyncio sockets in this process (10,000 file descriptors here and 10,000
in the member, hence the RLIMIT_NOFILE raise before the member starts: it inherits it). The
member's RSS is read from /proc once every watcher is registered; the budget is stated in
docs/kv.md. The same test against real etcd 3.4 (`make soak`) gives the comparison figure.
"""

from __future__ import annotations

import asyncio
import json
import resource
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.testing.servers import (
    ServerProcess,
    corral_etcd_command,
    real_etcd_command,
    start_cluster,
)

pytestmark = pytest.mark.interop

WATCHERS = 10_000
#: corral's budget for 10,000 idle watchers (whole member process), see docs/kv.md.
RSS_BUDGET_MB = 300


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            hard = need  # raising the hard limit needs root (CI runs as root); else it fails here
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _watchers(url: str) -> int:
    with urllib.request.urlopen(url + "/v2/stats/store", timeout=10) as r:
        return int(json.loads(r.read())["watchers"])


async def _open_watch(
    port: int, sem: asyncio.Semaphore
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with sem:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v2/keys/scale/w?wait=true HTTP/1.1\r\nHost: m\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")  # headers are flushed before any event
        assert head.startswith(b"HTTP/1.1 200"), head[:100]
        return reader, writer


async def _read_event(reader: asyncio.StreamReader) -> dict[str, object]:
    size = int((await reader.readline()).strip(), 16)  # chunked body: one chunk, the event
    doc = json.loads(await reader.readexactly(size))
    assert isinstance(doc, dict)
    return doc


def _run(member: ServerProcess) -> tuple[float, int]:
    async def go() -> tuple[float, int]:
        sem = asyncio.Semaphore(256)
        conns = await asyncio.gather(
            *(_open_watch(member.client_port, sem) for _ in range(WATCHERS))
        )
        loop = asyncio.get_running_loop()
        # Every watcher registered (the stats count them): measure, then one write.
        for _ in range(600):
            if await loop.run_in_executor(None, _watchers, member.client_url) >= WATCHERS:
                break
            await asyncio.sleep(0.05)
        assert member.proc is not None
        rss = _rss_mb(member.proc.pid)
        req = urllib.request.Request(
            member.client_url + "/v2/keys/scale/w", data=b"value=go", method="PUT"
        )
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
        body = await loop.run_in_executor(
            None, lambda: urllib.request.urlopen(req, timeout=30).read()
        )
        index = json.loads(body)["node"]["modifiedIndex"]
        events = await asyncio.wait_for(
            asyncio.gather(*(_read_event(r) for r, _ in conns)), timeout=120
        )
        reached = sum(1 for e in events if e["node"]["modifiedIndex"] == index)  # type: ignore[index]
        for _, w in conns:
            w.close()
        return rss, reached

    return asyncio.run(go())


@pytest.fixture
def member(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    _raise_nofile(WATCHERS + 1000)  # per process: clients here, sockets there
    command = real_etcd_command() if request.param == "etcd" else corral_etcd_command()
    with start_cluster(command, tmp_path / "w", prefix="w") as members:
        yield members[0]


@pytest.mark.parametrize("member", ["corral"], indirect=True)
def test_ten_thousand_idle_watchers_corral(member: ServerProcess) -> None:
    rss, reached = _run(member)
    print(f"corral: {WATCHERS} watchers, member RSS {rss:.0f} MB")
    assert reached == WATCHERS
    assert rss < RSS_BUDGET_MB, f"member RSS {rss:.0f} MB over the {RSS_BUDGET_MB} MB budget"


@pytest.mark.slow
@pytest.mark.parametrize("member", ["etcd"], indirect=True)
def test_ten_thousand_idle_watchers_etcd_reference(member: ServerProcess) -> None:
    rss, reached = _run(member)
    print(f"etcd: {WATCHERS} watchers, member RSS {rss:.0f} MB")
    assert reached == WATCHERS
