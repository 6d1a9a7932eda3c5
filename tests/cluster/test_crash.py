"""Crash tests on a real 3-member `corral etcd` with `CORRAL_DISK=volatile` (what was not
fsynced is lost on kill -9, as on a power cut).

Under a write load one member dies at a failpoint on its write path; at that moment the two
others lose power too (kill -9). After a restart every acknowledged write is there and the
members converge (same keys, values and X-Etcd-Index). Torn and corrupted WAL tails are
repaired or refused with a clear message. With the WAL's fsync made a no-op the same check
finds lost writes, so the fsyncs are what keeps acknowledged writes.
"""

from __future__ import annotations

import signal
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from corral.testing.nemesis import command_for, patched_corral_command, start_members
from corral.testing.servers import ServerProcess
from corral.testing.workload import converged, eventually, http_json

VOLATILE = {"CORRAL_DISK": "volatile"}
PREFIX = "/crash"
# Small snapshots so the snapshot failpoints are reached within a short load.
ARGS = ("--heartbeat-interval=50", "--election-timeout=500", "--snapshot-count=40")


@dataclass
class Load:
    """Writers of unique keys; `acked` holds what the cluster acknowledged."""

    members: list[ServerProcess]
    prefix: str = PREFIX
    acked: dict[str, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, writers: int = 4) -> None:
        for w in range(writers):
            t = threading.Thread(target=self._write, args=(w,), daemon=True)
            t.start()
            self.threads.append(t)

    def _write(self, w: int) -> None:
        member = self.members[w % len(self.members)]
        n = 0
        while not self.stop.is_set():
            n += 1
            key, value = f"{self.prefix}/w{w}/{n}", f"v{w}-{n}"
            try:
                status, _, _ = http_json(
                    "PUT", member.client_url + "/v2/keys" + key, {"value": value}, timeout=1
                )
            except OSError:
                self.stop.wait(0.05)
                continue
            if status in (200, 201):
                with self.lock:
                    self.acked[key] = value

    def finish(self) -> dict[str, str]:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)
        with self.lock:
            return dict(self.acked)


def _restart_all(members: list[ServerProcess], env: dict[int, dict[str, str]]) -> None:
    for m in members:
        m.kill()  # power cut: everything not fsynced is gone
    for i, m in enumerate(members):
        m.env = dict(env.get(i, VOLATILE))
        m.start()
    for m in members:
        m.wait_ready(30)


def _missing_after_restart(members: list[ServerProcess], acked: dict[str, str]) -> list[str]:
    """Acknowledged writes absent (or changed) once the restarted members converge."""
    state = eventually(lambda: converged(members, PREFIX), timeout=60, what="members converge")
    return sorted(k for k, v in acked.items() if state.get(k) != v)


FAILPOINTS = (
    "raft_before_save",
    "wal_before_fsync",
    "wal_after_fsync",
    "snap_before_rename",
    "snap_after_rename",
)


def _armed(round_: int, failpoint: str) -> dict[int, dict[str, str]]:
    """Round r arms `failpoint` on member r mod 3, late enough that the load is running."""
    nth = 2 if failpoint.startswith("snap") else 60
    return {round_ % 3: {**VOLATILE, "CORRAL_FAILPOINTS": f"{failpoint}=crash@{nth}"}}


def test_crash_at_each_failpoint_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """One cluster, one round per failpoint: the armed member dies there under load, the
    others lose power at once; after the restart every write acknowledged so far (in any
    round) is present and the members agree."""
    acked: dict[str, str] = {}
    env = _armed(0, FAILPOINTS[0])
    with start_members(command_for("corral"), tmp_path, extra_args=ARGS, env=env) as members:
        for r, failpoint in enumerate(FAILPOINTS):
            victim = members[r % 3]
            load = Load(members, prefix=f"{PREFIX}/r{r}")
            load.start()
            eventually(
                lambda v=victim: v.proc.poll() if v.proc else None,
                timeout=60,
                what=f"{victim.name} reaches failpoint {failpoint}",
            )
            assert victim.proc is not None
            assert victim.proc.returncode == -signal.SIGKILL, victim.log_tail()
            time.sleep(0.3)  # the two others keep acknowledging writes for a moment
            new = load.finish()
            assert len(new) >= 5, f"only {len(new)} writes acknowledged before {failpoint}"
            acked.update(new)
            last = r + 1 == len(FAILPOINTS)
            _restart_all(members, {} if last else _armed(r + 1, FAILPOINTS[r + 1]))
            assert _missing_after_restart(members, acked) == [], f"after {failpoint}"


