"""`member add/list/remove` by etcdctl and by `corral kv` on a 3-member cluster.

A 3-member cluster keeps its quorum with one added (never started) member, so both tools
can add a member, list it as unstarted, and remove it again. Outputs must be equal once
ports, member ids and names are replaced by placeholders.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.client import ClientError, SyncClient
from corral.client.testkit import Outcome, normalize, run_corral_kv, run_etcdctl, server_cluster
from corral.testing.ports import free_port
from corral.testing.servers import ServerProcess

pytestmark = pytest.mark.interop

Runner = Callable[[str, list[str], str], Outcome]


def _session(run: Runner, members: list[ServerProcess]) -> list[tuple[int, str, str]]:
    ep = members[0].client_url
    new_peer = f"http://127.0.0.1:{free_port()}"
    reps = {m.client_url: f"<C{i}>" for i, m in enumerate(members)}
    reps.update({m.peer_url: f"<P{i}>" for i, m in enumerate(members)})
    reps[new_peer] = "<NEWPEER>"
    with SyncClient(ep) as c:
        reps.update({m.id: f"<ID-{m.name}>" for m in c.members()})
    added = run(ep, ["member", "add", "newbie", new_peer], "")
    found = re.search(r"with ID ([0-9a-f]+) to cluster", added.stdout)
    assert found, added
    new_id = found.group(1)
    reps[new_id] = "<NEWID>"
    steps = [added, run(ep, ["member", "list"], ""),
             run(ep, ["member", "remove", new_id], ""),
             run(ep, ["member", "remove", new_id], ""),
             run(ep, ["member", "list"], "")]
    return [(o.code, _canonical(normalize(o.stdout, reps)), normalize(o.stderr, reps))
            for o in steps]


def _canonical(text: str) -> str:
    """Member order follows the (random) new member id: sort lists before comparing."""
    def sort_items(m: re.Match[str]) -> str:
        return m.group(1) + ",".join(sorted(m.group(2).split(","))) + '"'

    text = re.sub(r'(ETCD_INITIAL_CLUSTER=")([^"]*)"', sort_items, text)
    if text.startswith("<ID-") or "[unstarted]" in text:
        text = "".join(sorted(text.splitlines(keepends=True)))
    return text


def _wait_reconfigurable(members: list[ServerProcess], timeout: float = 60) -> None:
    """Poll until the cluster accepts a membership change (etcd waits for a settled leader)."""
    deadline = time.monotonic() + timeout
    with SyncClient([m.client_url for m in members]) as c:
        while True:
            try:
                probe = c.add_member([f"http://127.0.0.1:{free_port()}"])
                c.remove_member(probe.id)
                return
            except ClientError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@pytest.mark.parametrize("server_kind", ["etcd", "corral"])
def test_member_add_list_remove(server_kind: str, tmp_path: Path) -> None:
    try:
        cm = server_cluster(server_kind, tmp_path / server_kind, size=3)
        members = cm.__enter__()
    except (RuntimeError, TimeoutError) as exc:
        if server_kind == "corral":
            pytest.xfail(f"corral etcd does not start yet: {str(exc)[-300:]}")
        raise
    try:
        with SyncClient(members[0].client_url) as c:
            if len(c.members()) != 3 and server_kind == "corral":
                pytest.xfail("corral's members did not form one cluster")
        _wait_reconfigurable(members)
        by_etcdctl = _session(run_etcdctl, members)
        by_kv = _session(run_corral_kv, members)
    finally:
        for m in members:
            m.kill()  # the data is thrown away: no need for a graceful stop
        cm.__exit__(None, None, None)
    assert by_kv == by_etcdctl
    assert "<NEWID>[unstarted]: peerURLs=<NEWPEER>" in by_kv[1][1]
    assert by_kv[2] == (0, "Removed member <NEWID> from cluster\n", "")
    assert by_kv[3][0] == 1 and "<NEWID>" not in by_kv[4][1]
