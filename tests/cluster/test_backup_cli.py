"""`corral kv backup` on a stopped member's data dir: what the copy holds, and clear errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from click.testing import CliRunner

from corral.cli.kv import cli as kv_cli
from corral.kv.backup import new_ids, strip_membership
from corral.kv.cluster import member_ids_in, standalone_conf_changes
from corral.raft import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Snapshot,
    SnapshotMetadata,
    decode_conf_change,
    encode_conf_change,
)
from corral.storage.wal import WAL
from corral.testing.servers import corral_etcd_command, start_cluster
from corral.testing.workload import http_json


def kv(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`corral kv ARGS` as a real process (what it leaves on disk is what a crash leaves)."""
    return subprocess.run(
        [sys.executable, "-m", "corral", "kv", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def kv_here(*args: str) -> tuple[int, str]:
    """`corral kv ARGS` in this process: (exit code, stderr)."""
    result = CliRunner().invoke(kv_cli, list(args))
    return result.exit_code, result.stderr


@pytest.fixture(scope="module")
def stopped_member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The data dir of a one-member cluster that took writes and was stopped (no snapshot)."""
    base = tmp_path_factory.mktemp("src")
    with start_cluster(corral_etcd_command(), base, 1, ("--enable-v2=true",)) as (m,):
        for i in range(10):
            assert http_json("PUT", f"{m.client_url}/v2/keys/k{i}", {"value": str(i)})[0] == 201
    yield m.data_dir


@pytest.fixture
def data_dir(stopped_member: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "src.etcd"
    shutil.copytree(stopped_member, copy)
    return copy


def test_the_copy_has_new_ids_no_membership_and_every_entry(data_dir: Path, tmp_path: Path) -> None:
    src = WAL.read(data_dir / "member" / "wal")
    out = tmp_path / "backup"
    # A volatile disk loses what the backup did not fsync when the command exits.
    p = kv(
        "backup",
        "--data-dir",
        str(data_dir),
        "--backup-dir",
        str(out),
        env={"CORRAL_DISK": "volatile"},
    )
    assert p.returncode == 0, p.stderr
    assert "ignoring EntryConfChange raft entry" in p.stderr
    assert "ignoring member attribute update on /0/members/" in p.stderr
    got = WAL.read(out / "member" / "wal")
    assert got.metadata["member_id"] != src.metadata["member_id"]
    assert got.metadata["cluster_id"] != src.metadata["cluster_id"]
    assert got.metadata["initial"] == {}
    assert got.hard_state == src.hard_state
    assert [(e.index, e.term) for e in got.entries] == [(e.index, e.term) for e in src.entries]
    assert not any(e.type == EntryType.CONF_CHANGE for e in got.entries)
    kept = [e for e in src.entries if e.data and e.type == EntryType.NORMAL]
    kept_data = {e.data for e in got.entries if e.data}
    writes = [e for e in kept if msgpack.unpackb(e.data)[1] == 0]
    assert len(writes) >= 10 and all(e.data in kept_data for e in writes)


def test_errors_are_clear(data_dir: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "backup")
    missing = kv_here("backup", "--data-dir", str(tmp_path / "nope"), "--backup-dir", out)
    assert missing[0] == 1 and "does not exist" in missing[1]
    (tmp_path / "empty").mkdir()
    empty = kv_here("backup", "--data-dir", str(tmp_path / "empty"), "--backup-dir", out)
    assert empty[0] == 1 and "not a member's data dir" in empty[1]
    no_flags = kv_here("backup")
    assert no_flags[0] == 1 and "--data-dir" in no_flags[1]

    seg = sorted((data_dir / "member" / "wal").glob("*.wal"))[0]
    data = bytearray(seg.read_bytes())
    data[data.find(b"k1") + 1] ^= 0xFF  # inside an early entry, intact records follow
    seg.write_bytes(bytes(data))
    corrupt = kv_here("backup", "--data-dir", str(data_dir), "--backup-dir", out)
    assert corrupt[0] == 1 and seg.name in corrupt[1] and "corrupt" in corrupt[1]
    for _code, err in (missing, empty, no_flags, corrupt):
        assert "Traceback" not in err and err.startswith("Error:  "), err
    assert not WAL.exists(tmp_path / "backup" / "member" / "wal")


def test_ids_are_etcds_generator() -> None:
    # idutil.NewGenerator(0, t): low 40 bits of the Unix ms, shifted by 8, then a counter.
    assert new_ids(0x12_3456_789A) == (0x12_3456_789A_01, 0x12_3456_789A_02)
    assert new_ids((1 << 40) + 5) == (0x501, 0x502)


def test_strip_membership_keeps_indexes_and_terms() -> None:
    write = msgpack.packb([1, 0, 5, 1, b"cmd"])
    attrs = msgpack.packb([1, 1, 0xAB, "n", ["http://c"]])
    urls = msgpack.packb([1, 2, 5, 2, 0xAB, ["http://p"]])
    ents = [
        Entry(1, 1, EntryType.CONF_CHANGE, b"cc"),
        Entry(1, 2, EntryType.NORMAL, attrs),
        Entry(2, 3, EntryType.NORMAL, write),
        Entry(2, 4, EntryType.NORMAL, urls),
        Entry(2, 5, EntryType.NORMAL, b""),
    ]
    out, notes = strip_membership(ents)
    assert [(e.index, e.term) for e in out] == [(e.index, e.term) for e in ents]
    assert [e.data for e in out] == [b"", b"", write, b"", b""]
    assert notes[1] == "ignoring member attribute update on /0/members/ab/attributes"
    assert len(notes) == 3


def test_force_new_cluster_adds_self_first_then_removes_the_others() -> None:
    def cc(kind: ConfChangeType, node: int, index: int) -> Entry:
        return Entry(1, index, EntryType.CONF_CHANGE, encode_conf_change(ConfChange(kind, node)))

    snap = Snapshot(SnapshotMetadata(10, 1, ConfState(voters=(1, 2, 3))), b"")
    log = [cc(ConfChangeType.ADD_NODE, 4, 11), cc(ConfChangeType.REMOVE_NODE, 2, 12)]
    assert member_ids_in(snap, log) == {1, 3, 4}
    assert member_ids_in(None, log) == {4}

    forced = standalone_conf_changes({1, 3, 4}, 9, ("http://p:1",), term=5, index=12)
    changes = [decode_conf_change(e.data) for e in forced]
    assert [(e.index, e.term, e.type) for e in forced] == [
        (i, 5, EntryType.CONF_CHANGE) for i in (13, 14, 15, 16)
    ]
    assert [(c.type, c.node_id) for c in changes] == [
        (ConfChangeType.ADD_NODE, 9),
        (ConfChangeType.REMOVE_NODE, 1),
        (ConfChangeType.REMOVE_NODE, 3),
        (ConfChangeType.REMOVE_NODE, 4),
    ]
    assert msgpack.unpackb(changes[0].context)[1] == ["http://p:1"]
    # Already a member: only the others go; alone already: nothing to do.
    kept = standalone_conf_changes({1, 3}, 3, ("http://p:1",), term=2, index=7)
    assert [(decode_conf_change(e.data).node_id, e.index) for e in kept] == [(1, 8)]
    assert standalone_conf_changes({3}, 3, ("http://p:1",), term=2, index=7) == []
