"""The timers `corral up` gives its machines, and how a node turns them into its units."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.cloudinit import parse, validate
from corral.node.plan import Software, plan_node
from corral.up.plan import UpdateTimers, UpError, plan_cluster

IDS = [f"{i:032x}" for i in range(1, 4)]


def _ports(n: int) -> list[int]:
    return list(range(42000, 42000 + 2 * n + 1))


def test_timers_reach_the_agent_and_locksmith_as_drop_ins(tmp_path: Path) -> None:
    timers = UpdateTimers(interval=7, fleet_window=11, lock_retry=0.5, lock_retry_max=3)
    plan = plan_cluster(3, tmp_path, _ports(3), IDS, timers=timers)
    m = plan.machines[0]
    report = validate(m.cloud_config)
    assert not [e for e in report.entries if e.kind == "error"], report
    node = plan_node(
        parse(m.cloud_config),
        root=str(m.root),
        machine_id=IDS[0],
        hostname="m1",
        software=Software("/py", str(m.root / "slots/a"), "a"),
        slots_provisioned=True,
    )
    files = {f.path: f.content.decode() for f in node.files}
    agent = files["etc/corral/units/update-engine.service.d/10-timers.conf"]
    assert "Environment=CORRAL_UPDATE_INTERVAL=7\n" in agent
    assert "Environment=CORRAL_UPDATE_FLEET_WINDOW=11\n" in agent
    assert "LOCKSMITHD" not in agent
    lock = files["etc/corral/units/locksmithd.service.d/10-timers.conf"]
    assert "Environment=LOCKSMITHD_RETRY_INTERVAL=0.5\n" in lock
    assert "Environment=LOCKSMITHD_MAX_RETRY_INTERVAL=3\n" in lock
    # The agent watches fleet's units on its machine, through the machine's own member.
    unit = files["run/corral/units/update-engine.service"]
    assert f'"--fleet-endpoint" "{m.client_url}"' in unit


def test_agent_environment_names_every_option_it_sets() -> None:
    env = UpdateTimers().agent_environment()
    assert set(env) == {
        f"CORRAL_UPDATE_{n}"
        for n in (
            "INITIAL_CHECK",
            "INITIAL_FUZZ",
            "INTERVAL",
            "INTERVAL_FUZZ",
            "HEALTH_PERIOD",
            "BOOT_DEADLINE",
            "FLEET_WINDOW",
        )
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval": 0}, "must be positive"),
        ({"health_period": -1}, "must not be negative"),
        ({"fleet_window": 30, "boot_deadline": 30}, "boot_deadline must exceed fleet_window"),
        ({"lock_retry": 5, "lock_retry_max": 1}, "lock_retry"),
    ],
)
def test_bad_timers_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(UpError, match=message):
        UpdateTimers(**kwargs)
