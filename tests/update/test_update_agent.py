"""The update agent against a real (in-process, loopback) update server.

The machine's services here are plain `sleep` processes; the end-to-end test runs the
real stand-in service from the slot.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import fields
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from corral.update.agent import Agent, AgentConfig, Status, provision
from corral.update.health import check_event
from corral.update.omaha import AppRequest, ErrorCode, Event, UpdateOffer, parse_request
from corral.update.payload import build_payload, load_private_key, load_public_keys, sign_payload
from corral.update.policy import GroupPolicy
from corral.update.server import CORRAL_APP_ID, Store, UpdateServer, bootstrap, make_app

from .conftest import SAMPLES, SOURCE

APP = CORRAL_APP_ID.strip("{}")
SLEEPER = ["sleep", "120"]
Keys = tuple[bytes, bytes]


def with_machine(tmp_path: Path, release_key: Keys, offered: bytes,
                 body: Callable[[Agent, Store], Awaitable[None]], backend: str = "directory",
                 base_payload: bytes | None = None, machine: str = "m") -> None:
    """Server offering `offered` as 1.1.0 to a machine provisioned at 1.0.0."""
    if base_payload is None:
        base_payload = sign_payload(build_payload(SOURCE, "1.0.0"),
                                    load_private_key(release_key[0]))
    trusted = load_public_keys([release_key[1]])

    async def main() -> None:
        store = Store(tmp_path / "server")
        bootstrap(store, policy=GroupPolicy())
        store.add_package(APP, "1.1.0", "corral-1.1.0.payload", offered, 0)
        store.set_channel(APP, "stable", "1.1.0")
        server = TestServer(make_app(UpdateServer(store)), host="127.0.0.1")
        await server.start_server()
        provision(tmp_path / machine, base_payload, trusted, backend)
        agent = Agent(AgentConfig(root=tmp_path / machine, server=str(server.make_url("/v1/update/")),
                                  trusted_keys=trusted, services=[SLEEPER]))
        try:
            await agent.boot()
            await body(agent, store)
        finally:
            await agent._stop_services()
            await server.close()
            store.close()

    asyncio.run(main())


def _events(store: Store) -> list[tuple[int, int, int | None]]:
    return [(e["type"], e["result"], e["error_code"]) for e in store.events()]


@pytest.mark.parametrize("backend", ["directory", "image"])
def test_update_is_written_to_the_inactive_slot(tmp_path: Path, release_key: Keys,
                                                signed_110: bytes, signed_100: bytes,
                                                backend: str) -> None:
    async def body(agent: Agent, store: Store) -> None:
        assert (agent.version, agent.booted_slot) == ("1.0.0", "a")
        # The agent's check is update_engine's: same elements and attributes as the sample.
        sample = parse_request((SAMPLES / "derived_ue_updatecheck_first_ever_request.xml")
                               .read_bytes())
        ours = parse_request(agent._request(ping=True, check=True,
                                            events=(check_event(None, agent.version),)))
        for f in fields(AppRequest):
            assert (getattr(ours.apps[0], f.name) is None) == (
                getattr(sample.apps[0], f.name) is None), f.name
        assert ours.apps[0].events == (Event(3, 2, None, "0.0.0.0"),)
        assert (ours.version, ours.install_source, ours.is_machine) == (
            sample.version, sample.install_source, sample.is_machine)
        changes = agent.subscribe()
        outcome = await agent.check_once()
        ops = [changes.get_nowait() for _ in range(changes.qsize())]
        assert ops == ["UPDATE_STATUS_CHECKING_FOR_UPDATE", "UPDATE_STATUS_UPDATE_AVAILABLE",
                       "UPDATE_STATUS_DOWNLOADING", "UPDATE_STATUS_FINALIZING",
                       "UPDATE_STATUS_UPDATED_NEED_REBOOT"]
        assert outcome == "updated to 1.1.0; reboot needed"
        assert agent.status == Status.UPDATED_NEED_REBOOT and agent.progress == 1.0
        assert _events(store) == [(3, 2, None), (13, 1, None), (14, 1, None), (3, 1, None)]
        assert store.events()[0]["previous_version"] == "0.0.0.0"
        table = agent.slots.read_table()
        assert (table.get("b").priority, table.get("b").tries, table.get("b").successful) == (
            2, 1, False)
        # While a reboot is pending, checks are pings only.
        assert await agent.check_once() == "ping (reboot needed)"
        assert len(store.events()) == 4
        await agent.reboot()
        assert (agent.version, agent.booted_slot) == ("1.1.0", "b")
        assert agent.slots.read_table().get("b").tries == 0
        init = (agent.slot_dir / "corral/__init__.py").read_text()
        assert '__version__ = "1.1.0"' in init

    with_machine(tmp_path, release_key, signed_110, body, backend, signed_100)


def test_payload_signed_by_another_key_is_refused(tmp_path: Path, release_key: Keys,
                                                  other_key: Keys, unsigned_110: bytes,
                                                  signed_100: bytes) -> None:
    by_server = sign_payload(unsigned_110, load_private_key(other_key[0]))

    async def body(agent: Agent, store: Store) -> None:
        assert (await agent.check_once()).startswith("error 18")
        code = ErrorCode.PAYLOAD_PUBKEY_VERIFICATION | ErrorCode.FLAG_CUSTOM_SERVER
        assert _events(store)[-1] == (3, 0, code)
        assert agent.status == Status.IDLE
        assert agent.slots.read_table().get("b").priority == 0  # nothing installed
        assert agent.slots.slot_version("b") is None

    with_machine(tmp_path, release_key, by_server, body, base_payload=signed_100)


def test_unsigned_payload_is_refused(tmp_path: Path, release_key: Keys,
                                     unsigned_110: bytes, signed_100: bytes) -> None:
    async def body(agent: Agent, store: Store) -> None:
        assert (await agent.check_once()).startswith("error 17")
        assert _events(store)[-1][:2] == (3, 0)

    with_machine(tmp_path, release_key, unsigned_110, body, base_payload=signed_100)


def test_download_resumes_with_range(tmp_path: Path, release_key: Keys,
                                     signed_110: bytes, signed_100: bytes) -> None:
    async def body(agent: Agent, store: Store) -> None:
        pkg = store.package(APP, "1.1.0")
        assert pkg is not None
        part = agent._part_path(UpdateOffer("1.1.0", (), pkg.filename, pkg.size, pkg.sha256))
        # Wrong first bytes prove the agent only fetched the rest: hash mismatch, resumed flag.
        part.write_bytes(b"\0" * 1000)
        assert (await agent.check_once()).startswith("error 10")
        assert _events(store)[-1] == (3, 0, 10 | ErrorCode.FLAG_CUSTOM_SERVER
                                      | ErrorCode.FLAG_RESUMED)
        assert not part.exists()  # a bad download is not resumed again

    with_machine(tmp_path, release_key, signed_110, body, base_payload=signed_100)


def test_download_resumes_a_good_partial_file(tmp_path: Path, release_key: Keys,
                                              signed_110: bytes, signed_100: bytes) -> None:
    async def body(agent: Agent, store: Store) -> None:
        pkg = store.package(APP, "1.1.0")
        assert pkg is not None
        part = agent._part_path(UpdateOffer("1.1.0", (), pkg.filename, pkg.size, pkg.sha256))
        part.write_bytes(signed_110[:5000])
        assert await agent.check_once() == "updated to 1.1.0; reboot needed"
        assert not part.exists()

    with_machine(tmp_path, release_key, signed_110, body, base_payload=signed_100)


def test_fell_back_version_is_refused_unless_forced(tmp_path: Path, release_key: Keys,
                                                    signed_110: bytes, signed_100: bytes) -> None:
    async def body(agent: Agent, store: Store) -> None:
        (agent.prefs / "fell-back-from").write_text(json.dumps(["1.1.0"]))
        assert "refused 1.1.0" in await agent.check_once()
        assert agent.slots.read_table().get("b").priority == 0
        assert await agent.check_once(force=True) == "updated to 1.1.0; reboot needed"

    with_machine(tmp_path, release_key, signed_110, body, base_payload=signed_100)


def test_no_trusted_key_means_nothing_is_installed(tmp_path: Path, release_key: Keys,
                                                   signed_110: bytes, signed_100: bytes) -> None:
    async def body(agent: Agent, store: Store) -> None:
        agent.config.trusted_keys = []
        assert (await agent.check_once()).startswith("error 17")

    with_machine(tmp_path, release_key, signed_110, body, base_payload=signed_100)


def test_a_restarted_agent_reaps_services_left_behind(tmp_path: Path, release_key: Keys,
                                                      signed_110: bytes, signed_100: bytes) -> None:
    async def body(agent: Agent, store: Store) -> None:
        left_behind = list(agent.procs)
        assert all(p.returncode is None for p in left_behind)
        successor = Agent(agent.config)  # as if the first agent had been killed -9
        await successor.boot()
        try:
            for proc in left_behind:
                assert await asyncio.wait_for(proc.wait(), 10) == -9
            assert all(p.returncode is None for p in successor.procs)
        finally:
            await successor._stop_services()

    with_machine(tmp_path, release_key, signed_110, body, base_payload=signed_100)


def test_health_waits_for_named_units(tmp_path: Path, release_key: Keys, signed_110: bytes,
                                      signed_100: bytes) -> None:
    """The slot is good only once the named units run (under corral's real unit runner)."""
    from corral.units.api import AsyncUnitsClient, ControlServer
    from corral.units.config import Defaults
    from corral.units.supervisor import UnitRunner

    async def body(agent: Agent, store: Store) -> None:
        # fleet.service does not exist on this machine: "when present" skips it.
        agent.config.health_units = ["kv.service", "fleet.service"]
        agent._health.period = 0.3

        async def steps(n: int) -> None:
            for _ in range(n):
                await agent._health_step()
                if agent.good:
                    return
                await asyncio.sleep(0.05)

        await steps(10)
        assert not agent.good  # no unit runner reachable yet
        async with UnitRunner(agent.root, defaults=Defaults(timeout_stop=5)) as runner:
            server = ControlServer(runner)
            await server.start()
            client = AsyncUnitsClient(agent.root)
            try:
                await client.call("load", unit="kv.service", runtime=True,
                                  text="[Service]\nExecStart=/bin/sleep 60\n")
                await steps(15)
                assert not agent.good  # loaded, not active
                assert await client.call("start", unit="kv.service", wait=True) == "done"
                await steps(400)
                assert agent.good and agent.healthy.is_set()
                assert agent.slots.read_table().get("a").successful
            finally:
                await client.call("stop", unit="kv.service")
                await server.close()

    with_machine(tmp_path, release_key, signed_110, body, base_payload=signed_100)


def test_control_socket_under_a_long_root(tmp_path: Path, release_key: Keys, signed_110: bytes,
                                          signed_100: bytes) -> None:
    """`corral update status|watch` reach an agent whose socket path exceeds sun_path."""
    from click.testing import CliRunner

    from corral.cli.update import cli as update_cli

    async def body(agent: Agent, store: Store) -> None:
        await agent._stop_services()
        agent.config.health_period = 0.2
        task = asyncio.ensure_future(agent.run())
        sock = agent.root / "run/update-agent.sock"
        assert len(str(sock)) > 108
        try:
            for _ in range(200):
                if sock.exists():
                    break
                await asyncio.sleep(0.05)

            def cli(*args: str) -> str:
                r = CliRunner().invoke(update_cli, [*args, "--root", str(agent.root)])
                assert r.exit_code == 0, r.output
                return r.output

            out = await asyncio.to_thread(cli, "status")
            assert "CURRENT_OP=UPDATE_STATUS_IDLE" in out
            out = await asyncio.to_thread(cli, "watch", "--count", "1")
            assert out.startswith("LAST_CHECKED_TIME=") and "NEW_VERSION=0.0.0" in out
        finally:
            agent._stopping.set()
            await asyncio.wait_for(task, 30)
        assert not sock.exists()

    with_machine(tmp_path, release_key, signed_110, body, base_payload=signed_100,
                 machine="r" * 60 + "/" + "s" * 40)


def test_boot_deadline_rolls_back_a_slot_that_never_becomes_healthy(
        tmp_path: Path, release_key: Keys, signed_110: bytes, signed_100: bytes) -> None:
    """1.1.0's services stay up but its health command always fails: deadline, fallback."""

    async def body(agent: Agent, store: Store) -> None:
        assert await agent.check_once() == "updated to 1.1.0; reboot needed"
        agent.config.health_command = ["false"]
        agent.config.health_period = 0.1
        agent.config.boot_deadline = 1.0
        await agent.reboot()
        assert (agent.version, agent.booted_slot) == ("1.1.0", "b")
        for _ in range(400):
            await agent._health_step()
            if agent.boots == 3:
                break
            await asyncio.sleep(0.02)
        assert (agent.version, agent.booted_slot, agent.boots) == ("1.0.0", "a", 3)
        assert agent.fell_back_from == ["1.1.0"]
        table = agent.slots.read_table()
        assert (table.get("b").tries, table.get("b").successful) == (0, False)
        agent.config.health_command = None
        for _ in range(400):
            await agent._health_step()
            if agent.good:
                break
            await asyncio.sleep(0.02)
        assert agent.good and agent.slots.read_table().get("a").priority == 2
        # The next check reports the rollback; the server never offers 1.1.0 again.
        assert await agent.check_once() == "no update"
        assert _events(store)[-1] == (3, 0, ErrorCode.CORRAL_HEALTH_COMMAND)
        assert store.instances()[0]["failed_versions"] == ["1.1.0"]

    with_machine(tmp_path, release_key, signed_110, body, base_payload=signed_100)
