"""The semaphore against a real etcd 3.4 and corral's KV store (v2 API): competing lockers,
CAS races, dead holders, and `corral locksmith` with locksmithctl's outputs."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.cli.locksmith import cli
from corral.locksmith import (
    SEMAPHORE_KEY,
    ClientKeys,
    DeadHolderReaper,
    KeysAPI,
    Lock,
    LockClient,
    Semaphore,
    SemaphoreFull,
    SetMax,
    Unlock,
    heartbeat,
    presence_key,
    reap_dead_holders,
    semaphore_key,
)
from corral.testing.servers import ServerProcess

pytestmark = pytest.mark.interop
_groups = itertools.count()


KeysFactory = Callable[[str], KeysAPI]


@pytest.fixture
def keys() -> KeysFactory:
    """The KeysAPI adapter over corral's etcd client."""
    return lambda url: ClientKeys.connect([url])


def _client(keys: KeysFactory, etcd: ServerProcess, group: str | None = None) -> LockClient:
    return LockClient(keys(etcd.client_url), group if group is not None else f"g{next(_groups)}")


def test_fresh_semaphore_is_locksmiths_value(keys: KeysFactory, shared_etcd: ServerProcess) -> None:
    c = _client(keys, shared_etcd, group="")
    c.init()
    c.init()  # idempotent: Create fails with 105 and that is fine
    node = c.keys.get(SEMAPHORE_KEY)
    assert node is not None and node.value == '{"semaphore":1,"max":1,"holders":null}'
    # etcdctl (v2) sees the same key, so the layout interoperates with locksmith
    out = subprocess.run(
        ["etcdctl", "--endpoints", shared_etcd.client_url, "get", "/" + SEMAPHORE_KEY],
        env={"ETCDCTL_API": "2", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert out.stdout.strip() == '{"semaphore":1,"max":1,"holders":null}'


def test_max_honoured_with_many_competing_lockers(
    keys: KeysFactory, shared_etcd: ServerProcess
) -> None:
    group = f"g{next(_groups)}"
    admin = _client(keys, shared_etcd, group)
    admin.init()
    admin.apply(SetMax(3))
    lockers = 10
    rounds = 2
    inside = 0
    peak = 0
    mutex = threading.Lock()

    def machine(i: int) -> int:
        nonlocal inside, peak
        me = f"{i:032x}"
        c = _client(keys, shared_etcd, group)
        acquired = 0
        while acquired < rounds:
            try:
                c.apply(Lock(me))
            except SemaphoreFull:
                time.sleep(0.005)  # a real locksmithd backs off; the test only yields
                continue
            with mutex:
                inside += 1
                peak = max(peak, inside)
                assert inside <= 3
            time.sleep(0.002)
            with mutex:
                inside -= 1
            c.apply(Unlock(me))
            acquired += 1
        return acquired

    with ThreadPoolExecutor(lockers) as pool:
        assert sum(pool.map(machine, range(lockers))) == lockers * rounds
    sem, _ = admin.get()
    assert sem == Semaphore(3, 3, ())
    assert 1 <= peak <= 3


def test_simultaneous_lock_of_max_one_has_exactly_one_winner(
    keys: KeysFactory, shared_etcd: ServerProcess
) -> None:
    group = f"g{next(_groups)}"
    _client(keys, shared_etcd, group).init()
    barrier = threading.Barrier(10)

    def attempt(i: int) -> bool:
        c = _client(keys, shared_etcd, group)
        barrier.wait()
        try:
            c.apply(Lock(f"m{i}"))
            return True
        except SemaphoreFull:
            return False

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(attempt, range(10)))
    assert results.count(True) == 1
    sem, _ = _client(keys, shared_etcd, group).get()
    assert sem.semaphore == 0 and len(sem.holder_list) == 1
    assert sem.holder_list[0] == f"m{results.index(True)}"


def test_dead_holder_released_after_grace(shared_etcd: ServerProcess) -> None:
    group = f"g{next(_groups)}"
    # one adapter is enough here: the TTL wait dominates
    c = LockClient(ClientKeys.connect([shared_etcd.client_url]), group)
    c.init()
    c.apply(SetMax(2))
    alive, dead = "a" * 32, "d" * 32
    heartbeat(c.keys, alive, ttl=60)
    heartbeat(c.keys, dead, ttl=1)  # this machine stops heartbeating
    c.apply(Lock(alive))
    c.apply(Lock(dead))
    reaper = DeadHolderReaper(grace=30)
    # the presence key expires in etcd on its own (real TTL); poll generously
    deadline = time.monotonic() + 30
    while c.keys.get(presence_key(dead)) is not None:
        assert time.monotonic() < deadline, "presence TTL never expired"
        time.sleep(0.2)
    # virtual time for the grace period: nothing before it, release at it
    assert reap_dead_holders(c, reaper, now=1000.0) == []
    assert reap_dead_holders(c, reaper, now=1029.0) == []
    (rel,) = reap_dead_holders(c, reaper, now=1030.0)
    assert rel.holder == dead
    sem, _ = c.get()
    assert sem.holder_list == (alive,) and sem.semaphore == 1
    c.keys.delete(presence_key(alive))
    c.keys.delete(f"corral/locksmith/released/{dead}")


def test_cli_outputs_match_locksmithctl(shared_etcd: ServerProcess, tmp_path: Path) -> None:
    runner = CliRunner()
    group = f"cli group {next(_groups)}"
    base = ["--endpoint", shared_etcd.client_url, "--group", group]
    root = tmp_path / "machine"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "machine-id").write_text("ab" * 16 + "\n")

    def run(*args: str) -> tuple[int, str]:
        res = runner.invoke(cli, [*base, "--root", str(root), *args])
        return res.exit_code, res.output

    assert run("status") == (0, "Available: 1\nMax: 1\n")
    assert run("set-max", "4") == (0, "Old-Max: 1\nMax: 4\n")
    assert run("lock") == (0, "")
    assert run("lock", "0123") == (0, "")
    assert run("status") == (0, "Available: 2\nMax: 4\n\nMACHINE ID\n0123\n" + "ab" * 16 + "\n")
    assert run("lock") == (1, "Error locking: holder exists\n")
    assert run("unlock", "nobody") == (1, "Error unlocking: holder does not exist\n")
    assert run("set-max", "1") == (0, "Old-Max: 4\nMax: 1\n")
    assert run("lock", "x") == (1, "Error locking: semaphore is at -1\n")
    assert run("set-max") == (1, "New maximum value must be set.\n")
    assert run("set-max", "many") == (1, "Invalid maximum value: many\n")
    assert run("unlock") == (0, "")
    assert run("unlock", "0123") == (0, "")
    assert run("status") == (0, "Available: 1\nMax: 1\n")
    key = semaphore_key(group)
    node = ClientKeys.connect([shared_etcd.client_url]).get(key)
    assert node is not None and node.value == '{"semaphore":1,"max":1,"holders":[]}'
    assert "%20" not in key and "+" in key  # url.QueryEscape, as locksmith names group keys

    no_id = runner.invoke(cli, [*base, "--root", str(tmp_path / "nothing"), "lock"])
    assert no_id.exit_code == 1 and no_id.output == "Cannot read machine-id\n"
    down = runner.invoke(cli, ["--endpoint", "http://127.0.0.1:9", "status"])
    assert down.exit_code == 1 and down.output.startswith("Error initializing etcd client:")
