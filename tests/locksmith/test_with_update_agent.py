"""locksmith with corral's real update agents and update server: an update rolls through three
machines one reboot at a time (real etcd 3.4 holds the semaphore).

Each machine: an update agent (reboot strategy "off": locksmith decides), provisioned at 1.0.0
from a signed payload; the update server offers 1.1.0. Locksmith is wired two ways:
in-process (`Agent.subscribe()` statuses, `Agent.reboot()`, healthy = `Agent.good`) and
through the agent's control socket (`follow_agent`, what `corral locksmith daemon` runs).
A monitor samples the agents: once a machine has been good, it may only go down while no
other machine is down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

import corral
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
from corral.update.payload import (
    build_payload,
    generate_key,
    load_private_key,
    load_public_keys,
    sign_payload,
)
from corral.update.policy import GroupPolicy
from corral.update.server import CORRAL_APP_ID, Store, UpdateServer, bootstrap, make_app

pytestmark = [pytest.mark.interop, pytest.mark.slow]
SOURCE = Path(corral.__file__).resolve().parent.parent
APP = CORRAL_APP_ID.strip("{}")
GROUP = "rollout"


def _coordinator(settings: DaemonSettings) -> RebootCoordinator:
    return RebootCoordinator(
        settings,
        initial_interval=timedelta(milliseconds=50),
        max_interval=timedelta(milliseconds=200),
    )


async def _in_process(agent: Agent, settings: DaemonSettings, etcd_url: str) -> None:
    statuses = agent.subscribe()

    def lock() -> LockClient:
        return LockClient(ClientKeys.connect([etcd_url]), GROUP)

    daemon = LocksmithDaemon(_coordinator(settings), lock(), agent.machine_id, agent.reboot)
    assert await daemon.run(statuses, asyncio.Event()) == 0
    healthy = asyncio.Event()
    after = LocksmithDaemon(_coordinator(settings), lock(), agent.machine_id, agent.reboot)
    task = asyncio.create_task(after.run(asyncio.Queue(), healthy))
    for _ in range(3000):
        if agent.good:
            break
        await asyncio.sleep(0.02)
    healthy.set()
    await task  # runs until cancelled by the test


async def _socket(agent: Agent, settings: DaemonSettings, etcd_url: str) -> None:
    def make(reboot: Callable[[], Awaitable[None]]) -> LocksmithDaemon:
        client = LockClient(ClientKeys.connect([etcd_url]), GROUP)
        return LocksmithDaemon(_coordinator(settings), client, agent.machine_id, reboot)

    await follow_agent(AgentLink(agent.root), make, poll=0.05)


async def _rollout(tmp: Path, etcd_url: str, wiring: str) -> list[Agent]:
    private, public = generate_key()
    trusted = load_public_keys([public])
    key = load_private_key(private)
    base = sign_payload(build_payload(SOURCE, "1.0.0"), key)
    store = Store(tmp / "server")
    bootstrap(store, policy=GroupPolicy())
    offered = sign_payload(build_payload(SOURCE, "1.1.0"), key)
    store.add_package(APP, "1.1.0", "corral-1.1.0.payload", offered, 0)
    store.set_channel(APP, "stable", "1.1.0")
    server = TestServer(make_app(UpdateServer(store)), host="127.0.0.1")
    await server.start_server()
    settings = DaemonSettings(Strategy.ETCD_LOCK, None, GROUP, (etcd_url,))
    agents = []
    for i in range(3):
        root = tmp / f"m{i}"
        provision(root, base, trusted)
        agents.append(
            Agent(
                AgentConfig(
                    root=root,
                    server=str(server.make_url("/v1/update/")),
                    trusted_keys=trusted,
                    services=[["sleep", "120"]],
                    health_period=0.3,
                    boot_deadline=120,
                    initial_check=0.05,
                    initial_fuzz=0.05,
                    interval=3600,
                    reboot_strategy="off",
                    seed=i,
                )
            )
        )
    wire = _in_process if wiring == "in-process" else _socket
    lockers = [asyncio.create_task(wire(a, settings, etcd_url)) for a in agents]
    runs = [asyncio.create_task(a.run()) for a in agents]
    probe = LockClient(ClientKeys.connect([etcd_url]), GROUP)
    been_good: set[int] = set()
    peak_down = 0
    try:
        for _ in range(3000):  # up to 30 s of 10 ms samples
            down = 0
            for i, a in enumerate(agents):
                if a.good:
                    been_good.add(i)
                elif i in been_good:
                    down += 1
            peak_down = max(peak_down, down)
            done = all(a.version == "1.1.0" and a.good for a in agents)
            if done and (await asyncio.to_thread(probe.get))[0].holder_list == ():
                break
            await asyncio.sleep(0.01)
        assert peak_down <= 1, "two machines were rebooting at once"
        return agents
    finally:
        for task in [*lockers, *runs]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.close()
        store.close()


@pytest.mark.parametrize("wiring", ["in-process", "socket"])
def test_update_rolls_through_the_cluster_one_reboot_at_a_time(
    real_etcd: ServerProcess, tmp_path: Path, wiring: str
) -> None:
    agents = asyncio.run(_rollout(tmp_path, real_etcd.client_url, wiring))
    assert [(a.version, a.booted_slot, a.good) for a in agents] == [("1.1.0", "b", True)] * 3
    sem, _ = LockClient(ClientKeys.connect([real_etcd.client_url]), GROUP).get()
    assert sem.holder_list == () and sem.semaphore == sem.max == 1
