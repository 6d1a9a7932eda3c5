"""The pure plan of a local cluster: which machines, on which ports, with which cloud-config.

`plan_cluster` decides everything `corral up` starts and nothing else: N machines named
``m1``…``mN`` on 127.0.0.1, each with its own root folder, a KV member whose
``initial_cluster`` names all N (etcd's static bootstrap, etcd v2 "Clustering" guide), fleet
metadata (``role=web`` on the first two, ``role=db`` on the third, ``role=worker`` after,
plus ``name=mI``) and the update + locksmith settings pointing at one local update server.
Ports are handed in (the shell takes them from free ports); etcd's well-known 2379/2380 are
refused so a system etcd is never disturbed. The plan is a frozen value that round-trips
through the versioned state file `corral down` reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

__all__ = [
    "STATE_FILE",
    "STATE_VERSION",
    "ClusterPlan",
    "FleetMode",
    "MachinePlan",
    "UpError",
    "plan_cluster",
]

STATE_FILE = "corral-up.json"
STATE_VERSION = 1
RESERVED_PORTS = frozenset({2379, 2380, 4001, 7001})
MAX_MACHINES = 9


class FleetMode(Enum):
    """Who runs each machine's fleetd.

    ``node`` (the default): the machine's `corral node`, from ``coreos.fleet`` (as on
    CoreOS); fleet's units run as real processes under the machine's units runner.
    ``separate``: `corral up` starts one `corral fleetd --runner memory` per machine beside
    its node; fleet schedules and tracks units but does not run their processes.
    ``off``: no fleet.
    """

    NODE = "node"
    SEPARATE = "separate"
    OFF = "off"


class UpError(Exception):
    """A cluster that cannot be planned, started or found; the message is for the user."""


@dataclass(frozen=True, slots=True)
class MachinePlan:
    """One machine: its name, root, ports, fleet metadata and cloud-config text."""

    name: str
    root: Path
    client_port: int
    peer_port: int
    metadata: str
    cloud_config: str
    machine_id: str

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def config_path(self) -> Path:
        return self.root.parent / f"{self.name}.yml"

    @property
    def log_path(self) -> Path:
        return self.root.parent / f"{self.name}.log"


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    """The whole cluster: its folder, machines and the update server's port."""

    directory: Path
    machines: tuple[MachinePlan, ...]
    update_port: int
    token: str
    fleet: FleetMode = FleetMode.NODE
    agent_ttl: str = "10s"

    @property
    def update_url(self) -> str:
        return f"http://127.0.0.1:{self.update_port}"

    @property
    def endpoints(self) -> str:
        return ",".join(m.client_url for m in self.machines)

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    def machine(self, name: str) -> MachinePlan:
        for m in self.machines:
            if m.name == name:
                return m
        raise UpError(f"no machine named {name!r} (have {', '.join(self.names)})")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.machines)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "directory": str(self.directory),
            "update_port": self.update_port,
            "token": self.token,
            "fleet": self.fleet.value,
            "agent_ttl": self.agent_ttl,
            "machines": [
                {"name": m.name, "root": str(m.root), "client_port": m.client_port,
                 "peer_port": m.peer_port, "metadata": m.metadata,
                 "cloud_config": m.cloud_config, "machine_id": m.machine_id}
                for m in self.machines
            ],
        }  # fmt: skip

    @classmethod
    def from_json(cls, doc: object) -> ClusterPlan:
        if not isinstance(doc, dict):
            raise UpError("state file is not a JSON object")
        version = doc.get("version")
        if version != STATE_VERSION:
            raise UpError(f"state file version {version!r} is not supported (need 1)")
        try:
            machines = tuple(
                MachinePlan(str(m["name"]), Path(m["root"]), int(m["client_port"]),
                            int(m["peer_port"]), str(m["metadata"]), str(m["cloud_config"]),
                            str(m["machine_id"]))
                for m in doc["machines"]
            )  # fmt: skip
            return cls(Path(doc["directory"]), machines, int(doc["update_port"]),
                       str(doc["token"]), FleetMode(doc["fleet"]), str(doc["agent_ttl"]))
        except (KeyError, TypeError, ValueError) as err:
            raise UpError(f"state file is malformed: {err!r}") from err


