"""A nemesis for real member processes: kill -9 and restart, SIGSTOP/SIGCONT, and one-way or
full partitions, on a schedule drawn from a seeded RNG (Jepsen's nemeses, testing.md §1).

Theory of operation: `Schedule` is the pure part. From a seed, the member count and the fault
kinds allowed it draws each next step (`Fault`: kind, target members, how long the fault lasts,
how long the cluster then runs healthy); it never touches a process or a clock, so a seed names
a schedule exactly. `Nemesis` is the shell: it applies a `Fault` to `ServerProcess`es and heals
it, and counts what it did by kind (a fault run that injected nothing proves nothing).

Partitions use corral's peer-transport fault hook (members started with
`CORRAL_FAULT_INJECTION=1`): `PUT <peer-url>/debug/faults` with `{"drop_to": [...],
"drop_from": [...]}` (hex member ids). A full partition isolates the targets from everyone
else both ways; a one-way partition makes the targets drop what they send to the others (the
others still reach them). Healing clears every member's lists. Real etcd has no such hook, so
against it only kill and pause are available (`KINDS_WITHOUT_HOOK`).

At most a minority is faulted at a time, so the cluster can always make progress once a step
heals; every fault is healed before the next one starts.
"""

from __future__ import annotations

import contextlib
import enum
import json
import random
import signal
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from corral.testing.servers import (
    ServerProcess,
    corral_etcd_command,
    real_etcd_command,
    start_cluster,
)

__all__ = [
    "ALL_KINDS",
    "KINDS_WITHOUT_HOOK",
    "Fault",
    "FaultKind",
    "Nemesis",
    "NemesisError",
    "Schedule",
    "command_for",
    "member_ids",
    "patched_corral_command",
    "start_members",
]

#: Fast Raft timers for both implementations: elections after a fault take well under a second.
FAST_TIMERS = ("--heartbeat-interval=50", "--election-timeout=500")


def command_for(impl: str) -> list[str]:
    """`etcd` (the real etcd 3.4) or `corral` (`corral etcd`)."""
    if impl not in ("etcd", "corral"):
        raise ValueError(f"unknown implementation {impl!r} (etcd or corral)")
    return real_etcd_command() if impl == "etcd" else corral_etcd_command()


def patched_corral_command(patch: str) -> list[str]:
    """`corral etcd`, run after executing the Python `patch` in the member process itself."""
    return [sys.executable, "-c", f"{patch}\nfrom corral.cli.main import main\nmain()", "etcd"]


@contextlib.contextmanager
def start_members(
    command: list[str],
    base_dir: Path,
    size: int = 3,
    extra_args: Sequence[str] = FAST_TIMERS,
    env: Mapping[int, Mapping[str, str]] | None = None,
    ready_timeout: float = 30.0,
) -> Iterator[list[ServerProcess]]:
    """`servers.start_cluster` with the nemesis's fast timers and members named m0, m1, …"""
    with start_cluster(
        command, base_dir, size, extra_args, prefix="m", env=env, ready_timeout=ready_timeout
    ) as members:
        yield members


class NemesisError(Exception):
    pass


class FaultKind(enum.Enum):
    KILL = "kill"  # SIGKILL, then restart on heal
    PAUSE = "pause"  # SIGSTOP, then SIGCONT on heal
    PARTITION_ONE_WAY = "partition-one-way"  # targets' outgoing traffic to the rest dropped
    PARTITION_FULL = "partition-full"  # targets cut off from the rest both ways


ALL_KINDS: tuple[FaultKind, ...] = tuple(FaultKind)
KINDS_WITHOUT_HOOK: tuple[FaultKind, ...] = (FaultKind.KILL, FaultKind.PAUSE)


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    targets: tuple[int, ...]  # member indices
    duration: float  # seconds the fault lasts
    calm: float  # seconds of healthy cluster after healing

    def describe(self) -> str:
        return f"{self.kind.value} {list(self.targets)} for {self.duration:.2f}s"


