"""The proxy's pure core (etcd's director, readonly rule, X-Forwarded-For, /members parsing)
and the proxy/discovery flags, as etcd 3.4 parses them."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from aiohttp import web

from corral.kv.flags import FlagError, parse
from corral.kv.proxy import (
    Director,
    Proxy,
    ProxyError,
    ProxySettings,
    cluster_from_members,
    forwarded_for,
    read_cluster_file,
    readonly_allows,
)
from corral.testing.ports import free_port, free_ports

URLS = ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"]


def test_refresh_shuffles_deterministically_and_resets_failures() -> None:
    d = Director(failure_wait=5.0).refreshed(URLS, random.Random(7))
    again = Director(failure_wait=5.0).refreshed(URLS, random.Random(7))
    assert d == again and sorted(d.available(0.0)) == URLS
    orders = {Director().refreshed(URLS, random.Random(s)).available(0.0) for s in range(40)}
    assert len(orders) > 1  # shuffled, so load spreads over the members
    failed = d.failed(URLS[1], now=10.0)
    assert URLS[1] not in failed.available(10.0)
    assert URLS[1] not in failed.available(14.99)
    assert URLS[1] in failed.available(15.0)  # back after --proxy-failure-wait
    # A refresh brings fresh, available endpoints (etcd replaces the list).
    assert URLS[1] in failed.refreshed(URLS, random.Random(1)).available(10.0)


def test_failing_twice_does_not_extend_the_wait() -> None:
    d = Director(failure_wait=5.0).refreshed(URLS, random.Random(1))
    d = d.failed(URLS[0], now=10.0).failed(URLS[0], now=12.0)
    assert URLS[0] in d.available(15.0)


def test_refresh_delay_is_one_second_without_endpoints_at_the_default_interval() -> None:
    empty = Director(refresh_interval=30.0)
    assert empty.next_refresh(0.0) == 1.0
    assert empty.refreshed(URLS, random.Random(1)).next_refresh(0.0) == 30.0
    # Below etcd's default interval the configured one is kept even when empty.
    assert Director(refresh_interval=0.2).next_refresh(0.0) == 0.2
    all_failed = Director(refresh_interval=45.0).refreshed(URLS[:1], random.Random(1))
    assert all_failed.failed(URLS[0], 0.0).next_refresh(1.0) == 1.0


def test_readonly_serves_get_only() -> None:
    assert readonly_allows("GET")
    for method in ("HEAD", "OPTIONS", "PUT", "POST", "DELETE"):
        assert not readonly_allows(method)


def test_forwarded_for_appends_the_client() -> None:
    assert forwarded_for([], "10.0.0.1") == "10.0.0.1"
    assert forwarded_for(["1.1.1.1", "2.2.2.2"], "10.0.0.1") == "1.1.1.1, 2.2.2.2, 10.0.0.1"
    assert forwarded_for([], None) is None


def test_cluster_from_members() -> None:
    body = (
        b'[{"id":"2","name":"b","peerURLs":["http://p2"],"clientURLs":["http://c2"]},'
        b'{"id":"1","name":"a","peerURLs":["http://p1"],"clientURLs":["http://c1"]},'
        b'{"id":"3","name":"","peerURLs":["http://p3"],"clientURLs":[]}]'
    )
    peers, clients = cluster_from_members(body, "abc")
    assert peers == ["http://p1", "http://p2", "http://p3"]
    assert clients == ["http://c1", "http://c2"]  # an unstarted member has none yet
    with pytest.raises(ValueError, match="unmarshal"):
        cluster_from_members(b"<html>", "abc")
    with pytest.raises(ValueError, match="cluster ID"):
        cluster_from_members(body, "")
    with pytest.raises(ValueError, match="member\\(s\\)"):
        cluster_from_members(b"[]", "abc")


def test_cluster_file(tmp_path: Path) -> None:
    f = tmp_path / "cluster"
    assert read_cluster_file(f) is None
    f.write_text('{"PeerURLs":["http://a:1","http://b:2"]}')
    assert read_cluster_file(f) == ["http://a:1", "http://b:2"]
    f.write_text("garbage")
    with pytest.raises(ProxyError, match="not valid"):
        read_cluster_file(f)


def test_proxy_and_discovery_flags() -> None:
    cfg = parse(["--proxy=readonly", "--proxy-refresh-interval=200"], {}).config
    assert cfg.values["proxy"] == "readonly" and cfg.values["proxy-refresh-interval"] == 200
    with pytest.raises(FlagError) as err:
        parse(["--proxy=maybe"], {})
    assert err.value.message == 'invalid value "maybe" for flag -proxy: invalid value'
    assert err.value.exit_code == 2 and err.value.usage
    with pytest.raises(FlagError, match="ETCD_DISCOVERY_FALLBACK"):
        parse([], {"ETCD_DISCOVERY_FALLBACK": "never"})
    cfg = parse(["--discovery=http://h:1/v2/keys/d/t", "--discovery-fallback=exit"], {}).config
    assert cfg.values["discovery-fallback"] == "exit"
    with pytest.raises(FlagError, match="multiple discovery or bootstrap flags"):
        parse(["--discovery=http://h:1/t", "--initial-cluster=a=http://h:2"], {})


async def _answers(peer_urls: tuple[str, ...], clients: list[str], tmp: Path) -> list[bytes]:
    """Run a Proxy in-process on a free port; return the raw answers to two requests."""
    proxy = Proxy(ProxySettings(data_dir=tmp, peer_urls=peer_urls, dial_timeout_ms=500))
    (tmp / "proxy").mkdir(parents=True, exist_ok=True)
    await proxy.start()
    if clients:
        proxy.director = proxy.director.refreshed(clients, random.Random(1))
    runner = web.AppRunner(proxy.make_app(), handler_cancellation=True)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    out = []
    try:
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /v2/keys/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            out.append(await reader.read())
            writer.close()
    finally:
        await runner.cleanup()
        await proxy.stop()
    return out


def test_no_member_is_503_and_unreachable_members_502(tmp_path: Path) -> None:
    dead = [f"http://127.0.0.1:{p}" for p in free_ports(2)]
    # No cluster reachable: no endpoints at all (etcd's message and status).
    first, _ = asyncio.run(_answers(tuple(dead), [], tmp_path / "a"))
    assert first.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert first.endswith(b'\r\n\r\n{"message":"httpproxy: zero endpoints currently available"}')
    assert b"Content-Type: application/json\r\n" in first
    # Members known but refusing connections: each is tried, then 502; then they are
    # marked unavailable for --proxy-failure-wait, so the next request finds none.
    first, second = asyncio.run(_answers(tuple(dead), dead, tmp_path / "b"))
    assert first.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert first.endswith(b'{"message":"httpproxy: unable to get response from 2 endpoint(s)"}')
    assert second.startswith(b"HTTP/1.1 503 ")
