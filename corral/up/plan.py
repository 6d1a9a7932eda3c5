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
    "UpdateTimers",
    "check_ttl",
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
class UpdateTimers:
    """The update agents' timers, in seconds (`corral update-agent run`'s options).

    A machine's agent defaults are a fleet's (first check after minutes, then every 45 min,
    a slot proven over 45 s, a refused reboot lock asked again after 10 s, doubling); a lab
    on one host wants a rollout in seconds: checks every few seconds, a new slot judged over
    `health_period`, its fleet units given `fleet_window` to be active again (a release that
    breaks one is caught only when the window closes), the lock asked for every
    `lock_retry` seconds, doubling up to `lock_retry_max`.
    """

    initial_check: float = 1.0
    initial_fuzz: float = 1.0
    interval: float = 3.0
    interval_fuzz: float = 2.0
    health_period: float = 3.0
    boot_deadline: float = 90.0
    fleet_window: float = 12.0
    lock_retry: float = 1.0
    lock_retry_max: float = 4.0

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if getattr(self, name) < 0:
                raise UpError(f"update timer {name} must not be negative")
        if self.interval <= 0 or self.health_period <= 0 or self.fleet_window <= 0:
            raise UpError("update timers: interval, health_period and fleet_window must be "
                          "positive")
        if self.lock_retry <= 0 or self.lock_retry_max < self.lock_retry:
            raise UpError("update timers: lock_retry must be positive, lock_retry_max ≥ it")
        if self.boot_deadline <= self.fleet_window:
            raise UpError("update timers: boot_deadline must exceed fleet_window")

    def agent_environment(self) -> dict[str, str]:
        """The update agent's environment variables (its options' `envvar`s)."""
        return {f"CORRAL_UPDATE_{name.upper()}": f"{getattr(self, name):g}"
                for name in self.__slots__ if not name.startswith("lock_")}

    def locksmith_environment(self) -> dict[str, str]:
        """locksmithd's: how soon a machine refused the reboot lock asks again."""
        return {"LOCKSMITHD_RETRY_INTERVAL": f"{self.lock_retry:g}",
                "LOCKSMITHD_MAX_RETRY_INTERVAL": f"{self.lock_retry_max:g}"}


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
    agent_ttl: str = "5s"

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


def check_ttl(what: str, ttl: str | float, election_ms: int) -> None:
    """A TTL kept alive by refreshes must outlast a few KV elections: while a new leader is
    elected no write (so no refresh) commits, so a TTL shorter than 5 election timeouts
    could expire a live machine's or service's key. `ttl` is seconds or a Go duration."""
    # fleet's own Go-duration parser; imported here, as `corral.fleet` pulls in its HTTP stack
    from corral.fleet.config import ConfigError, parse_duration

    try:
        seconds = ttl if isinstance(ttl, float | int) else parse_duration(ttl)
    except ConfigError as err:
        raise UpError(f"{what}: {err}") from None
    if seconds * 1000 < 5 * election_ms:
        raise UpError(f"{what} {ttl} is shorter than 5 KV election timeouts "
                      f"({5 * election_ms / 1000:g} s)")


def _metadata(index: int) -> str:
    role = "web" if index < 2 else "db" if index == 2 else "worker"
    return f"role={role},name=m{index + 1}"


def _cloud_config(
    m: MachinePlan, initial_cluster: str, token: str, update_url: str, *,
    heartbeat_ms: int, election_ms: int, agent_ttl: str, fleet: FleetMode,
    timers: UpdateTimers, endpoints: str,
) -> str:
    fleet_section = f"""  fleet:
    etcd_servers: {endpoints}
    metadata: {m.metadata}
    agent_ttl: {agent_ttl}
    engine_reconcile_interval: 1
""" if fleet is FleetMode.NODE else ""
    def lines(env: dict[str, str]) -> str:
        return "\n".join(f"            Environment={k}={v}" for k, v in env.items())

    agent_env, lock_env = lines(timers.agent_environment()), lines(timers.locksmith_environment())
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
  units:
    # Timers as drop-ins (how CoreOS customised update-engine and locksmithd).
    - name: update-engine.service
      drop_ins:
        - name: 10-timers.conf
          content: |
            [Service]
{agent_env}
    - name: locksmithd.service
      drop_ins:
        - name: 10-timers.conf
          content: |
            [Service]
{lock_env}
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
    agent_ttl: str = "5s",
    fleet: FleetMode = FleetMode.NODE,
    timers: UpdateTimers | None = None,
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
    check_ttl("fleet's agent_ttl", agent_ttl, election_ms)
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
                                  election_ms=election_ms, agent_ttl=agent_ttl, fleet=fleet,
                                  timers=timers or UpdateTimers(),
                                  endpoints=",".join(
                                      [m.client_url] + [b.client_url for b in bare if b != m])),
                    m.machine_id)
        for m in bare
    )  # fmt: skip
    return ClusterPlan(directory, machines, update_port, token, fleet, agent_ttl)
