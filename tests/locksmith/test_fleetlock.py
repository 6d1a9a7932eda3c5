"""FleetLock: request rules (pure) and the HTTP endpoint over a real etcd's semaphore."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from corral.locksmith import (
    ClientKeys,
    FleetLockError,
    HolderExists,
    KVError,
    Lock,
    LockClient,
    SemaphoreFull,
    SetMax,
    Unlock,
    make_fleetlock_app,
    parse_fleetlock_request,
)
from corral.locksmith._fleetlock import outcome
from corral.testing.ports import free_ports
from corral.testing.servers import ServerProcess


def _body(id_: str = "c988d2509fdf5cdcbed39037c56406fb", group: str = "default") -> bytes:
    return json.dumps({"client_params": {"id": id_, "group": group}}).encode()


def test_parse_request_rules() -> None:
    req = parse_fleetlock_request("/v1/pre-reboot", "true", _body(group="workers"))
    assert req.op == Lock("c988d2509fdf5cdcbed39037c56406fb") and req.group == "workers"
    assert parse_fleetlock_request("/v1/steady-state", "true", _body()).group == ""
    for path, header, body, kind in [
        ("/v1/pre-reboot", None, _body(), "missing_protocol_header"),
        ("/v1/pre-reboot", "yes", _body(), "missing_protocol_header"),
        ("/v1/pre-reboot", "true", b"{", "bad_request"),
        ("/v1/pre-reboot", "true", b"{}", "bad_request"),
        ("/v1/pre-reboot", "true", _body(id_=""), "bad_request"),
        ("/v1/pre-reboot", "true", _body(group="a b"), "bad_request"),
        ("/v2/other", "true", _body(), "not_found"),
    ]:
        with pytest.raises(FleetLockError) as info:
            parse_fleetlock_request(path, header, body)
        assert info.value.kind == kind and info.value.status in (400, 404)


def test_outcomes_are_recursive() -> None:
    req = parse_fleetlock_request("/v1/pre-reboot", "true", _body())
    assert outcome(req, None) is None
    assert outcome(req, HolderExists()) is None
    full = outcome(req, SemaphoreFull(0))
    assert full is not None and (full.status, full.kind) == (409, "failed_lock_semaphore_full")
    down = outcome(req, KVError(0, "no endpoint"))
    assert down is not None and down.status == 503
    assert outcome(req, SemaphoreFull(0), ("c988d2509fdf5cdcbed39037c56406fb",)) is None


async def _exercise(etcd_url: str) -> None:
    (port,) = free_ports(1)
    app = make_fleetlock_app(lambda group: LockClient(ClientKeys.connect([etcd_url]), group))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    hdr = {"fleet-lock-protocol": "true"}
    try:
        async with aiohttp.ClientSession() as s:

            async def post(
                path: str, body: bytes, headers: dict[str, str] = hdr
            ) -> tuple[int, str]:
                async with s.post(base + path, data=body, headers=headers) as r:
                    return r.status, await r.text()

            group = "fleet-a"
            assert (await post("/v1/pre-reboot", _body("n1", group)))[0] == 200
            assert (await post("/v1/pre-reboot", _body("n1", group)))[0] == 200  # recursive
            status, text = await post("/v1/pre-reboot", _body("n2", group))
            assert status == 409 and json.loads(text)["kind"] == "failed_lock_semaphore_full"
            assert (await post("/v1/steady-state", _body("n1", group)))[0] == 200
            assert (await post("/v1/steady-state", _body("n1", group)))[0] == 200  # not held: ok
            assert (await post("/v1/pre-reboot", _body("n2", group)))[0] == 200
            status, text = await post("/v1/pre-reboot", _body("n3", group), headers={})
            assert status == 400 and json.loads(text)["kind"] == "missing_protocol_header"
            # the "default" group is locksmith's cluster-wide semaphore
            loc = LockClient(ClientKeys.connect([etcd_url]))
            loc.init()
            loc.apply(SetMax(2))
            loc.apply(Lock("locksmith-machine"))
            assert (await post("/v1/pre-reboot", _body("zincati-node")))[0] == 200
            sem, _ = loc.get()
            assert sem.holder_list == ("locksmith-machine", "zincati-node")
            loc.apply(Unlock("locksmith-machine"))
            assert (await post("/v1/steady-state", _body("zincati-node")))[0] == 200
            assert loc.get()[0].holder_list == ()
    finally:
        await runner.cleanup()


@pytest.mark.interop
def test_fleetlock_over_http_against_real_etcd(real_etcd: ServerProcess) -> None:
    asyncio.run(_exercise(real_etcd.client_url))


@pytest.mark.interop
def test_fleetlock_command_serves(real_etcd: ServerProcess) -> None:
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    (port,) = free_ports(1)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corral",
            "locksmith",
            "--endpoint",
            real_etcd.client_url,
            "fleetlock",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/pre-reboot",
            data=_body("node-x"),
            headers={"fleet-lock-protocol": "true"},
            method="POST",
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    assert resp.status == 200
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "fleetlock never answered"
                time.sleep(0.1)
        sem, _ = LockClient(ClientKeys.connect([real_etcd.client_url])).get()
        assert sem.holder_list == ("node-x",)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
