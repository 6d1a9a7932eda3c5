"""Two locksmith daemons against a real etcd: one reboot at a time, lock released when healthy."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from corral.locksmith import (
    NEED_REBOOT,
    ClientKeys,
    DaemonSettings,
    Lock,
    LockClient,
    LocksmithDaemon,
    RebootCoordinator,
    SetMax,
    Strategy,
    presence_key,
)
from corral.testing.servers import ServerProcess

pytestmark = pytest.mark.interop


def _fast(settings: DaemonSettings) -> RebootCoordinator:
    return RebootCoordinator(
        settings,
        initial_interval=timedelta(milliseconds=20),
        max_interval=timedelta(milliseconds=100),
    )


async def _fleet(etcd_url: str) -> list[tuple[str, str]]:
    settings = DaemonSettings(Strategy.ETCD_LOCK, None, "daemons", (etcd_url,))
    admin = LockClient(ClientKeys.connect([etcd_url]), "daemons")
    admin.init()
    admin.apply(SetMax(1))
    events: list[tuple[str, str]] = []

    def holders() -> tuple[str, ...]:
        return admin.get()[0].holder_list

    async def machine(mid: str) -> None:
        statuses: asyncio.Queue[str] = asyncio.Queue()
        healthy = asyncio.Event()

        async def reboot() -> None:
            assert holders() == (mid,), "rebooting without holding the only slot"
            events.append(("reboot", mid))

        daemon = LocksmithDaemon(
            _fast(settings),
            LockClient(ClientKeys.connect([etcd_url]), "daemons"),
            mid,
            reboot,
        )
        await statuses.put(NEED_REBOOT)
        assert await daemon.run(statuses, healthy) == 0
        # the machine comes back on its new slot: a fresh daemon, healthy a little later
        after = LocksmithDaemon(
            _fast(settings),
            LockClient(ClientKeys.connect([etcd_url]), "daemons"),
            mid,
            reboot,
        )
        task = asyncio.create_task(after.run(asyncio.Queue(), healthy))
        await asyncio.sleep(0.2)
        assert mid in holders(), "released before the machine was healthy"
        events.append(("healthy", mid))
        healthy.set()
        for _ in range(200):
            if mid not in holders():
                break
            await asyncio.sleep(0.05)
        events.append(("released", mid))
        task.cancel()

    await asyncio.wait_for(asyncio.gather(machine("m1"), machine("m2")), timeout=60)
    assert holders() == ()
    return events


def test_daemons_reboot_one_at_a_time(real_etcd: ServerProcess) -> None:
    events = asyncio.run(_fleet(real_etcd.client_url))
    reboots = [m for kind, m in events if kind == "reboot"]
    assert sorted(reboots) == ["m1", "m2"]
    first, second = reboots
    # the second machine reboots only after the first was healthy again (and, as reboot()
    # asserts, only while it is the sole holder — so after the first released its slot)
    assert events.index(("healthy", first)) < events.index(("reboot", second))
    assert ("released", first) in events and ("released", second) in events


def test_off_strategy_exits_at_once() -> None:
    async def go() -> int:
        d = LocksmithDaemon(
            RebootCoordinator(DaemonSettings(Strategy.OFF, None, "", ())), None, "m", _never
        )
        return await d.run(asyncio.Queue(), asyncio.Event())

    async def _never() -> None:
        raise AssertionError("must not reboot")

    assert asyncio.run(go()) == 0


async def _reaping(etcd_url: str) -> tuple[str, ...]:
    keys = ClientKeys.connect([etcd_url])
    admin = LockClient(keys, "reaping")
    admin.init()
    admin.apply(SetMax(2))
    admin.apply(Lock("gone-machine"))  # never had (or lost) its presence key
    daemon = LocksmithDaemon(
        _fast(DaemonSettings(Strategy.ETCD_LOCK, None, "reaping", (etcd_url,))),
        LockClient(ClientKeys.connect([etcd_url]), "reaping"),
        "live-machine",
        _no_reboot,
        presence_ttl=30,
        dead_holder_grace=0.3,
        reap_interval=0.05,
    )
    task = asyncio.create_task(daemon.run(asyncio.Queue(), asyncio.Event()))
    try:
        for _ in range(200):
            if admin.get()[0].holder_list == ():
                break
            await asyncio.sleep(0.05)
        assert keys.get(presence_key("live-machine")) is not None  # its own heartbeat
        return admin.get()[0].holder_list
    finally:
        task.cancel()


async def _no_reboot() -> None:
    raise AssertionError("must not reboot")


def test_daemon_releases_dead_holders(real_etcd: ServerProcess) -> None:
    assert asyncio.run(_reaping(real_etcd.client_url)) == ()


def test_daemon_command_reads_update_conf(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from corral.cli.locksmith import cli

    root = tmp_path / "machine"
    (root / "etc/coreos").mkdir(parents=True)
    (root / "etc/machine-id").write_text("ab" * 16 + "\n")
    (root / "etc/coreos/update.conf").write_text("GROUP=stable\nREBOOT_STRATEGY=off\n")
    runner = CliRunner()
    res = runner.invoke(cli, ["--root", str(root), "daemon"], env={"REBOOT_STRATEGY": None})
    assert res.exit_code == 0, res.output
    (root / "etc/coreos/update.conf").write_text("REBOOT_STRATEGY=sometimes\n")
    res = runner.invoke(cli, ["--root", str(root), "daemon"], env={"REBOOT_STRATEGY": None})
    assert res.exit_code == 1 and "unknown strategy: sometimes" in res.output
    res = runner.invoke(
        cli,
        ["--root", str(root), "daemon"],
        env={"REBOOT_STRATEGY": "reboot", "REBOOT_WINDOW_START": "04:00"},
    )
    assert res.exit_code == 1 and "Either both or neither" in res.output
