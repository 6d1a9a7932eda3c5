"""`corral etcd` with a three-member --initial-cluster runs the replicated member behind the
same HTTP layer: a write on one member is read on another, and /v2/members lists all three."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from corral.testing.servers import corral_etcd_command, start_cluster


def _put(url: str) -> dict[str, object] | None:
    req = urllib.request.Request(url + "/v2/keys/x", data=b"value=1", method="PUT")
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            doc = json.loads(r.read())
            assert isinstance(doc, dict)
            return doc
    except urllib.error.HTTPError as err:
        assert err.code == 500, err.read()  # no leader yet: etcd's 300 "request timed out"
        return None


def _has_leader(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v2/members/leader", timeout=5) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


def test_three_member_cluster_through_the_cli(tmp_path: Path) -> None:
    with start_cluster(corral_etcd_command(), tmp_path / "c", size=3, prefix="r") as members:
        deadline = time.monotonic() + 60
        while not _has_leader(members[0].client_url):  # /v2/members/leader: 503 until then
            assert time.monotonic() < deadline, "no leader elected"
            time.sleep(0.05)
        doc = None
        while doc is None:
            assert time.monotonic() < deadline, "the cluster never accepted a write"
            doc = _put(members[0].client_url)
        index = doc["node"]["modifiedIndex"]  # type: ignore[index]
        with urllib.request.urlopen(members[2].client_url + "/v2/keys/x?quorum=true") as r:
            got = json.loads(r.read())
        assert got["node"]["value"] == "1" and got["node"]["modifiedIndex"] == index
        with urllib.request.urlopen(members[1].client_url + "/v2/members") as r:
            names = sorted(m["name"] for m in json.loads(r.read())["members"])
        assert names == ["r0", "r1", "r2"]
