"""`corral etcd --discovery URL` with real processes: three members started with only a
discovery URL (served by a corral member or by a real etcd 3.4) form a cluster; a fourth
becomes a proxy (`--discovery-fallback proxy`, the default) or exits with etcd's message
(`exit`); bad, full and unreachable discovery URLs fail clearly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.testing.ports import free_ports
from corral.testing.servers import corral_etcd_command, real_etcd_command, start_cluster


class Member:
    def __init__(self, base: Path, name: str, durl: str, *extra: str) -> None:
        client, peer = free_ports(2)
        self.client_url = f"http://127.0.0.1:{client}"
        self.peer_url = f"http://127.0.0.1:{peer}"
        self.data_dir = base / f"{name}.etcd"
        self.log = base / f"{name}.log"
        base.mkdir(parents=True, exist_ok=True)
        self.argv = [
            *corral_etcd_command(),
            f"--name={name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--discovery={durl}",
            *extra,
        ]
        self.start()

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.client_url + path, timeout=10) as r:
            body: bytes = r.read()
            return body

    def wait_serving(self, path: str = "/version", timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, self.text()
            try:
                self.get(path)
                return
            except OSError:
                assert time.monotonic() < deadline, self.text()
                time.sleep(0.1)

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def members() -> Iterator[list[Member]]:
    started: list[Member] = []
    yield started
    for m in started:
        m.stop()


def _put(url: str, value: str) -> dict[str, object]:
    req = urllib.request.Request(url, data=f"value={value}".encode(), method="PUT")
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    with urllib.request.urlopen(req, timeout=10) as r:
        doc: dict[str, object] = json.loads(r.read())
        return doc


@pytest.mark.parametrize("server", ["corral", "etcd"])
def test_three_members_form_a_cluster_from_a_discovery_url(
    tmp_path: Path, members: list[Member], server: str
) -> None:
    command = corral_etcd_command() if server == "corral" else real_etcd_command()
    with start_cluster(command, tmp_path / "disc", size=1, prefix="disc") as (disc,):
        durl = disc.client_url + "/v2/keys/discovery/6c007a14875d53d9"
        _put(durl + "/_config/size", "3")
        base = tmp_path / "m"
        members += [Member(base, f"n{i}", durl) for i in range(3)]
        for m in members:
            m.wait_serving()  # a member serves clients once the cluster has formed
        doc = json.loads(members[0].get("/v2/members"))
        assert sorted(m["name"] for m in doc["members"]) == ["n0", "n1", "n2"]
        assert sorted(u for m in doc["members"] for u in m["clientURLs"]) == sorted(
            m.client_url for m in members
        )
        ids = {m.get("/v2/members") for m in members}
        assert len(ids) == 1  # every member sees the same cluster
        registered = json.loads(disc_get(durl))["node"]["nodes"]
        assert len([n for n in registered if not n["key"].endswith("_config")]) == 3

        written = _put(members[0].client_url + "/v2/keys/from/n0", "hello")
        index = written["node"]["modifiedIndex"]  # type: ignore[index]
        got = json.loads(members[2].get("/v2/keys/from/n0?quorum=true"))
        assert got["node"]["value"] == "hello" and got["node"]["modifiedIndex"] == index

        # The cluster is full: a fourth member becomes a proxy of it (the default) …
        fourth = Member(base, "n3", durl)
        members.append(fourth)
        # … or, with --discovery-fallback exit, says so and exits 1, as etcd does.
        fifth = Member(base, "n4", durl, "--discovery-fallback=exit") if server == "etcd" else None
        fourth.wait_serving("/v2/keys/from/n0")
        assert json.loads(fourth.get("/v2/keys/from/n0"))["node"]["value"] == "hello"
        assert "discovery cluster full, falling back to proxy" in fourth.text()
        assert sorted(os.listdir(fourth.data_dir)) == ["proxy"]
        eps = json.loads(fourth.get("/v2/config/local/proxy"))["endpoints"]
        assert sorted(eps) == sorted(m.client_url for m in members[:3])
        if fifth is None:
            return  # the rest does not depend on who serves discovery (and takes time)
        members.append(fifth)
        assert fifth.wait_exit() == 1
        text = fifth.text()
        assert "etcdmain: failed to join discovery cluster (discovery: cluster is full)" in text
        assert f"discovery token {durl} was used, but failed to bootstrap the cluster." in text

        # A restart ignores the token (the data dir holds the member) and serves again.
        members[1].stop()
        members[1].start()
        members[1].wait_serving("/v2/keys/from/n0")
        assert "discovery token ignored" in members[1].text()


def disc_get(durl: str) -> bytes:
    with urllib.request.urlopen(durl + "?recursive=true", timeout=10) as r:
        body: bytes = r.read()
        return body


def test_bad_discovery_urls_fail_clearly(tmp_path: Path, members: list[Member]) -> None:
    with start_cluster(real_etcd_command(), tmp_path / "disc", size=1, prefix="disc") as (disc,):
        base = disc.client_url + "/v2/keys/discovery"
        _put(base + "/badsize/_config/size", "three")
        cases = {
            base
            + "/nosize": "failed to join discovery cluster (100: Key not found (/discovery/nosize)",
            base + "/badsize": "failed to join discovery cluster (discovery: size key is bad)",
            disc.client_url + "/v2/notkeys/x": "(discovery: bad discovery endpoint)",
            "foo": "invalid discovery URL 'foo'",
        }
        started = {url: Member(tmp_path / "bad", f"b{i}", url) for i, url in enumerate(cases)}
        members += started.values()
        for url, m in started.items():
            assert m.wait_exit() == 1, m.text()
            assert cases[url] in m.text(), m.text()
            assert "Traceback" not in m.text()

    # Unreachable: etcd's back-off, logged; the member waits (as etcd does) until stopped.
    (dead,) = free_ports(1)
    m = Member(tmp_path / "bad", "dead", f"http://127.0.0.1:{dead}/v2/keys/discovery/t")
    members.append(m)
    deadline = time.monotonic() + 20
    while "cluster status check: error connecting to" not in m.text():
        assert m.proc.poll() is None, m.text()
        assert time.monotonic() < deadline, m.text()
        time.sleep(0.1)
    assert f"error connecting to http://127.0.0.1:{dead}, retrying in 2s" in m.text()
    m.stop()
    assert m.proc.returncode == 0 and "Traceback" not in m.text()
    assert not (m.data_dir / "member").exists()  # nothing was bootstrapped
