"""Health-gated rollouts: failure thresholds halt a version; the fleet seam judges a boot.

Policy and gate tests run on a virtual clock. The server tests use its HTTP API over
loopback; the agent test runs a real agent against a real in-process server, with a fleet
view (the seam) standing in for fleet: fleet itself is another subsystem, tested with its
registry in a real etcd below.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.cli.main import cli
from corral.testing.servers import ServerProcess
from corral.update.agent import Agent, AgentConfig
from corral.update.fleet_health import (
    FLEET_AGENT,
    FleetGate,
    FleetUnavailable,
    GateVerdict,
    KvFleetView,
    UnitObservation,
)
from corral.update.omaha import ErrorCode, Event
from corral.update.payload import load_public_keys
from corral.update.policy import GroupPolicy, InstanceStatus, Rollout
from corral.update.server import Store, UpdateServer, bootstrap, make_app

from .test_update_agent import APP, SLEEPER, Keys, with_machine

T0 = 1_800_000_000.0
FAIL = Event(3, 0, 44)


def _update(r: Rollout, iid: str, now: float, fail_code: int | None = None) -> bool:
    """One machine's attempt at 1.0.0 → target; returns whether it was granted."""
    d = r.check(iid, "1.0.0", now)
    if not d.grant:
        return False
    for t, res in ((13, 1), (14, 1), (3, 1)):
        r.event(iid, Event(t, res), now)
    if fail_code is not None:
        r.event(iid, Event(3, 0, fail_code | ErrorCode.FLAG_CUSTOM_SERVER), now + 5)
    else:
        assert d.version is not None
        r.complete_on_reboot(iid, "1.0.0", d.version)
    return True


# ---------------------------------------------------------------------------- policy


def test_first_failure_halts_by_default_with_the_reason() -> None:
    r = Rollout(GroupPolicy(), "1.1.0")
    assert _update(r, "m0", T0)
    assert _update(r, "m1", T0 + 10, fail_code=ErrorCode.CORRAL_FLEET_UNITS_INACTIVE)
    assert r.halted
    h = r.halts["1.1.0"]
    assert (h.version, h.instance, h.code, h.at, h.failures) == ("1.1.0", "m1", 3010, T0 + 15, 1)
    assert "m1" in r.halt_reason and "3010" in r.halt_reason
    # Nobody else gets 1.1.0, whatever the clock says.
    for i in range(2, 30):
        d = r.check(f"m{i}", "1.0.0", T0 + 100 * i)
        assert not d.grant and d.reason.startswith("rollout halted")


def test_threshold_counts_failures_of_one_version() -> None:
    r = Rollout(GroupPolicy(halt_after_failures=3), "1.1.0")
    assert _update(r, "m0", T0, fail_code=44)
    assert _update(r, "m1", T0 + 1, fail_code=3001)
    assert not r.halted and r.failures == {"1.1.0": 2}
    assert _update(r, "m2", T0 + 2)  # a success does not reset the count
    assert _update(r, "m3", T0 + 3, fail_code=3010)
    assert r.halted and r.halts["1.1.0"].instance == "m3"
    assert r.halts["1.1.0"].failures == 3
    assert not r.check("m4", "1.0.0", T0 + 4).grant


def test_never_halting_and_safe_mode() -> None:
    r = Rollout(GroupPolicy(halt_after_failures=0), "1.1.0")
    for i in range(5):
        assert _update(r, f"m{i}", T0 + i, fail_code=44)
    assert not r.halted and r.failures["1.1.0"] == 5
    # Safe mode halts on the first failure whatever the threshold says.
    r = Rollout(GroupPolicy(safe_mode=True, halt_after_failures=5), "1.1.0")
    assert _update(r, "m0", T0, fail_code=44)
    assert r.halted


