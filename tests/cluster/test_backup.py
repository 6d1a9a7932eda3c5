"""Backup and restore on real `corral etcd` processes (etcd's v2 disaster recovery).

A 3-member cluster holds keys, a directory and a TTL key; one member is stopped and copied
with `corral kv backup`; the copy starts alone with `--force-new-cluster` and has every key,
accepts writes, and grows back with `member add` + `--initial-cluster-state existing`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from corral.cli.kv import cli as kv_cli
from corral.testing.nemesis import FAST_TIMERS, command_for, start_members
from corral.testing.ports import free_ports
from corral.testing.servers import ServerProcess
from corral.testing.workload import converged, eventually, http_json

# Small snapshots: the copy holds a snapshot and WAL entries after it.
ARGS = (*FAST_TIMERS, "--snapshot-count=25")


def kv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", "kv", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def kv_here(*args: str) -> tuple[int, str]:
    """`corral kv ARGS` in this process (for the quick refusals): (exit code, stderr)."""
    result = CliRunner().invoke(kv_cli, list(args))
    assert "Traceback" not in result.stderr
    return result.exit_code, result.stderr


def _fill(url: str) -> None:
    for i in range(40):
        status, _, _ = http_json("PUT", f"{url}/v2/keys/data/k{i}", {"value": f"v{i}"})
        assert status in (200, 201)
    assert http_json("PUT", f"{url}/v2/keys/data/dir?dir=true")[0] == 201
    assert http_json("PUT", f"{url}/v2/keys/data/dir/inner", {"value": "in"})[0] == 201
    assert http_json("PUT", f"{url}/v2/keys/data/ttl", {"value": "t", "ttl": "600"})[0] == 201


def _node(url: str, key: str) -> dict[str, Any]:
    status, _, doc = http_json("GET", f"{url}/v2/keys{key}?quorum=true")
    assert status == 200, doc
    node: dict[str, Any] = doc["node"]
    return node


def _members(url: str) -> list[dict[str, Any]]:
    status, _, doc = http_json("GET", f"{url}/v2/members")
    assert status == 200
    members: list[dict[str, Any]] = doc["members"]
    return members


def _member(name: str, data_dir: Path, initial: str, state: str, *extra: str) -> ServerProcess:
    client, peer = free_ports(2)
    return ServerProcess(
        command=command_for("corral"),
        name=name,
        data_dir=data_dir,
        client_port=client,
        peer_port=peer,
        initial_cluster=initial.replace("PEER", f"http://127.0.0.1:{peer}"),
        cluster_state=state,
        extra_args=(*ARGS, *extra),
    )


def _check_data(url: str) -> None:
    for i in (0, 17, 39):
        assert _node(url, f"/data/k{i}")["value"] == f"v{i}"
    d = _node(url, "/data/dir")
    assert d.get("dir") is True and [n["key"] for n in d["nodes"]] == ["/data/dir/inner"]
    ttl = _node(url, "/data/ttl")
    assert ttl["value"] == "t" and 0 < ttl["ttl"] <= 600 and "expiration" in ttl


def test_backup_then_force_new_cluster_then_grow(tmp_path: Path) -> None:
    with start_members(command_for("corral"), tmp_path / "old", extra_args=ARGS) as members:
        _fill(members[0].client_url)
        old_ids = {m["id"] for m in _members(members[0].client_url)}
        _, headers, _ = http_json("GET", members[0].client_url + "/v2/keys/data")
        old_cluster = headers["X-Etcd-Cluster-Id"]
        eventually(lambda: converged(members, "/data"), what="the old members converge")
        backup_dir = tmp_path / "backup"

        running = kv_here(
            "backup", "--data-dir", str(members[0].data_dir), "--backup-dir", str(backup_dir)
        )
        assert running[0] == 1 and "in use by a running member" in running[1], running
        assert not backup_dir.exists()

        members[2].stop()
        done = kv("backup", "--data-dir", str(members[2].data_dir), "--backup-dir", str(backup_dir))
        assert done.returncode == 0, done.stderr
        assert list((backup_dir / "member" / "snap").glob("*.snap")), "no snapshot copied"
        again = kv_here(
            "backup", "--data-dir", str(members[2].data_dir), "--backup-dir", str(backup_dir)
        )
        assert again[0] == 1 and "to be empty" in again[1], again

    # The copy starts alone, whatever --initial-cluster says, as etcd's does.
    restored = _member("r0", backup_dir, "r0=PEER", "new", "--force-new-cluster")
    joiner: ServerProcess | None = None
    try:
        restored.start()
        restored.wait_ready(30)
        url = restored.client_url
        _check_data(url)
        only = _members(url)
        assert len(only) == 1 and only[0]["id"] not in old_ids, only
        assert only[0]["name"] == "r0" and only[0]["peerURLs"] == [restored.peer_url]
        _, headers, _ = http_json("GET", url + "/v2/keys/data")
        assert headers["X-Etcd-Cluster-Id"] != old_cluster
        assert http_json("PUT", url + "/v2/keys/data/after", {"value": "a"})[0] == 201

        # Grow back: member add, then start the new member with `existing`.
        client, peer = free_ports(2)
        peer_url = f"http://127.0.0.1:{peer}"
        added = kv("--endpoints", url, "member", "add", "r1", peer_url)
        assert added.returncode == 0, added.stderr
        joiner = ServerProcess(
            command=command_for("corral"),
            name="r1",
            data_dir=tmp_path / "r1.etcd",
            client_port=client,
            peer_port=peer,
            initial_cluster=f"r0={restored.peer_url},r1={peer_url}",
            cluster_state="existing",
            extra_args=ARGS,
        )
        joiner.start()
        joiner.wait_ready(30)
        both = [restored, joiner]
        state = eventually(lambda: converged(both, "/data"), timeout=30, what="r0 and r1 converge")
        assert state["/data/after"] == "a" and state["/data/k39"] == "v39"
        _check_data(joiner.client_url)
        assert http_json("PUT", joiner.client_url + "/v2/keys/data/later", {"value": "l"})[0] == 201
        eventually(lambda: converged(both, "/data"), timeout=30, what="the write reaches r0")
        assert len(_members(joiner.client_url)) == 2
    finally:
        for m in (joiner, restored):
            if m is not None:
                m.stop()


def test_force_new_cluster_on_a_member_keeps_its_id_and_every_key(tmp_path: Path) -> None:
    """Without a backup: a stopped member restarted with the flag is a one-member cluster of
    its own id (the others removed), holding every committed key. The new configuration is
    durable at once: the member dies (on a disk that loses what was not fsynced) at its first
    write after the forced one, and a restart without the flag is still a cluster of one."""
    with start_members(command_for("corral"), tmp_path, extra_args=ARGS) as members:
        _fill(members[0].client_url)
        eventually(lambda: converged(members, "/data"), what="members converge")
        ids = {m["name"]: m["id"] for m in _members(members[0].client_url)}
        for m in members:
            m.stop()
        lone = members[1]
        lone.extra_args = (*ARGS, "--force-new-cluster")
        lone.env = {"CORRAL_DISK": "volatile", "CORRAL_FAILPOINTS": "raft_before_save=crash@2"}
        lone.start()
        assert lone.proc is not None
        assert lone.proc.wait(timeout=60) == -signal.SIGKILL, lone.log_tail()
        lone.extra_args = ARGS
        lone.env = {"CORRAL_DISK": "volatile"}
        lone.start()
        lone.wait_ready(30)
        _check_data(lone.client_url)
        only = _members(lone.client_url)
        assert [m["id"] for m in only] == [ids[lone.name]]
        assert http_json("PUT", lone.client_url + "/v2/keys/data/after", {"value": "a"})[0] == 201
