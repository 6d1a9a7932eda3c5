"""`corral etcd --proxy on|readonly` as real processes, in front of a three-member corral
cluster and of a real etcd 3.4 cluster; etcdctl (v2) through it; a member killed; and the
answers of etcd 3.4's own `--proxy on` in front of the same corral cluster compared."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.testing.ports import free_port
from corral.testing.servers import (
    ServerProcess,
    corral_etcd_command,
    real_etcd_command,
    start_cluster,
)


class Proxy:
    """A proxy process (corral's or etcd's) on a free port, its log in its data dir's parent."""

    def __init__(self, command: list[str], base: Path, name: str, initial: str, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = base / f"{name}.etcd"
        self.log = base / f"{name}.log"
        base.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *command,
                    f"--name={name}",
                    f"--data-dir={self.data_dir}",
                    f"--listen-client-urls={self.url}",
                    f"--initial-cluster={initial}",
                    "--enable-v2=true",
                    *args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def wait_endpoints(self, count: int, timeout: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                status, _, body = request(self.url, "GET", "/v2/config/local/proxy")
                eps = json.loads(body)["endpoints"]
                if status == 200 and len(eps) >= count:
                    return sorted(eps)
            except (OSError, ValueError):
                pass
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def request(
    base: str, method: str, path: str, body: str | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=15)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def etcdctl(url: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ETCDCTL_API": "2"}
    # --no-sync: talk to the proxy itself, not the member URLs it would learn from it.
    return subprocess.run(
        ["etcdctl", "--no-sync", "--endpoints", url, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def set_until_ok(url: str, key: str, value: str, within: float = 40.0) -> None:
    """A write through the proxy, retried while the cluster elects a new leader."""
    deadline = time.monotonic() + within
    while True:
        r = etcdctl(url, "set", key, value)
        if r.returncode == 0:
            assert r.stdout == value + "\n"
            return
        assert time.monotonic() < deadline, r.stderr
        time.sleep(0.2)


@pytest.fixture
def proxies() -> Iterator[list[Proxy]]:
    started: list[Proxy] = []
    yield started
    for p in started:
        p.stop()


def _exercise(members: list[ServerProcess], base: Path, proxies: list[Proxy]) -> None:
    initial = members[0].initial_cluster
    on = Proxy(corral_etcd_command(), base, "px", initial, "--proxy=on")
    ro = Proxy(corral_etcd_command(), base, "ro", initial, "--proxy=readonly")
    proxies += [on, ro]
    clients = sorted(m.client_url for m in members)
    assert on.wait_endpoints(3) == clients
    assert ro.wait_endpoints(3) == clients

    # Writes, reads and a watch through the proxy, with the real etcdctl.
    r = etcdctl(on.url, "set", "/p/k", "one")
    assert (r.returncode, r.stdout) == (0, "one\n"), r.stderr
    status, _, body = request(on.url, "GET", "/v2/keys/p/k")
    index = json.loads(body)["node"]["modifiedIndex"]
    watch = subprocess.Popen(
        [
            "etcdctl",
            "--no-sync",
            "--endpoints",
            on.url,
            "watch",
            "--after-index",
            str(index),
            "/p/k",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ETCDCTL_API": "2"},
    )
    try:
        assert etcdctl(on.url, "set", "/p/k", "two").returncode == 0
        out, err = watch.communicate(timeout=20)
    finally:
        watch.kill()
    assert out == "two\n", err
    assert etcdctl(ro.url, "get", "/p/k").stdout == "two\n"  # readonly serves reads

    # A long poll waits on the member through the proxy and ends with the next event.
    status, headers, _ = request(on.url, "GET", "/v2/keys/p/k")
    now = int(dict((k.lower(), v) for k, v in headers)["x-etcd-index"])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        poll = pool.submit(request, on.url, "GET", f"/v2/keys/p/k?wait=true&waitIndex={now + 1}")
        time.sleep(0.5)  # the poll is usually parked by now; if not, history answers it
        assert not poll.done()
        assert etcdctl(on.url, "set", "/p/k", "two-b").returncode == 0
        status, _, body = poll.result(timeout=20)
    assert status == 200 and json.loads(body)["node"]["value"] == "two-b"
    assert etcdctl(on.url, "set", "/p/k", "two").returncode == 0

    # readonly refuses writes as etcd does: a bare 501, nothing written.
    status, headers, body = request(ro.url, "PUT", "/v2/keys/p/k", "value=three")
    assert (status, body) == (501, b"")
    assert not any(k.lower().startswith("access-control") for k, _ in headers)
    r = etcdctl(ro.url, "set", "/p/k", "three")
    assert r.returncode != 0
    assert etcdctl(on.url, "get", "/p/k").stdout == "two\n"

    # The proxy saved the cluster's peer URLs (etcd's <data-dir>/proxy/cluster).
    saved = json.loads((on.data_dir / "proxy" / "cluster").read_text())
    assert saved == {"PeerURLs": sorted(m.peer_url for m in members)}

    # A member dies: the proxy fails over to the live ones.
    members[0].kill()
    set_until_ok(on.url, "/p/after", "kill")
    for _ in range(5):  # every request, whichever endpoint comes first
        assert etcdctl(on.url, "get", "/p/after").stdout == "kill\n"
    status, _, body = request(on.url, "GET", "/v2/keys/p/after?quorum=true")
    assert status == 200 and json.loads(body)["node"]["value"] == "kill"


def test_corral_proxy_in_front_of_corral_cluster(tmp_path: Path, proxies: list[Proxy]) -> None:
    with start_cluster(corral_etcd_command(), tmp_path / "c", size=3) as members:
        _exercise(members, tmp_path / "c", proxies)


def test_corral_proxy_in_front_of_real_etcd(tmp_path: Path, proxies: list[Proxy]) -> None:
    with start_cluster(real_etcd_command(), tmp_path / "e", size=3) as members:
        _exercise(members, tmp_path / "e", proxies)


def _comparable(resp: tuple[int, list[tuple[str, str]], bytes]) -> tuple[object, ...]:
    status, headers, body = resp
    hs = sorted((k.lower(), v) for k, v in headers if k.lower() != "date")
    return status, hs, body


def test_same_answers_as_etcds_own_proxy(tmp_path: Path, proxies: list[Proxy]) -> None:
    base = tmp_path / "c"
    with start_cluster(corral_etcd_command(), base, size=3) as members:
        initial = members[0].initial_cluster
        ours = Proxy(corral_etcd_command(), base, "ours", initial, "--proxy=on")
        theirs = Proxy(real_etcd_command(), base, "theirs", initial, "--proxy=on")
        ours_ro = Proxy(corral_etcd_command(), base, "ours-ro", initial, "--proxy=readonly")
        theirs_ro = Proxy(real_etcd_command(), base, "theirs-ro", initial, "--proxy=readonly")
        proxies += [ours, theirs, ours_ro, theirs_ro]
        for p in proxies:
            assert p.wait_endpoints(3) == sorted(m.client_url for m in members)
        status, _, _ = request(members[0].client_url, "PUT", "/v2/keys/cmp/k", "value=v")
        assert status == 201
        for method, path in [
            ("GET", "/v2/keys/cmp/k"),
            ("GET", "/v2/keys/cmp/k?quorum=true"),
            ("HEAD", "/v2/keys/cmp/k"),
            ("GET", "/v2/keys/cmp/missing"),
            ("GET", "/v2/keys/cmp?recursive=true&sorted=true"),
            ("GET", "/v2/members"),
            ("GET", "/version"),
            ("GET", "/health"),
            ("GET", "/nope"),
            ("GET", "//v2/keys/cmp/k"),
            ("OPTIONS", "/v2/keys/cmp/k"),
            ("DELETE", "/v2/config/local/proxy"),
            ("PATCH", "/v2/keys/cmp/k"),
        ]:
            a = _comparable(request(ours.url, method, path))
            b = _comparable(request(theirs.url, method, path))
            assert a == b, (method, path)
        for method, path in [
            ("PUT", "/v2/keys/cmp/k"),
            ("HEAD", "/v2/keys/cmp/k"),
            ("OPTIONS", "/v2/keys/cmp/k"),
            ("GET", "/v2/keys/cmp/k"),
        ]:
            a = _comparable(request(ours_ro.url, method, path))
            b = _comparable(request(theirs_ro.url, method, path))
            assert a == b, ("readonly", method, path)
        # /v2/config/local/proxy: same shape (the order of endpoints is shuffled).
        sa, ha, ba = request(ours.url, "GET", "/v2/config/local/proxy")
        sb, hb, bb = request(theirs.url, "GET", "/v2/config/local/proxy")
        assert sa == sb == 200
        assert sorted(json.loads(ba)["endpoints"]) == sorted(json.loads(bb)["endpoints"])
        strip = {"date", "content-length"}
        assert sorted((k.lower(), v) for k, v in ha if k.lower() not in strip) == sorted(
            (k.lower(), v) for k, v in hb if k.lower() not in strip
        )