def test_resume_lifts_the_halt_and_restarts_the_count() -> None:
    r = Rollout(GroupPolicy(halt_after_failures=2), "1.1.0")
    assert _update(r, "m0", T0, fail_code=44)
    assert _update(r, "m1", T0 + 1, fail_code=44)
    assert r.halted
    assert r.resume("1.2.0") is None  # not halted: nothing to resume
    halt = r.resume()
    assert halt is not None and halt.instance == "m1"
    assert not r.halted and r.failures == {}
    # The machines that failed on 1.1.0 never get it again; the others do.
    assert not r.check("m0", "1.0.0", T0 + 10).grant
    assert _update(r, "m2", T0 + 11, fail_code=44)
    assert not r.halted  # one failure since the resume, threshold 2
    assert _update(r, "m3", T0 + 12)
    assert r.instances["m3"].status == InstanceStatus.COMPLETE


def test_a_halt_stays_with_its_version() -> None:
    r = Rollout(GroupPolicy(), "1.1.0")
    assert _update(r, "m0", T0, fail_code=44)
    r.set_target("1.1.1")  # a fixed release rolls out
    assert not r.halted and _update(r, "m1", T0 + 1)
    r.set_target("1.1.0")  # pointing the channel back does not lift the halt
    assert r.halted and not r.check("m2", "1.0.0", T0 + 2).grant
    assert set(r.halts) == {"1.1.0"}


def test_halt_threshold_is_validated() -> None:
    with pytest.raises(ValueError, match="halt after failures"):
        GroupPolicy(halt_after_failures=-1)


# ---------------------------------------------------------------------------- fleet gate


def test_fleet_gate_on_a_virtual_clock() -> None:
    gate = FleetGate(window=30, booted_at=100)
    up, down = UnitObservation("web.service", "active"), UnitObservation("db.service")
    assert gate.observe(101, []).verdict == GateVerdict.OK  # nothing scheduled here
    assert gate.observe(105, [up]).verdict == GateVerdict.OK
    waiting = gate.observe(110, [up, down])
    assert waiting.verdict == GateVerdict.WAIT and "db.service (no state)" in waiting.detail
    failed = gate.observe(130, [up, UnitObservation("db.service", "failed")])
    assert failed == gate.observe(130, [UnitObservation("db.service", "failed"), up])
    assert failed.verdict == GateVerdict.FAIL
    assert failed.code == ErrorCode.CORRAL_FLEET_UNITS_INACTIVE
    assert "db.service (failed)" in failed.detail
    lost = gate.observe(131, None)
    assert (lost.verdict, lost.code) == (GateVerdict.FAIL, ErrorCode.CORRAL_FLEET_UNREACHABLE)
    assert gate.observe(129, None).verdict == GateVerdict.WAIT
    with pytest.raises(ValueError):
        FleetGate(window=0, booted_at=0)


def test_fleet_window_opens_when_the_machines_fleet_agent_is_back() -> None:
    """A slow boot is not a unit's failure: the window restarts while fleet is not back."""
    gate = FleetGate(window=10, booted_at=0)
    assert gate.observe(5, None).verdict == GateVerdict.WAIT  # the KV member restarting
    for now, seen in ((9, "not registered"), (25, "runs 1.0.0")):
        waiting = gate.observe(now, [UnitObservation(FLEET_AGENT, seen)])
        assert (waiting.verdict, waiting.detail) == (GateVerdict.WAIT, f"fleet agent {seen}")
    down = UnitObservation("hello.service", "failed")
    assert gate.observe(34, [down]).verdict == GateVerdict.WAIT  # 9 s since fleet was back
    failed = gate.observe(35, [down])
    assert (failed.verdict, failed.code) == (GateVerdict.FAIL,
                                             ErrorCode.CORRAL_FLEET_UNITS_INACTIVE)
    assert "hello.service (failed)" in failed.detail


