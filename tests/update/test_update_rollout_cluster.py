"""Three machines, a good release and a bad one: the health-gated rollout end to end (slow).

Real parts: the update server (in-process, loopback HTTP), three real update agents (their
services are processes, their slots real release trees), real locksmith daemons following
each agent's control socket with the reboot semaphore in a real etcd 3.4, and the agents'
fleet gate reading fleet's registry layout from that etcd (`KvFleetView`).

Stand-in: fleet's *publisher*. A small task plays each machine's fleet agent: it schedules
`web<i>.service` to machine i and publishes its state — active while the machine's services
run a release other than 1.2.0, failed under 1.2.0 (the release that breaks the unit, not
the machine). Units moving between machines while one reboots need `corral node` running
fleetd from the slots; that story is wired by the node work, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from corral.client.aio import AsyncClient
from corral.locksmith import (
    AgentLink,
    ClientKeys,
    DaemonSettings,
    LockClient,
    LocksmithDaemon,
    RebootCoordinator,
    Strategy,
    follow_agent,
)
from corral.testing.servers import ServerProcess
from corral.update.agent import Agent, AgentConfig, provision
from corral.update.fleet_health import KvFleetView
from corral.update.omaha import ErrorCode
from corral.update.payload import (
    build_payload,
    generate_key,
    load_private_key,
    load_public_keys,
    sign_payload,
)
from corral.update.policy import GroupPolicy
from corral.update.server import Store, UpdateServer, bootstrap, make_app

from .conftest import SOURCE
from .test_update_agent import APP

pytestmark = [pytest.mark.slow]
LOCK_GROUP = "rollout"
P = "/_coreos.com/fleet/"


def _locksmith(agent: Agent, etcd_url: str) -> Awaitable[None]:
    settings = DaemonSettings(Strategy.ETCD_LOCK, None, LOCK_GROUP, (etcd_url,))

    def make(reboot: Callable[[], Awaitable[None]]) -> LocksmithDaemon:
        coordinator = RebootCoordinator(settings, initial_interval=timedelta(milliseconds=50),
                                        max_interval=timedelta(milliseconds=200))
        client = LockClient(ClientKeys.connect([etcd_url]), LOCK_GROUP)
        return LocksmithDaemon(coordinator, client, agent.machine_id, reboot)

    return follow_agent(AgentLink(agent.root), make, poll=0.05)


async def _fleet_publisher(agents: list[Agent], etcd_url: str) -> None:
    async with AsyncClient(etcd_url) as c:
        for i, a in enumerate(agents):
            await c.set(f"{P}job/web{i}.service/target", a.machine_id)
            await c.set(f"{P}job/web{i}.service/target-state", "launched")
        while True:
            for i, a in enumerate(agents):
                up = bool(a.procs) and all(p.returncode is None for p in a.procs)
                active = up and a.version != "1.2.0"
                await c.set(f"{P}states/web{i}.service/{a.machine_id}", json.dumps(
                    {"loadState": "loaded", "activeState": "active" if active else "failed",
                     "subState": "running" if active else "failed"}))
            await asyncio.sleep(0.1)


async def _until(what: str, cond: Callable[[], bool], seconds: float,
                 every: Callable[[], None] = lambda: None) -> None:
    for _ in range(int(seconds / 0.02)):
        every()
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def _story(tmp: Path, etcd_url: str) -> None:
    private, public = generate_key()
    trusted = load_public_keys([public])
    key = load_private_key(private)
    payloads = {v: sign_payload(build_payload(SOURCE, v), key)
                for v in ("1.0.0", "1.1.0", "1.2.0")}
    store = Store(tmp / "server")
    bootstrap(store, policy=GroupPolicy(safe_mode=True))
    for v in ("1.1.0", "1.2.0"):
        store.add_package(APP, v, f"corral-{v}.payload", payloads[v], 0)
    server = TestServer(make_app(UpdateServer(store)), host="127.0.0.1")
    await server.start_server()
    agents = []
    for i in range(3):
        root = tmp / f"m{i}"
        provision(root, payloads["1.0.0"], trusted)
        agents.append(Agent(AgentConfig(
            root=root, server=str(server.make_url("/v1/update/")), trusted_keys=trusted,
            services=[["sleep", "600"]], health_period=0.3, boot_deadline=120,
            initial_check=0.05, initial_fuzz=0.05, interval=1.0, interval_fuzz=0.2,
            reboot_strategy="off", seed=i)))
        agents[-1].config.fleet_view = KvFleetView(etcd_url, agents[-1].machine_id)
        agents[-1].config.fleet_window = 3.0
    tasks = [asyncio.create_task(a.run()) for a in agents]
    tasks.append(asyncio.create_task(_fleet_publisher(agents, etcd_url)))
    await _until("the agents' sockets", lambda: all(
        (a.root / "run/update-agent.sock").exists() for a in agents), 30)
    tasks += [asyncio.create_task(_locksmith(a, etcd_url)) for a in agents]
    down_peak = [0]
    been_good: set[int] = set()

    def sample() -> None:
        down = 0
        for i, a in enumerate(agents):
            if a.good:
                been_good.add(i)
            elif i in been_good:
                down += 1
        down_peak[0] = max(down_peak[0], down)

    try:
        # A good release rolls through one reboot at a time; fleet units are active again.
        store.set_channel(APP, "stable", "1.1.0")
        await _until("1.1.0 everywhere", lambda: all(
            a.version == "1.1.0" and a.good for a in agents), 120, sample)
        assert down_peak[0] <= 1, "two machines were rebooting at once"
        # A release that breaks a fleet unit: the first machine falls back, the rollout halts.
        store.set_channel(APP, "stable", "1.2.0")
        await _until("the halt", lambda: store.rollouts[(APP, "stable")].halted, 120, sample)
        halt = store.rollouts[(APP, "stable")].halts["1.2.0"]
        assert halt.code == ErrorCode.CORRAL_FLEET_UNITS_INACTIVE
        (bad,) = [a for a in agents if a.machine_id == halt.instance]
        assert bad.fell_back_from == ["1.2.0"]
        # Let the others check a few more times: nobody else ever installs 1.2.0.
        checks = len(store.events())
        await _until("more checks", lambda: len(store.events()) >= checks + 6, 30, sample)
        for a in agents:
            assert (a.version, a.good) == ("1.1.0", True)
            versions = {a.slots.slot_version(n) for n in ("a", "b")}
            assert ("1.2.0" in versions) == (a is bad)
        assert down_peak[0] <= 1
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await server.close()
        store.close()


def test_three_machines_good_release_then_a_release_that_breaks_a_fleet_unit(
        real_etcd: ServerProcess, tmp_path: Path) -> None:
    asyncio.run(_story(tmp_path, real_etcd.client_url))
