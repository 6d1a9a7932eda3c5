"""The real etcd launcher that interop tests and benchmarks share."""

from __future__ import annotations

import json
import urllib.request

from corral.testing.servers import ServerProcess


def test_real_etcd_serves_v2(real_etcd: ServerProcess) -> None:
    with urllib.request.urlopen(real_etcd.client_url + "/version") as resp:
        assert json.loads(resp.read())["etcdserver"].startswith("3.4")
    req = urllib.request.Request(
        real_etcd.client_url + "/v2/keys/probe", data=b"value=1", method="PUT"
    )
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    with urllib.request.urlopen(req) as resp:
        body = json.loads(resp.read())
    assert body["node"]["value"] == "1"