def test_kv_fleet_view_reads_fleets_registry(real_etcd: ServerProcess) -> None:
    """fleet's registry in a real etcd, written by corral's fleet registry: the units fleet's
    agent would run here (targeted here, or global and matching the metadata) and launched
    count, once this machine's fleet agent is registered on the booted version."""
    from corral.client.aio import AsyncClient
    from corral.fleet.registry import JobState, MachineState, UnitStateRecord
    from corral.fleet.store import Registry
    from corral.fleet.unitfile import UnitFile

    plain = UnitFile.parse("[Service]\nExecStart=/bin/true\n")
    web_only = UnitFile.parse("[Service]\nExecStart=/bin/true\n"
                              "[X-Fleet]\nGlobal=true\nMachineMetadata=role=web\n")
    everywhere = UnitFile.parse("[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\n")
    version = {"m1": "1.1.0"}
    view = KvFleetView(real_etcd.client_url, "m1", expected_version=lambda: version["m1"])

    async def main() -> None:
        async with AsyncClient(real_etcd.client_url) as c:
            reg = Registry(c)
            assert await view() == [UnitObservation(FLEET_AGENT, "not registered")]
            await reg.register_machine(MachineState("m1", metadata={"role": "db"},
                                                    version="1.0.0"), 60)
            await reg.register_machine(MachineState("m2", version="1.1.0"), 60)
            assert await view() == [UnitObservation(FLEET_AGENT, "runs 1.0.0")]
            await reg.beat(MachineState("m1", metadata={"role": "db"}, version="1.1.0"), 60)
            assert await view() == []
            for name, unit, state in (("web.service", plain, JobState.LAUNCHED),
                                      ("db.service", plain, JobState.LAUNCHED),
                                      ("idle.service", plain, JobState.LOADED),
                                      ("other.service", plain, JobState.LAUNCHED),
                                      ("front.service", web_only, JobState.LAUNCHED),
                                      ("monitor.service", everywhere, JobState.LAUNCHED)):
                await reg.create_unit(name, unit, state)
            for name in ("web.service", "db.service", "idle.service"):
                await reg.schedule_unit(name, "m1")
            await reg.schedule_unit("other.service", "m2")
            await reg.save_unit_state("web.service", UnitStateRecord(
                "loaded", "active", "running", "m1", plain.hash_hex), 60)
            await reg.save_unit_state("monitor.service", UnitStateRecord(
                "loaded", "failed", "failed", "m1", everywhere.hash_hex), 60)
            await reg.save_unit_state("other.service", UnitStateRecord(
                "loaded", "failed", "failed", "m1", plain.hash_hex), 60)
            assert await view() == [UnitObservation("db.service"),
                                    UnitObservation("monitor.service", "failed", "failed"),
                                    UnitObservation("web.service", "active", "running")]
            # Another machine's view, and another prefix: nothing of m1's.
            assert await KvFleetView(real_etcd.client_url, "m2")() == [
                UnitObservation("monitor.service"), UnitObservation("other.service")]
            assert await KvFleetView(real_etcd.client_url, "m1", prefix="/none/")() == [
                UnitObservation(FLEET_AGENT, "not registered")]

    asyncio.run(main())


def test_kv_fleet_view_unreachable() -> None:
    from corral.testing.ports import free_port

    async def main() -> None:
        view = KvFleetView(f"http://127.0.0.1:{free_port()}", "m1", timeout=1.0)
        with pytest.raises(FleetUnavailable):
            await view()

    asyncio.run(main())


# ---------------------------------------------------------------------------- server API