@dataclass
class Schedule:
    """Seeded fault schedule: a pure function of (seed, size, kinds, timings)."""

    seed: int
    size: int
    kinds: Sequence[FaultKind] = ALL_KINDS
    fault_time: tuple[float, float] = (0.5, 2.5)
    calm_time: tuple[float, float] = (0.5, 1.5)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("a schedule needs at least one member")
        if not self.kinds:
            raise ValueError("a schedule needs at least one fault kind")
        self.rng = random.Random(self.seed)

    def next(self) -> Fault:
        rng = self.rng
        kind = rng.choice(list(self.kinds))
        minority = max(1, (self.size - 1) // 2)
        count = rng.randint(1, minority)
        targets = tuple(sorted(rng.sample(range(self.size), count)))
        return Fault(
            kind,
            targets,
            round(rng.uniform(*self.fault_time), 3),
            round(rng.uniform(*self.calm_time), 3),
        )


def member_ids(member: ServerProcess, timeout: float = 3.0) -> dict[str, str]:
    """Peer URL → hex member id, from `GET /v2/members` on `member`."""
    with urllib.request.urlopen(member.client_url + "/v2/members", timeout=timeout) as resp:
        doc = json.loads(resp.read())
    return {m["peerURLs"][0]: m["id"] for m in doc.get("members", []) if m.get("peerURLs")}


class Nemesis:
    """Applies and heals faults on `members`; `counts` holds how many of each kind it did."""

    def __init__(self, members: Sequence[ServerProcess], restart_timeout: float = 30.0) -> None:
        self.members = list(members)
        self.restart_timeout = restart_timeout
        self.counts: Counter[str] = Counter()
        self.log: list[str] = []
        self._ids: dict[str, str] = {}
        self._killed: set[int] = set()
        self._paused: set[int] = set()
        self._partitioned = False

    # -- process faults
    def kill(self, i: int) -> None:
        self.members[i].kill()
        self._killed.add(i)
        self.counts["kill"] += 1

    def restart(self, i: int) -> None:
        m = self.members[i]
        m.start()
        try:
            m.wait_ready(self.restart_timeout)
        except (TimeoutError, RuntimeError):
            # Never leave a half-started member holding its data dir's lock: the next
            # restart would fail on the lock instead of showing why this one hung.
            m.kill()
            raise
        self._killed.discard(i)
        self.counts["restart"] += 1

    def pause(self, i: int) -> None:
        self.members[i].signal(signal.SIGSTOP)
        self._paused.add(i)
        self.counts["pause"] += 1

    def resume(self, i: int) -> None:
        self.members[i].signal(signal.SIGCONT)
        self._paused.discard(i)

    # -- partitions through the peer transport's fault hook
    def _id(self, i: int) -> str:
        if not self._ids:
            for m in self.members:
                with contextlib.suppress(OSError, ValueError):
                    self._ids = member_ids(m)
                    break
        try:
            return self._ids[self.members[i].peer_url]
        except KeyError:
            raise NemesisError(f"no member id known for {self.members[i].name}") from None

    def _set_faults(self, i: int, drop_to: list[str], drop_from: list[str]) -> None:
        body = json.dumps({"drop_to": drop_to, "drop_from": drop_from}).encode()
        req = urllib.request.Request(
            self.members[i].peer_url + "/debug/faults",
            data=body,
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=3) as resp:
                resp.read()
        except OSError as e:
            raise NemesisError(
                f"{self.members[i].name}: fault hook unavailable ({e}); "
                "start members with CORRAL_FAULT_INJECTION=1"
            ) from e

    def partition(self, targets: Sequence[int], one_way: bool) -> None:
        rest = [j for j in range(len(self.members)) if j not in targets]
        rest_ids = [self._id(j) for j in rest]
        target_ids = [self._id(j) for j in targets]
        for t in targets:
            self._set_faults(t, rest_ids, [] if one_way else rest_ids)
        if not one_way:
            for j in rest:
                self._set_faults(j, target_ids, target_ids)
        self._partitioned = True
        self.counts["partition-one-way" if one_way else "partition-full"] += 1

    def heal_network(self) -> None:
        """Clear every live member's drop lists. A member that does not answer (a busy
        machine) is asked again until `restart_timeout`: a partition left behind on one side
        would keep a restarted peer from ever reaching quorum."""
        if not self._partitioned:
            return
        pending = [j for j in range(len(self.members)) if j not in self._killed]
        deadline = time.monotonic() + self.restart_timeout
        while pending:
            failed = []
            for j in pending:
                try:
                    self._set_faults(j, [], [])
                except NemesisError:
                    failed.append(j)
            pending = failed
            if pending and time.monotonic() > deadline:
                raise NemesisError(f"could not clear the partition on members {pending}")
            if pending:
                time.sleep(0.2)
        self._partitioned = False

    # -- steps
    def apply(self, fault: Fault) -> None:
        self.log.append(f"{time.monotonic():.3f} start {fault.describe()}")
        for i in fault.targets:
            if fault.kind is FaultKind.KILL:
                self.kill(i)
            elif fault.kind is FaultKind.PAUSE:
                self.pause(i)
        if fault.kind is FaultKind.PARTITION_ONE_WAY:
            self.partition(fault.targets, one_way=True)
        elif fault.kind is FaultKind.PARTITION_FULL:
            self.partition(fault.targets, one_way=False)

    def heal(self) -> None:
        """Undo every fault: resume paused, restart killed, clear partitions."""
        for i in sorted(self._paused):
            self.resume(i)
        self.heal_network()
        for i in sorted(self._killed):
            self.restart(i)
        self.log.append(f"{time.monotonic():.3f} healed")

    def run(self, schedule: Schedule, duration: float, stop: threading.Event | None = None) -> None:
        """Apply faults from `schedule` for `duration` seconds (or until `stop`), then heal."""
        stop = stop or threading.Event()
        deadline = time.monotonic() + duration
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                fault = schedule.next()
                self.apply(fault)
                stop.wait(max(0.0, min(fault.duration, deadline - time.monotonic())))
                self.heal()
                stop.wait(max(0.0, min(fault.calm, deadline - time.monotonic())))
        finally:
            self.heal()

    def summary(self) -> str:
        kinds = ("kill", "restart", "pause", "partition-one-way", "partition-full")
        return "faults " + " ".join(f"{k}={self.counts[k]}" for k in kinds)
