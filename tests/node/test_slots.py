"""A machine with A/B slots: its services run the active slot's software, and a reboot into
the other slot restarts them from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import corral
from corral.testing.ports import free_ports
from corral.units.api import UnitsClient
from corral.update.agent import provision
from corral.update.payload import (
    build_payload,
    generate_key,
    load_private_key,
    load_public_keys,
    sign_payload,
)
from corral.update.slots import mark_updated, open_slots

from .conftest import Machine, eventually, kv_config

SOURCE = Path(corral.__file__).resolve().parent.parent


def _pythonpath(pid: int) -> str:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return ""
    for item in env:
        if item.startswith(b"PYTHONPATH="):
            return item.split(b"=", 1)[1].decode()
    return ""


def _processes_of(root: Path) -> list[int]:
    """Pids of processes whose environment names this machine root."""
    marker = f"CORRAL_MACHINE_ROOT={root}".encode()
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in proc.joinpath("environ").read_bytes().split(b"\0"):
                out.append(int(proc.name))
        except OSError:
            continue
    return out


def test_services_run_the_active_slot_and_move_with_a_reboot(
    tmp_path: Path, machines: list[Machine]
) -> None:
    private, public = generate_key()
    key = load_private_key(private)
    root = tmp_path / "m1"
    provision(root, sign_payload(build_payload(SOURCE, "1.0.0"), key),
              load_public_keys([public]))
    client, peer, omaha = free_ports(3)
    # Nothing listens on the Omaha port: the agent's first check is minutes away anyway.
    update = f"""  update:
    server: http://127.0.0.1:{omaha}/v1/update/
    reboot_strategy: etcd-lock
  locksmith:
    group: web
"""
    cfg = tmp_path / "m1.yml"
    cfg.write_text(kv_config("m1", client, peer, f"m1=http://127.0.0.1:{peer}", update))
    m = Machine(root, cfg, client)
    machines.append(m)
    m.start()
    eventually(m.up, 60, "the machine to come up")
    units = UnitsClient(root, timeout=10)

    def kv_runs_from(slot: str) -> bool:
        st = units.call("status", unit="etcd2.service")
        pid = st.get("main_pid")
        return (st["active_state"] == "active" and isinstance(pid, int)
                and _pythonpath(pid) == str(root / "slots" / slot))

    eventually(lambda: kv_runs_from("a"), 60, "etcd2 running from slot a")
    for unit in ("update-engine.service", "locksmithd.service"):
        eventually(lambda unit=unit: units.call("status", unit=unit)["active_state"]
                   == "active", 30, unit)
    eventually(lambda: (root / "run/update-agent.sock").exists(), 30, "the agent's socket")

    # What the update agent does after a download: write the other slot, make it next.
    slots = open_slots(root / "slots")
    slots.write_slot("b", sign_payload(build_payload(SOURCE, "1.1.0"), key))
    slots.write_table(mark_updated(slots.read_table(), "b"))
    out = subprocess.run([sys.executable, "-m", "corral", "update", "reboot", "--root",
                          str(root)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr

    eventually(lambda: kv_runs_from("b"), 60, "etcd2 restarted from slot b")
    eventually(lambda: m.put("after-reboot", "yes") is not None, 60, "the KV after the reboot")
    assert "slot b booted: restarting services from it" in m.output()
    # locksmith runs beside the agent, from the new slot too, and stays up.
    st = units.call("status", unit="locksmithd.service")
    assert st["active_state"] == "active"
    assert st["restart_count"] == 0, st["journal"]
    assert _pythonpath(st["main_pid"]) == str(root / "slots/b")
    assert _processes_of(root)  # the services carry the marker
    assert m.stop() == 0
    # Everything the machine started is gone: services, agent, the agent's own services.
    eventually(lambda: _processes_of(root) == [], 10, "no process of the machine left")