async def _api(s: ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with s.request(method, url, **kw) as resp:
        return resp.status, await resp.json()


def test_server_records_halts_exposes_them_and_resumes(tmp_path: Path, signed_110: bytes,
                                                       release_key: Keys) -> None:
    async def main() -> None:
        store = Store(tmp_path / "srv")
        bootstrap(store)
        server = TestServer(make_app(UpdateServer(store, clock=lambda: T0),
                                     admin_token="tok"), host="127.0.0.1")
        await server.start_server()
        base = str(server.make_url("")).rstrip("/")
        h = {"Authorization": "Bearer tok"}
        group_url = f"{base}/api/apps/{APP}/groups/stable"
        try:
            async with ClientSession() as s:
                await _api(s, "PUT", f"{base}/api/apps/{APP}/packages/1.1.0", data=signed_110,
                           headers=h)
                await _api(s, "PUT", f"{base}/api/apps/{APP}/channels/stable",
                           json={"version": "1.1.0"}, headers=h)
                rollout = store.rollouts[(APP, "stable")]
                assert _update(rollout, "m1", T0, fail_code=3010)
                store._save_group(APP, "stable")
                status, doc = await _api(s, "GET", f"{group_url}/rollout", headers=h)
                assert status == 200 and doc["halted"] and doc["target"] == "1.1.0"
                (halt,) = doc["halts"]
                assert (halt["version"], halt["instance"], halt["code"], halt["at"]) == (
                    "1.1.0", "m1", 3010, T0 + 5)
                assert halt["code_name"] == "CORRAL_FLEET_UNITS_INACTIVE"
                assert doc["instances"][0]["failed_versions"] == ["1.1.0"]
                # Token-guarded admin API; the public read-only copy needs none.
                assert (await _api(s, "GET", f"{group_url}/rollout"))[0] == 401
                status, public = await _api(s, "GET", f"{base}/v1/rollout/stable")
                assert status == 200 and public == doc
                status, err = await _api(s, "GET", f"{base}/v1/rollout/nope")
                assert status == 404 and "unknown group" in err["error"]
                # Resume: wrong version / bad version / the real one.
                status, err = await _api(s, "POST", f"{group_url}/rollout/resume",
                                         json={"version": "9.9.9"}, headers=h)
                assert status == 409 and "not halted" in err["error"]
                status, err = await _api(s, "POST", f"{group_url}/rollout/resume",
                                         json={"version": "x"}, headers=h)
                assert status == 400
                status, out = await _api(s, "POST", f"{group_url}/rollout/resume", headers=h)
                assert status == 200 and out["resumed"] == "1.1.0"
                assert "m1" in out["was"]["reason"]
                status, doc = await _api(s, "GET", f"{group_url}/rollout", headers=h)
                assert not doc["halted"] and doc["halts"] == [] and doc["failures"] == {}
                _, activity = await _api(s, "GET", f"{base}/api/activity", headers=h)
                assert "resumed by an operator" in activity[-1]["message"]
        finally:
            await server.close()
            store.close()

    asyncio.run(main())


def test_halts_survive_a_server_restart(tmp_path: Path, signed_110: bytes) -> None:
    store = Store(tmp_path / "srv")
    bootstrap(store, policy=GroupPolicy(halt_after_failures=2))
    store.add_package(APP, "1.1.0", "p", signed_110, T0)
    store.set_channel(APP, "stable", "1.1.0")
    r = store.rollouts[(APP, "stable")]
    assert _update(r, "m1", T0, fail_code=44)
    store._save_group(APP, "stable")
    store.close()
    store = Store(tmp_path / "srv")
    assert store.rollouts[(APP, "stable")].failures == {"1.1.0": 1}
    r = store.rollouts[(APP, "stable")]
    assert _update(r, "m2", T0, fail_code=44)
    store._save_group(APP, "stable")
    store.close()
    store = Store(tmp_path / "srv")
    doc = store.rollout_status(APP, "stable", T0)
    assert doc["halted"] and doc["halts"][0]["instance"] == "m2"
    store.close()


# ---------------------------------------------------------------------------- the agent


class BreakingRelease:
    """The fleet seam: under 1.1.0 `web.service` never becomes active (or fleet is gone)."""

    def __init__(self, fleet_down: bool) -> None:
        self.agent: Agent | None = None
        self.fleet_down = fleet_down
        self.asked_under: set[str] = set()

    async def __call__(self) -> Sequence[UnitObservation]:
        assert self.agent is not None
        self.asked_under.add(self.agent.version)
        if self.agent.version != "1.1.0":
            return [UnitObservation("web.service", "active")]
        if self.fleet_down:
            raise ConnectionRefusedError("fleet registry is down")
        return [UnitObservation("web.service", "failed")]


async def _until_settled(agent: Agent, good: bool, boots: int) -> None:
    for _ in range(1000):
        await agent._health_step()
        if agent.good == good and agent.boots >= boots:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"agent never reached good={good} boots={boots}")


