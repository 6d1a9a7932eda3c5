"""The pure core: what a cloud-config makes a machine write and run."""

from __future__ import annotations

import pytest

from corral.cloudinit import parse
from corral.node import NodePlan, Service, Software, UnsupportedConfig, plan_node
from corral.node.plan import substitute

SOFTWARE = Software(python="/opt/py/bin/python3", pythonpath="/m/slots/b", slot="b")


def _plan(
    text: str, *, slots_provisioned: bool = False, fleetd_available: bool = True
) -> NodePlan:
    return plan_node(
        parse(text), root="/m", machine_id="ab" * 16, hostname="h", software=SOFTWARE,
        slots_provisioned=slots_provisioned, fleetd_available=fleetd_available,
    )


def _file(plan: NodePlan, path: str) -> str:
    for f in plan.files:
        if f.path == path:
            return f.content.decode()
    raise AssertionError(f"{path} not planned")


ETCD = """#cloud-config
coreos:
  etcd2:
    name: n1
    data_dir: /var/lib/mydata
    listen_client_urls: http://0.0.0.0:4001
  fleet:
    metadata: role=web
  update:
    server: http://127.0.0.1:8000/v1/update/
    reboot_strategy: etcd-lock
  locksmith:
    group: web
"""


def test_services_run_the_slot_software_with_the_config_environment() -> None:
    plan = _plan(ETCD, slots_provisioned=True)
    assert plan.services == (Service.KV, Service.FLEET, Service.UPDATE, Service.LOCKSMITH)
    etcd = _file(plan, "run/corral/units/etcd2.service")
    assert 'Environment="PYTHONPATH=/m/slots/b"' in etcd
    assert 'Environment="ETCD_NAME=n1"' in etcd
    # Paths in the etcd2 section are re-rooted under the machine root.
    assert 'Environment="ETCD_DATA_DIR=/m/var/lib/mydata"' in etcd
    assert 'ExecStart="/opt/py/bin/python3" "-m" "corral" "etcd"' in etcd
    fleet = _file(plan, "run/corral/units/fleet.service")
    assert 'Environment="FLEET_METADATA=role=web"' in fleet
    assert 'Environment="FLEET_ETCD_SERVERS=http://127.0.0.1:4001"' in fleet
    assert "After=etcd2.service" in fleet
    agent = _file(plan, "run/corral/units/update-engine.service")
    # The boot loader runs outside the slots (not with the units' DefaultEnvironment=).
    assert "PYTHONPATH=" not in agent and "UnsetEnvironment=PYTHONPATH" in agent
    assert '"--health-unit" "etcd2.service"' in agent
    lock = _file(plan, "run/corral/units/locksmithd.service")
    assert 'Environment="LOCKSMITHD_GROUP=web"' in lock
    assert 'Environment="REBOOT_STRATEGY=etcd-lock"' in lock


def test_what_is_left_out_is_said() -> None:
    plan = _plan(ETCD, slots_provisioned=False, fleetd_available=False)
    assert plan.services == (Service.KV,)
    text = "\n".join(plan.notes)
    assert "no slots" in text and "no fleetd" in text and "locksmith" in text


def test_defaults_machine_id_names_the_member_and_data_dir_stays_in_root() -> None:
    plan = _plan("#cloud-config\ncoreos:\n  etcd2:\n    heartbeat_interval: 50\n")
    etcd = _file(plan, "run/corral/units/etcd2.service")
    assert f'Environment="ETCD_NAME={"ab" * 16}"' in etcd
    assert 'Environment="ETCD_DATA_DIR=/m/var/lib/etcd2"' in etcd
    assert plan.client_url == "http://127.0.0.1:2379"


def test_corral_ports_set_the_member_urls() -> None:
    plan = _plan("#cloud-config\ncoreos:\n  etcd2:\n    name: x\ncorral:\n"
                 "  ports:\n    client: 5001\n    peer: 5002\n")
    etcd = _file(plan, "run/corral/units/etcd2.service")
    assert 'Environment="ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:5001"' in etcd
    assert 'Environment="ETCD_INITIAL_ADVERTISE_PEER_URLS=http://127.0.0.1:5002"' in etcd
    assert plan.client_url == "http://127.0.0.1:5001"


def test_units_are_copied_where_the_runner_reads_them_with_their_commands() -> None:
    plan = _plan("""#cloud-config
coreos:
  units:
    - name: a.service
      command: start
      enable: true
      content: "[Service]\\nExecStart=/bin/true\\n"
      drop_ins: [{name: 10-x.conf, content: "[Service]\\nEnvironment=A=1\\n"}]
    - name: b.service
      runtime: true
      command: restart
      content: "[Service]\\nExecStart=/bin/true\\n"
    - name: c.service
      mask: true
""")
    paths = {f.path for f in plan.files}
    assert {"etc/corral/units/a.service", "etc/corral/units/a.service.d/10-x.conf",
            "run/corral/units/b.service"} <= paths
    assert not any(p.startswith("etc/corral/units/c.service") for p in paths)
    assert [(c.unit, c.command) for c in plan.commands] == [
        ("a.service", "start"), ("b.service", "restart")]
    assert plan.enable == ("a.service",)
    assert any("c.service" in n and "mask" in n for n in plan.notes)


@pytest.mark.parametrize("value", ["on", "readonly"])
def test_kv_proxy_runs_corral_etcd_as_a_proxy(value: str) -> None:
    text = (f"#cloud-config\ncoreos:\n  etcd2:\n    proxy: {value}\n"
            "    initial_cluster: a=http://127.0.0.1:7001\n")
    plan = _plan(text)
    assert plan.services == (Service.KV,)
    unit = _file(plan, "run/corral/units/etcd2.service")
    assert "Description=corral KV proxy (etcd2)" in unit
    assert f'Environment="ETCD_PROXY={value}"' in unit
    assert 'Environment="ETCD_INITIAL_CLUSTER=a=http://127.0.0.1:7001"' in unit
    # A corral without the proxy mode (say, an old slot) refuses it clearly.
    with pytest.raises(UnsupportedConfig, match=r"non-voting KV proxy.*no proxy mode"):
        plan_node(parse(text), root="/m", machine_id="ab" * 16, hostname="h",
                  software=SOFTWARE, kv_proxy_available=False)


def test_values_are_quoted_for_the_unit_file() -> None:
    plan = _plan('#cloud-config\ncoreos:\n  fleet:\n    metadata: "a=\\"%x\\\\"\n')
    fleet = _file(plan, "run/corral/units/fleet.service")
    assert 'Environment="FLEET_METADATA=a=\\"%%x\\\\"' in fleet


def test_the_plan_is_deterministic() -> None:
    assert _plan(ETCD, slots_provisioned=True) == _plan(ETCD, slots_provisioned=True)


def test_metadata_is_substituted_as_coreos_cloudinit_did() -> None:
    data = b"a: http://$private_ipv4:2379 ${public_ipv4} $public_ipv6 $other"
    out = substitute(data, {"private_ipv4": "10.0.0.1", "public_ipv4": "1.2.3.4",
                            "public_ipv6": "::1"})
    assert out == b"a: http://10.0.0.1:2379 1.2.3.4 ::1 $other"