def _metadata(index: int) -> str:
    role = "web" if index < 2 else "db" if index == 2 else "worker"
    return f"role={role},name=m{index + 1}"


def _cloud_config(
    m: MachinePlan, initial_cluster: str, token: str, update_url: str, *,
    heartbeat_ms: int, election_ms: int, agent_ttl: str, fleet: FleetMode,
) -> str:
    fleet_section = f"""  fleet:
    metadata: {m.metadata}
    agent_ttl: {agent_ttl}
    engine_reconcile_interval: 1
""" if fleet is FleetMode.NODE else ""
    return f"""#cloud-config
# generated by corral up (format 1)
hostname: {m.name}
coreos:
  etcd2:
    name: {m.name}
    listen_client_urls: {m.client_url}
    advertise_client_urls: {m.client_url}
    listen_peer_urls: {m.peer_url}
    initial_advertise_peer_urls: {m.peer_url}
    initial_cluster: {initial_cluster}
    initial_cluster_token: {token}
    initial_cluster_state: new
    heartbeat_interval: {heartbeat_ms}
    election_timeout: {election_ms}
{fleet_section}  update:
    server: {update_url}/v1/update/
    group: stable
    reboot_strategy: etcd-lock
  locksmith:
    group: corral-up
corral:
  version: 1
  machine_id: {m.machine_id}
  ports:
    client: {m.client_port}
    peer: {m.peer_port}
"""


def plan_cluster(
    n: int,
    directory: Path,
    ports: Sequence[int],
    machine_ids: Sequence[str],
    *,
    token: str = "corral-up",
    heartbeat_ms: int = 100,
    election_ms: int = 1000,
    agent_ttl: str = "10s",
    fleet: FleetMode = FleetMode.NODE,
) -> ClusterPlan:
    """Plan `n` machines under `directory` on `ports` (2n + 1 of them: client, peer per
    machine, then the update server's) with the given machine ids (32 hex digits each)."""
    if not 1 <= n <= MAX_MACHINES:
        raise UpError(f"--machines must be between 1 and {MAX_MACHINES}, not {n}")
    if len(ports) != 2 * n + 1:
        raise UpError(f"{n} machines need {2 * n + 1} ports, got {len(ports)}")
    if len(machine_ids) != n or len(set(machine_ids)) != n or not all(
            len(i) == 32 and all(c in "0123456789abcdef" for c in i) for i in machine_ids):
        raise UpError(f"{n} machines need {n} distinct machine ids of 32 hex digits")
    if len(set(ports)) != len(ports):
        raise UpError(f"ports collide: {sorted(ports)}")
    reserved = sorted(RESERVED_PORTS.intersection(ports))
    if reserved:
        raise UpError(f"ports {reserved} belong to a system etcd; corral up does not use them")
    if heartbeat_ms <= 0 or election_ms < 5 * heartbeat_ms:
        raise UpError("election timeout must be at least 5 heartbeats")
    directory = directory.absolute()
    update_port = ports[-1]
    bare = [
        MachinePlan(f"m{i + 1}", directory / f"m{i + 1}", ports[2 * i], ports[2 * i + 1],
                    _metadata(i), "", machine_ids[i])
        for i in range(n)
    ]  # fmt: skip
    initial = ",".join(f"{m.name}={m.peer_url}" for m in bare)
    update_url = f"http://127.0.0.1:{update_port}"
    machines = tuple(
        MachinePlan(m.name, m.root, m.client_port, m.peer_port, m.metadata,
                    _cloud_config(m, initial, token, update_url, heartbeat_ms=heartbeat_ms,
                                  election_ms=election_ms, agent_ttl=agent_ttl, fleet=fleet),
                    m.machine_id)
        for m in bare
    )  # fmt: skip
    return ClusterPlan(directory, machines, update_port, token, fleet, agent_ttl)