@pytest.mark.parametrize("fleet_down", [False, True], ids=["unit-failed", "fleet-down"])
def test_a_release_that_breaks_a_fleet_unit_halts_the_rollout(
        tmp_path: Path, release_key: Keys, signed_110: bytes, signed_100: bytes,
        fleet_down: bool) -> None:
    view = BreakingRelease(fleet_down)
    code = (ErrorCode.CORRAL_FLEET_UNREACHABLE if fleet_down
            else ErrorCode.CORRAL_FLEET_UNITS_INACTIVE)

    async def body(agent: Agent, store: Store) -> None:
        view.agent = agent
        agent.config.fleet_view = view
        agent.config.fleet_window = 0.5
        agent.config.health_period = 0.05
        agent._health.period = 0.05  # this boot's gate was set up with the old value
        await _until_settled(agent, good=True, boots=1)  # 1.0.0 with web.service active
        assert await agent.check_once() == "updated to 1.1.0; reboot needed"
        await agent.reboot()
        assert (agent.version, agent.boots) == ("1.1.0", 2)
        # web.service never comes back under 1.1.0: window closes, reboot, fallback.
        await _until_settled(agent, good=True, boots=3)
        assert (agent.version, agent.booted_slot) == ("1.0.0", "a")
        assert agent.fell_back_from == ["1.1.0"]
        fallback = agent.status_doc()["last_fallback"]
        assert fallback["code"] == code
        assert ("unreachable" if fleet_down else "web.service (failed)") in fallback["detail"]
        # Only the slot on trial was judged by fleet; proven slot a was not.
        assert view.asked_under == {"1.1.0"}
        # The next check reports it through Omaha: 3/0 with corral's code.
        assert await agent.check_once() == "no update"
        events = store.events()
        assert (events[-1]["type"], events[-1]["result"], events[-1]["error_code"]) == (
            3, 0, code)
        assert events[-1]["version"] == "1.0.0"
        doc = store.rollout_status(APP, "stable", 0)
        assert doc["halted"]
        halt = doc["halts"][0]
        assert (halt["version"], halt["instance"], halt["code"]) == (
            "1.1.0", agent.machine_id, code)
        assert any(a["message"].startswith("rollout halted: 1.1.0: instance")
                   for a in store.activity())
        # Another machine of the group is not offered the halted version...
        other = await _second_machine(tmp_path, agent, signed_100)
        try:
            assert await other.check_once() == "no update"
            assert other.slots.slot_version("b") is None
            # ...until an operator resumes the rollout; the failed machine still never is.
            store.resume(APP, "stable", None, 0)
            assert await agent.check_once() == "no update"
            assert await other.check_once() == "updated to 1.1.0; reboot needed"
        finally:
            await other._stop_services()

    with_machine(tmp_path, release_key, signed_110, body, base_payload=signed_100)


async def _second_machine(tmp_path: Path, first: Agent, base_payload: bytes) -> Agent:
    from corral.update.agent import provision

    trusted = first.config.trusted_keys
    provision(tmp_path / "m2", base_payload, trusted)
    other = Agent(AgentConfig(root=tmp_path / "m2", server=first.config.server,
                              trusted_keys=trusted, services=[SLEEPER]))
    await other.boot()
    return other


