"""The health-gated rollout on three real machines (`corral demo --steps updates`).

Everything is real: three `corral node` machines (KV members, fleetd with the units runner,
update agents, locksmithd) and one `corral update-server`, with the timers `corral up` gives
a local cluster (checks every few seconds, a 25 s fleet window). The tour's updates step
asserts as it goes (never two reboot-lock holders; a rebooting machine's fleet unit active on
another machine); this test checks its story and then the states it left, not timings:

* 1.1.0 rolled through every machine, each rebooting under locksmith's lock, and the fleet
  units a rebooting machine ran moved to another machine and were active there;
* 1.2.0, whose copy of the fleet unit's program exits 1 (the machine stays healthy), was
  taken by one machine only, whose fleet gate failed (code 3010): it fell back to 1.1.0;
  the server halted 1.2.0 with that machine and code (the step showed it with `corral
  updatectl rollout status` and `corral update status --rollout`); the other machines
  never installed it; the reboot lock is free and fleet's units are active.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from corral.locksmith import semaphore_key
from corral.up import load_state, stop_cluster
from corral.up.cluster import agent_status
from corral.update.server import CORRAL_APP_ID

from .conftest import corral, leftovers


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_a_good_release_rolls_a_bad_one_is_halted(cluster_dir: Path) -> None:
    out = corral("demo", "--dir", str(cluster_dir), "--steps", "updates", "--timeout", "120",
                 timeout=420, wide=True)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    for line in (
        "fleet: hello.service active on every machine, app@1 and app@2 placed",
        "1.1.0 rolled out one machine at a time",
        "while a machine rebooted its fleet units moved and were active elsewhere",
        "(while m",  # a move printed as it happened, during that machine's reboot
        "its fleet gate failed (code 3010, CORRAL_FLEET_UNITS_INACTIVE) and it fell back",
        "the server halted 1.2.0",
        "the other machines checked again, never installed 1.2.0 and run 1.1.0",
    ):
        assert line in text, f"missing {line!r} in:\n{text}"
    assert "FAILED updates" not in text

    state = load_state(cluster_dir)
    try:
        plan = state.plan
        agents = {m.name: agent_status(m.root) for m in plan.machines}
        ids = {st["machine_id"]: name for name, st in agents.items()}
        # Every machine runs 1.1.0 from a good slot; exactly one fell back from 1.2.0.
        assert {(st["version"], st["slot_good"]) for st in agents.values()} == {("1.1.0", True)}
        fell = [n for n, st in agents.items() if st["fell_back_from"] == ["1.2.0"]]
        assert len(fell) == 1, agents
        (bad,) = fell
        assert agents[bad]["last_fallback"]["code"] == 3010
        assert "hello.service" in agents[bad]["last_fallback"]["detail"]
        for name, st in agents.items():
            versions = {s["version"] for s in st["slots"]}
            assert ("1.2.0" in versions) == (name == bad), (name, st["slots"])
            assert "1.1.0" in versions

        # The server: 1.2.0 halted by that machine's report, with corral's code; the step
        # showed it with `corral updatectl rollout status` and `corral update status
        # --rollout` (both print the halt line).
        doc = _get(f"{plan.update_url}/v1/rollout/stable?app={CORRAL_APP_ID}")
        (halt,) = [h for h in doc["halts"] if h["version"] == "1.2.0"]
        assert (ids[halt["instance"]], halt["code"]) == (bad, 3010)
        assert halt["code_name"] == "CORRAL_FLEET_UNITS_INACTIVE"
        assert text.count("HALTED: 1.2.0") >= 2, text

        # No machine holds the reboot lock; fleet's units are active again.
        url = plan.machines[0].client_url + "/v2/keys"
        lock = _get(url + "/" + semaphore_key("corral-up").lstrip("/"))
        assert json.loads(lock["node"]["value"])["holders"] in (None, [])
        states = _get(url + "/_coreos.com/fleet/states?recursive=true")["node"]["nodes"]
        active = sorted(
            st["key"].split("/")[-2]
            for unit in states
            for st in unit.get("nodes", [])
            if json.loads(st["value"])["activeState"] == "active"
        )
        for unit in ("app@1.service", "app@2.service"):
            assert active.count(unit) == 1, active
        assert active.count("hello.service") == 3, active
    finally:
        stop_cluster(state, timeout=20, say=lambda _: None)
    assert leftovers(cluster_dir) == []