NO_WAL_FSYNC = "import corral.storage.disk as d\nd._VolatileFile.fsync = lambda self: None"


def test_without_the_wal_fsync_acknowledged_writes_are_lost(tmp_path: Path) -> None:
    """The control: the same power cut with the WAL's fsync removed loses acknowledged writes
    (or the members cannot come back at all)."""
    command = patched_corral_command(NO_WAL_FSYNC)
    env = {i: VOLATILE for i in range(3)}
    with start_members(command, tmp_path, extra_args=ARGS, env=env) as members:
        load = Load(members)
        load.start()
        eventually(lambda: len(load.acked) >= 30 or None, timeout=60, what="30 writes acked")
        acked = load.finish()
        try:
            _restart_all(members, {})
            missing = _missing_after_restart(members, acked)
        except (RuntimeError, TimeoutError, AssertionError) as e:
            missing = [f"cluster did not recover: {e}"]
        print(f"without the WAL fsync: {len(missing)} of {len(acked)} acknowledged writes lost")
        assert missing, "acknowledged writes survived without fsync: the crash test proves nothing"


# -- torn and corrupted WAL tails


def _records(segment: Path) -> list[tuple[int, int]]:
    """(offset, length) of each record in a WAL segment (u32 len | u32 crc | u8 type | payload)."""
    data = segment.read_bytes()
    out, pos = [], 0
    while pos + 9 <= len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        if length == 0:
            break
        out.append((pos, 9 + length))
        pos += 9 + length
    return out


def _last_segment(member: ServerProcess) -> Path:
    segments = sorted((member.data_dir / "member" / "wal").glob("*.wal"))
    assert segments, f"no WAL segments in {member.data_dir}"
    return segments[-1]


def test_torn_tail_is_repaired_and_corruption_is_refused(tmp_path: Path) -> None:
    """m0's last WAL record is torn (a crash mid-write): it is cut off and m0 rejoins with
    every acknowledged write. m1's WAL has a flipped byte in an early record (real
    corruption): m1 refuses to start, naming the segment, and the others carry on."""
    env = {i: VOLATILE for i in range(3)}
    with start_members(command_for("corral"), tmp_path, extra_args=ARGS[:2], env=env) as members:
        load = Load(members)
        load.start()
        eventually(lambda: len(load.acked) >= 30 or None, timeout=60, what="30 writes acked")
        acked = load.finish()
        torn, corrupt, healthy = members
        torn.kill()
        corrupt.kill()
        # Torn: the second half of the last record never reached the disk.
        seg = _last_segment(torn)
        off, length = _records(seg)[-1]
        data = bytearray(seg.read_bytes())
        data[off + length // 2 : off + length] = bytes(length - length // 2)
        seg.write_bytes(bytes(data))
        # Corrupt: a bit flip in an early record's payload, followed by intact records.
        bad = _last_segment(corrupt)
        records = _records(bad)
        assert len(records) >= 4, records
        data = bytearray(bad.read_bytes())
        data[records[2][0] + 9] ^= 0xFF
        bad.write_bytes(bytes(data))

        torn.start()
        corrupt.start()
        torn.wait_ready(30)
        assert _missing_after_restart([torn, healthy], acked) == []
        assert corrupt.proc is not None
        code = corrupt.proc.wait(timeout=30)
        log = corrupt.log_path.read_text(errors="replace") if corrupt.log_path else ""
        assert code != 0
        assert bad.name in log and "corrupt" in log, log[-2000:]
        status, _, _ = http_json(
            "PUT", healthy.client_url + "/v2/keys/after", {"value": "x"}, timeout=10
        )
        assert status in (200, 201)
        assert "Traceback" not in log, log[-2000:]