def test_cli_rollout_status_and_resume(tmp_path: Path, signed_110: bytes,
                                       release_key: Keys) -> None:
    """`corral updatectl rollout` and `corral update status --rollout` on a real server."""
    import subprocess
    import sys
    import time
    import urllib.request

    from corral.testing.ports import free_port

    port = free_port()
    data = tmp_path / "srv"
    store = Store(data)
    bootstrap(store)
    store.add_package(APP, "1.1.0", "p", signed_110, T0)
    store.set_channel(APP, "stable", "1.1.0")
    assert _update(store.rollouts[(APP, "stable")], "m1", T0, fail_code=3010)
    store._save_group(APP, "stable")
    store.save_instance(APP, "stable", store.rollouts[(APP, "stable")].instances["m1"])
    store.close()
    proc = subprocess.Popen([sys.executable, "-m", "corral", "update-server", "--data-dir",
                             str(data), "--port", str(port)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/api/apps", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        run = CliRunner().invoke
        r = run(cli, ["updatectl", "--server", url, "rollout", "status"])
        assert r.exit_code == 0, r.output
        assert "HALTED: 1.1.0: instance m1 failed (code 3010)" in r.output
        assert "CORRAL_FLEET_UNITS_INACTIVE" in r.output
        assert "m1       1.0.0    ERROR" in r.output
        r = run(cli, ["updatectl", "--server", url, "rollout", "resume", "--version", "2.0.0"])
        assert r.exit_code == 1 and "2.0.0 is not halted" in r.output
        assert "Traceback" not in r.output
        r = run(cli, ["updatectl", "--server", url, "rollout", "resume"])
        assert r.exit_code == 0 and "rollout of 1.1.0 resumed" in r.output
        r = run(cli, ["updatectl", "--server", url, "rollout", "status", "--json"])
        assert json.loads(r.output)["halted"] is False
        r = run(cli, ["updatectl", "--server", url, "rollout", "status", "--group", "nope"])
        assert r.exit_code == 1 and "unknown group" in r.output
        # On a machine without an agent, given the server.
        r = run(cli, ["update", "status", "--root", str(tmp_path / "none"), "--rollout",
                      "--server", url + "/v1/update/"])
        assert r.exit_code == 0 and "group stable: target 1.1.0" in r.output, r.output
        r = run(cli, ["update", "status", "--root", str(tmp_path / "none"), "--rollout",
                      "--server", f"http://127.0.0.1:{free_port()}"])
        assert r.exit_code == 1 and "cannot reach the update server" in r.output
        # `corral update status --rollout` with a running agent's status document.
        _agent_status_via_cli(tmp_path, url, release_key)
    finally:
        proc.terminate()
        proc.wait(10)


def _agent_status_via_cli(tmp_path: Path, url: str, release_key: Keys) -> None:
    from corral.update.agent import provision
    from corral.update.payload import build_payload, load_private_key, sign_payload

    from .conftest import SOURCE

    payload = sign_payload(build_payload(SOURCE, "1.0.0"), load_private_key(release_key[0]))
    trusted = load_public_keys([release_key[1]])
    provision(tmp_path / "m", payload, trusted)
    agent = Agent(AgentConfig(root=tmp_path / "m", server=url + "/v1/update/",
                              trusted_keys=trusted, services=[SLEEPER], initial_check=3600))

    async def main() -> str:
        task = asyncio.ensure_future(agent.run())
        sock = tmp_path / "m/run/update-agent.sock"
        for _ in range(500):
            if sock.exists():
                break
            await asyncio.sleep(0.01)
        r = await asyncio.to_thread(CliRunner().invoke, cli,
                                    ["update", "status", "--root", str(tmp_path / "m"),
                                     "--rollout"])
        agent._stopping.set()
        await asyncio.wait_for(task, 30)
        assert r.exit_code == 0, r.output
        return r.output

    out = asyncio.run(main())
    assert "CURRENT_OP=UPDATE_STATUS_IDLE" in out and "VERSION=1.0.0 SLOT=a" in out
    assert "group stable: target 1.1.0; 0/1 machines updated" in out
    assert "m1       1.0.0    ERROR" in out and "HALTED" not in out  # resumed above


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 30), threshold=st.integers(0, 4), limit=st.integers(1, 5),
       failing=st.sets(st.integers(0, 29), max_size=10), seed=st.integers(0, 2**16))
def test_a_halted_version_is_never_granted_again(n: int, threshold: int, limit: int,
                                                 failing: set[int], seed: int) -> None:
    """Any fleet, any failures: after the halt, no grant of the version; halted iff the
    version's failures reached the threshold."""
    rng = random.Random(seed)
    r = Rollout(GroupPolicy(halt_after_failures=threshold, max_updates_per_period=limit,
                            period_seconds=30, update_timeout_seconds=30), "1.1.0")
    now, halted_at = T0, None
    for _ in range(10 * n):
        now += rng.uniform(0, 10)
        i = rng.randrange(n)
        if r.instances.get(f"m{i}", None) is not None and \
                r.instances[f"m{i}"].status == InstanceStatus.COMPLETE:
            continue
        granted = _update(r, f"m{i}", now, fail_code=3010 if i in failing else None)
        if halted_at is not None:
            assert not granted
        if r.halted and halted_at is None:
            halted_at = now
    failures = r.failures.get("1.1.0", 0)
    assert failures == sum(1 for s in r.instances.values() if "1.1.0" in s.failed_versions)
    assert r.halted == (threshold > 0 and failures >= threshold)
    if r.halted:
        assert r.halts["1.1.0"].instance in {f"m{i}" for i in failing}
        assert r.halts["1.1.0"].failures == threshold == failures
