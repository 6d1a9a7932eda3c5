"""The pure plan of `corral up`: ports, configs, metadata and the state file's format."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.cloudinit import validate
from corral.up.plan import ClusterPlan, FleetMode, UpError, plan_cluster

IDS = [f"{i:032x}" for i in range(1, 10)]


def _ports(n: int, start: int = 41000) -> list[int]:
    return list(range(start, start + 2 * n + 1))


def test_three_machines_name_each_other_and_validate(tmp_path: Path) -> None:
    plan = plan_cluster(3, tmp_path, _ports(3), IDS[:3], fleet=FleetMode.NODE)
    assert plan.names == ("m1", "m2", "m3")
    assert plan.update_port == 41006
    initial = ("m1=http://127.0.0.1:41001,m2=http://127.0.0.1:41003,"
               "m3=http://127.0.0.1:41005")
    for m in plan.machines:
        assert f"initial_cluster: {initial}" in m.cloud_config
        assert "server: http://127.0.0.1:41006/v1/update/" in m.cloud_config
        assert f"machine_id: {m.machine_id}" in m.cloud_config
        report = validate(m.cloud_config)
        assert not [e for e in report.entries if e.kind == "error"], report
    assert [m.metadata for m in plan.machines] == [
        "role=web,name=m1", "role=web,name=m2", "role=db,name=m3"]
    assert "fleet:" in plan.machines[0].cloud_config


def test_separate_fleet_keeps_fleet_out_of_the_node_config(tmp_path: Path) -> None:
    plan = plan_cluster(2, tmp_path, _ports(2), IDS[:2], fleet=FleetMode.SEPARATE)
    assert plan.fleet is FleetMode.SEPARATE
    assert all("fleet:" not in m.cloud_config for m in plan.machines)


def test_default_fleet_runs_in_the_node(tmp_path: Path) -> None:
    plan = plan_cluster(2, tmp_path, _ports(2), IDS[:2])
    assert plan.fleet is FleetMode.NODE
    assert all("fleet:" in m.cloud_config for m in plan.machines)


@pytest.mark.parametrize(
    ("n", "ports", "ids", "message"),
    [
        (0, [], [], "between 1 and 9"),
        (10, _ports(10), [*IDS, "f" * 32], "between 1 and 9"),
        (2, _ports(1), IDS[:2], "need 5 ports"),
        (1, [2379, 2380, 5000], IDS[:1], "system etcd"),
        (1, [5000, 5000, 5001], IDS[:1], "collide"),
        (2, _ports(2), [IDS[0], IDS[0]], "distinct machine ids"),
        (1, _ports(1), ["not-hex"], "32 hex digits"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(
    tmp_path: Path, n: int, ports: list[int], ids: list[str], message: str
) -> None:
    with pytest.raises(UpError, match=message):
        plan_cluster(n, tmp_path, ports, ids)


@given(st.integers(1, 9), st.sampled_from(list(FleetMode)))
def test_the_state_file_round_trips(n: int, fleet: FleetMode) -> None:
    plan = plan_cluster(n, Path("/srv/cluster"), _ports(n), IDS[:n], fleet=fleet)
    assert ClusterPlan.from_json(plan.to_json()) == plan
    ports = [p for m in plan.machines for p in (m.client_port, m.peer_port)]
    assert len(set(ports)) == 2 * n and plan.update_port not in ports


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "not a JSON object"),
        ({"version": 2}, "version 2"),
        ({"version": 1, "machines": [{}]}, "malformed"),
    ],
)
def test_a_bad_state_file_is_a_clear_error(doc: object, message: str) -> None:
    with pytest.raises(UpError, match=message):
        ClusterPlan.from_json(doc)
