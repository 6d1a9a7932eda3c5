"""fleet API v1 writes on real `corral fleetd` processes (real etcd 3.4 as the store).

Status codes and error texts are those of coreos/fleet ``api/units.go`` (``set``,
``destroy``), ``api/serialization.go`` (Content-Type) and ``api/mux.go``; `corral fleet`
pointed at a fleetd's API URL submits, starts and destroys through it as fleetctl does.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from corral.cli.fleet import cli
from corral.testing.ports import free_ports
from corral.testing.servers import ServerProcess

pytestmark = pytest.mark.interop

IDS = {"aaaaaaaa1111111111111111111111a1": "role=web", "bbbbbbbb2222222222222222222222b2": ""}
UNIT_OPTS = [
    {"section": "Unit", "name": "Description", "value": "api test"},
    {"section": "Service", "name": "ExecStart", "value": "/bin/sleep 1000"},
]


def poll(fn: Callable[[], bool], limit: float = 40.0, what: str = "") -> None:
    deadline = time.monotonic() + limit
    while not fn():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit}s: {what}")
        time.sleep(0.2)


@pytest.fixture
def api(real_etcd: ServerProcess, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(etcd URL, first fleetd's API URL) with two fleetd machines running."""
    ports = free_ports(len(IDS))
    procs = []
    for (mid, meta), port in zip(IDS.items(), ports, strict=True):
        cmd = [
            sys.executable, "-m", "corral", "fleetd", "--runner", "memory",
            "--machine-id", mid, "--etcd-servers", real_etcd.client_url,
            "--metadata", meta, "--public-ip", f"10.0.0.{mid[-1]}", "--agent-ttl", "5s",
            "--engine-reconcile-interval", "0.5", "--agent-reconcile-interval", "1",
            "--api-listen", f"127.0.0.1:{port}",
        ]  # fmt: skip
        log = (tmp_path / f"{mid[:8]}.log").open("wb")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
    url = f"http://127.0.0.1:{ports[0]}"
    try:

        def up() -> bool:
            try:
                return len(call("GET", url + "/fleet/v1/machines")[1]["machines"]) == 2
            except (OSError, KeyError, TypeError):
                return False

        poll(up, what="both machines registered, API answering")
        yield real_etcd.client_url, url
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def call(
    method: str,
    url: str,
    body: Any = None,
    ctype: str | None = "application/json",
    raw: bytes | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One request with exactly the headers given (http.client adds no Content-Type)."""
    u = urllib.parse.urlsplit(url)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=10)
    try:
        conn.putrequest(method, u.path)
        if ctype is not None and data is not None:
            conn.putheader("Content-Type", ctype)
        conn.putheader("Content-Length", str(len(data or b"")))
        conn.endheaders(data)
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, json.loads(payload) if payload.strip() else None, dict(resp.headers)
    finally:
        conn.close()


def error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def test_put_and_delete_status_codes_and_errors(api: tuple[str, str]) -> None:
    _, base = api
    units = base + "/fleet/v1/units"
    a = units + "/a.service"

    st, body, headers = call("PUT", a, {"options": UNIT_OPTS}, ctype=None)
    assert (st, body) == (415, error(415, "expected 1 Content-Type, got 0"))
    assert headers["Server"].startswith("fleetd/")
    st, body, _ = call("PUT", a, {"options": UNIT_OPTS}, ctype="text/plain")
    assert (st, body) == (415, error(415, "only acceptable Content-Type is application/json"))
    st, body, _ = call("PUT", a, raw=b"{not json")
    assert st == 400 and body["error"]["message"].startswith("unable to decode body: ")
    st, body, _ = call("PUT", a, {"name": 5})
    assert st == 400 and body["error"]["message"].startswith("unable to decode body: ")
    st, body, _ = call("PUT", a, {"name": "b.service", "options": UNIT_OPTS})
    assert (st, body) == (
        400,
        error(400, 'name in URL "a.service" differs from unit name in request body "b.service"'),
    )
    st, body, _ = call("PUT", units + "/nodot", {"options": UNIT_OPTS})
    assert (st, body) == (400, error(400, 'unit name must contain "."'))
    st, body, _ = call("PUT", a, {"desiredState": "launched"})
    assert (st, body) == (409, error(409, "unit does not exist and options field empty"))
    bad = [*UNIT_OPTS, {"section": "X-Fleet", "name": "MachineID", "value": "x"}]
    bad.append({"section": "X-Fleet", "name": "Conflicts", "value": "b*"})
    st, body, _ = call("PUT", a, {"options": bad})
    assert (st, body) == (400, error(400, "MachineID cannot be used with Conflicts"))
    st, body, _ = call("PUT", a, {"options": UNIT_OPTS, "desiredState": "bogus"})
    assert (st, body) == (400, error(400, 'invalid value "bogus" for JobState'))
    assert call("GET", a)[0] == 404  # nothing was written by the refused requests

    # create (no desiredState: inactive), then the state-only update rules
    assert call("PUT", a, {"name": "a.service", "options": UNIT_OPTS})[:2] == (201, None)
    st, body, _ = call("GET", a)
    assert (st, body["desiredState"], body["options"]) == (200, "inactive", UNIT_OPTS)
    st, body, _ = call("PUT", a, {"options": UNIT_OPTS})  # same text, no state
    assert (st, body) == (409, error(409, "must provide DesiredState to update existing unit"))
    assert call("PUT", a, {"desiredState": "launched"})[:2] == (204, None)

    def launched() -> bool:
        got = call("GET", a)[1]
        return got.get("currentState") == "launched" and got.get("machineID") in IDS

    poll(launched, what="a.service launched on a machine")

    # same name, new text: a replacement (201), the state is the one given
    new_opts = [{"section": "Service", "name": "ExecStart", "value": "/bin/sleep 2000"}]
    assert call("PUT", a, {"options": new_opts, "desiredState": "launched"})[0] == 201
    assert call("GET", a)[1]["options"] == new_opts

    # templates: submitted fine, never activated
    t = units + "/t@.service"
    assert call("PUT", t, {"options": UNIT_OPTS})[0] == 201
    st, body, _ = call("PUT", t, {"desiredState": "launched"})
    assert (st, body) == (400, error(400, 'cannot activate template "t@.service"'))
    assert call("PUT", t, {"desiredState": "inactive"})[0] == 204
    st, body, _ = call(
        "PUT", units + "/u@.service", {"options": UNIT_OPTS, "desiredState": "loaded"}
    )
    assert (st, body) == (400, error(400, 'cannot activate template "u@.service"'))

    # DELETE, and the methods and paths fleet refuses
    assert call("DELETE", a)[:2] == (204, None)
    assert call("DELETE", a)[:2] == (404, error(404, "unit does not exist"))
    assert call("GET", a)[0] == 404
    st, body, _ = call("POST", units, {"options": UNIT_OPTS})
    assert (st, body) == (405, error(405, "only GET supported against this resource"))
    st, body, _ = call("PATCH", t, {})
    assert (st, body) == (
        405,
        error(405, "only GET, PUT and DELETE supported against this resource"),
    )
    assert call("GET", base + "/nothing/here")[:2] == (404, error(404, ""))
    assert call("GET", base + "/")[:2] == (405, error(405, ""))


def test_corral_fleet_through_the_api_submits_starts_and_destroys(
    api: tuple[str, str], tmp_path: Path
) -> None:
    etcd_url, base = api
    r = CliRunner()

    def fleet(*args: str, endpoint: str = base) -> Result:
        return r.invoke(cli, ["--endpoint", endpoint, "--block-poll", "0.1", *args])

    (tmp_path / "hello.service").write_text("[Service]\nExecStart=/bin/sleep 1000\n")
    (tmp_path / "web.service").write_text(
        "[Service]\nExecStart=/bin/sleep 1000\n\n[X-Fleet]\nMachineMetadata=role=web\n"
    )
    res = fleet("submit", str(tmp_path / "hello.service"))
    assert (res.exit_code, res.output) == (0, "Unit hello.service inactive\n")
    # the unit went through fleetd into the registry: the KV driver sees it too
    res = fleet("list-unit-files", "--no-legend", "--fields", "unit,dstate", endpoint=etcd_url)
    assert res.output == "hello.service\tinactive\n"
    res = fleet("start", "--block-attempts", "20", str(tmp_path / "web.service"))
    assert res.exit_code == 0, res.output
    assert res.output == (
        "Unit web.service inactive\nUnit web.service launched on aaaaaaaa.../10.0.0.1\n"
    )
    res = fleet("start", "--block-attempts", "20", "hello")
    assert res.exit_code == 0 and "Unit hello.service launched on " in res.output

    def listed() -> bool:
        out = fleet("list-units", "--no-legend", "--fields", "unit,active").output
        return out == "hello.service\tactive\nweb.service\tactive\n"

    poll(listed, what="both units active in list-units through the API")
    assert fleet("cat", "web").output.endswith("MachineMetadata=role=web\n")
    res = fleet("stop", "--block-attempts", "20", "web")
    assert res.exit_code == 0 and "Unit web.service loaded on aaaaaaaa.../10.0.0.1" in res.output
    where = call("GET", base + "/fleet/v1/units/hello.service")[1]["machineID"]
    res = fleet("move", "hello", next(m for m in IDS if m != where))
    assert res.exit_code == 1 and "use --driver etcd" in res.output
    assert "Traceback" not in res.output
    res = fleet("destroy", "hello", "web")
    assert (res.exit_code, res.output) == (0, "Destroyed hello.service\nDestroyed web.service\n")
    assert fleet("list-unit-files", "--no-legend", endpoint=etcd_url).output == ""
    assert fleet("destroy", "hello").output == "Units not found in registry\n"
