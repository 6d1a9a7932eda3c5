"""The shell around the plan: start, watch and stop a local corral cluster.

`start_cluster` writes each machine's cloud-config, provisions its A/B slots with release
1.0.0 signed by a key made for this cluster (so the update agent and locksmith run, as on a
CoreOS machine), starts one `corral update-server` and one `corral node` per machine, each
in its own session, and records every pid in the versioned state file before it does
anything else that can fail. `stop_cluster` reads that file: SIGTERM to every machine (a
node stops its units itself), then SIGKILL to whatever is left of their process groups and
to any process whose environment names one of the machines' roots, so nothing survives.
`cluster_status` reads what a live status view shows from the members' v2 API.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import corral
from corral.update.agent import short_socket_path

from .plan import STATE_VERSION, ClusterPlan, FleetMode, MachinePlan, UpError

__all__ = [
    "ClusterState",
    "MachineStatus",
    "agent_status",
    "cluster_status",
    "kill_machine",
    "load_state",
    "machine_processes",
    "os_version",
    "start_cluster",
    "start_machine",
    "stop_cluster",
    "wait_ready",
]

SOURCE = Path(corral.__file__).resolve().parent.parent
Say = Callable[[str], None]


@dataclass
class ClusterState:
    """The plan plus the pids that were started for it."""

    plan: ClusterPlan
    pids: dict[str, int]
    update_server_pid: int | None = None
    up_pid: int | None = None
    release_key: str | None = None
    fleetd_pids: dict[str, int] | None = None

    def save(self) -> None:
        doc = {**self.plan.to_json(), "pids": self.pids,
               "update_server_pid": self.update_server_pid, "up_pid": self.up_pid,
               "release_key": self.release_key,
               "fleetd_pids": self.fleetd_pids or {}, "version": STATE_VERSION}  # fmt: skip
        tmp = self.plan.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(self.plan.state_path)


def load_state(directory: Path) -> ClusterState:
    path = directory.absolute() / "corral-up.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UpError(f"no cluster here: {path} does not exist") from None
    except (OSError, ValueError) as err:
        raise UpError(f"cannot read {path}: {err}") from err
    plan = ClusterPlan.from_json(doc)
    pids = doc.get("pids") or {}
    if not isinstance(pids, dict):
        raise UpError("state file is malformed: pids")
    return ClusterState(plan, {str(k): int(v) for k, v in pids.items()},
                        doc.get("update_server_pid"), doc.get("up_pid"),
                        doc.get("release_key"),
                        {str(k): int(v) for k, v in (doc.get("fleetd_pids") or {}).items()})


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    # The installed corral, whatever directory the user runs from.
    env["PYTHONPATH"] = str(SOURCE)
    return env


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start a process in its own session (so it and its children can be signalled as a
    group), output appended to `log`."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env or _python_env(),
        )
    return proc.pid


def _provision(state: ClusterState, say: Say) -> None:
    from corral.update.agent import provision
    from corral.update.payload import (
        build_payload,
        generate_key,
        load_private_key,
        load_public_keys,
        sign_payload,
    )

    keys = state.plan.directory / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    private, public = generate_key()
    (keys / "release.key").write_bytes(private)
    (keys / "release.key").chmod(0o600)
    (keys / "release.pub").write_bytes(public)
    state.release_key = str(keys / "release.key")
    say(f"release key made: {keys / 'release.pub'}")
    payload = sign_payload(build_payload(SOURCE, corral.__version__), load_private_key(private))
    for m in state.plan.machines:
        # Where `corral update-agent provision --trusted-key` puts it: the agent reads it.
        keys_dir = m.root / "etc/corral/update-keys"
        keys_dir.mkdir(parents=True, exist_ok=True)
        (keys_dir / "release.pem").write_bytes(public)
        provision(m.root, payload, load_public_keys([public]))
    say(f"slots provisioned with release {corral.__version__} on {len(state.plan.machines)}"
        " machines")


def reboot_pause(agent_ttl: str) -> float:
    """How long a rebooting machine stays away: fleet's agent TTL and a few engine rounds,
    so its units are seen running elsewhere, as on real machines whose reboot takes longer."""
    from corral.fleet.config import ConfigError, parse_duration

    try:
        return parse_duration(agent_ttl) + 3.0
    except ConfigError:
        return 8.0


def start_machine(state: ClusterState, m: MachinePlan) -> int:
    """Start (or restart) machine `m`'s `corral node`; record its pid."""
    pid = _spawn([sys.executable, "-m", "corral", "node", "--root", str(m.root),
                  "--cloud-config", str(m.config_path),
                  "--reboot-pause", str(reboot_pause(state.plan.agent_ttl))], m.log_path)
    state.pids[m.name] = pid
    if state.plan.fleet is FleetMode.SEPARATE:
        env = dict(_python_env(), CORRAL_MACHINE_ROOT=str(m.root))
        if state.fleetd_pids is None:
            state.fleetd_pids = {}
        state.fleetd_pids[m.name] = _spawn(
            [sys.executable, "-m", "corral", "fleetd", "--root", str(m.root), "--runner",
             "memory", "--machine-id", m.machine_id, "--etcd-servers", m.client_url,
             "--metadata", m.metadata, "--agent-ttl", state.plan.agent_ttl,
             "--engine-reconcile-interval", "1"],
            m.root.parent / f"{m.name}.fleetd.log", env)
    state.save()
    return pid


def start_cluster(plan: ClusterPlan, *, updates: bool = True, say: Say = print) -> ClusterState:
    """Write the configs, provision slots, start the update server and the machines."""
    if plan.state_path.exists():
        old = load_state(plan.directory)
        if any(_alive(pid) for pid in old.pids.values()):
            raise UpError(f"a cluster is already running in {plan.directory}; "
                          f"stop it with: corral down --dir {plan.directory}")
        # A stopped cluster's folder: start afresh (old members' data would name old peers).
        for entry in plan.directory.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    elif plan.directory.exists() and any(plan.directory.iterdir()):
        raise UpError(f"{plan.directory} is not empty and holds no corral up cluster; "
                      "choose another --dir")
    plan.directory.mkdir(parents=True, exist_ok=True)
    state = ClusterState(plan, {}, up_pid=os.getpid())
    state.save()
    try:
        for m in plan.machines:
            m.root.mkdir(parents=True, exist_ok=True)
            m.config_path.write_text(m.cloud_config)
        if updates:
            _provision(state, say)
            data = plan.directory / "update-server"
            data.mkdir(exist_ok=True)
            state.update_server_pid = _spawn(
                [sys.executable, "-m", "corral", "update-server", "--data-dir", str(data),
                 "--port", str(plan.update_port)], plan.directory / "update-server.log")
            state.save()
            say(f"update server on {plan.update_url}")
        for m in plan.machines:
            start_machine(state, m)
            say(f"{m.name}: corral node started (root {m.root}, KV {m.client_url}, "
                f"{m.metadata})")
    except BaseException:
        # Whatever was started before the failure is stopped: nothing is left behind.
        stop_cluster(state, timeout=10, say=say)
        raise
    return state


def _get(url: str, timeout: float = 2.0) -> tuple[int, Any, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null"), dict(resp.headers)
    except urllib.error.HTTPError as err:
        try:
            body = json.loads(err.read() or b"null")
        except ValueError:
            body = None
        return err.code, body, dict(err.headers)
    except (OSError, ValueError):
        return 0, None, {}


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive: its parent has not waited for it yet.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@dataclass(frozen=True, slots=True)
class MachineStatus:
    """What the status view shows for one machine."""

    name: str
    running: bool
    healthy: bool
    leader: bool
    term: int | None
    index: int | None
    version: str
    members: int
    fleet_machines: int


def _machine_status(state: ClusterState, m: MachinePlan) -> MachineStatus:
    running = _alive(state.pids.get(m.name))
    code, health, _ = _get(m.client_url + "/health", 1.0)
    healthy = code == 200 and isinstance(health, dict) and health.get("health") == "true"
    _, me, _ = _get(m.client_url + "/v2/stats/self", 1.0)
    leader = isinstance(me, dict) and me.get("state") == "StateLeader"
    code, _, headers = _get(m.client_url + "/v2/keys/", 1.0)
    term = int(headers["X-Raft-Term"]) if "X-Raft-Term" in headers else None
    index = int(headers["X-Etcd-Index"]) if "X-Etcd-Index" in headers else None
    _, ver, _ = _get(m.client_url + "/version", 1.0)
    version = "-"
    if isinstance(ver, dict):
        version = f"kv {ver.get('etcdserver', '?')}"
    if (m.root / "slots").is_dir():
        version = f"{version}, os {os_version(m.root)}"
    _, members, _ = _get(m.client_url + "/v2/members", 1.0)
    n_members = len(members.get("members", [])) if isinstance(members, dict) else 0
    _, fleet, _ = _get(m.client_url + "/v2/keys/_coreos.com/fleet/machines", 1.0)
    n_fleet = len((fleet.get("node") or {}).get("nodes") or []) if isinstance(fleet, dict) else 0
    return MachineStatus(m.name, running, healthy, leader, term, index, version, n_members,
                         n_fleet)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("agent", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def agent_status(root: Path, timeout: float = 3.0) -> dict[str, Any]:
    """The update agent's status document (`GET /status` on its socket); {} if none."""
    sock = root / "run/update-agent.sock"
    if not sock.exists():
        return {}
    try:
        with short_socket_path(sock) as name:
            conn = _UnixHTTPConnection(name, timeout)
            try:
                conn.request("GET", "/status")
                doc = json.loads(conn.getresponse().read())
            finally:
                conn.close()
    except (OSError, ValueError, http.client.HTTPException):
        return {}
    return doc if isinstance(doc, dict) else {}


def os_version(root: Path) -> str:
    """The release the machine runs now: the booted slot's, as its update agent says."""
    return str(agent_status(root).get("version") or "?")


def cluster_status(state: ClusterState) -> list[MachineStatus]:
    return [_machine_status(state, m) for m in state.plan.machines]


def wait_ready(state: ClusterState, timeout: float = 120.0, say: Say = print) -> None:
    """Until every machine's member is healthy and a leader is known."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in state.plan.machines:
            if not _alive(state.pids.get(m.name)):
                tail = m.log_path.read_text(errors="replace")[-2000:] if m.log_path.exists() \
                    else ""
                raise UpError(f"{m.name}'s corral node exited:\n{tail}")
        st = cluster_status(state)
        if all(s.healthy for s in st) and any(s.leader for s in st):
            return
        time.sleep(0.3)
    raise UpError(f"the cluster was not healthy within {timeout:.0f} s; logs are in "
                  f"{state.plan.directory}")


def machine_processes(roots: list[Path], directory: Path | None = None) -> list[int]:
    """Pids whose environment names one of `roots`, or whose command line names
    `directory` (the update server, the nodes themselves)."""
    markers = {f"CORRAL_MACHINE_ROOT={r}".encode() for r in roots}
    needle = str(directory).encode() if directory is not None else None
    me = os.getpid()
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            env = set(proc.joinpath("environ").read_bytes().split(b"\0"))
            cmd = proc.joinpath("cmdline").read_bytes()
        except OSError:
            continue
        if not _alive(int(proc.name)):
            continue
        started = b"\0node\0" in cmd or b"\0update-server\0" in cmd
        if markers & env or (needle is not None and needle in cmd and started):
            out.append(int(proc.name))
    return out


def _killpg(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _ours(pid: int, directory: Path) -> bool:
    """Only signal a recorded pid if it is still a corral process of this cluster."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(directory).encode() in cmd and b"corral" in cmd


def kill_machine(state: ClusterState, name: str) -> None:
    """Power a machine off: SIGKILL its node and everything it started."""
    m = state.plan.machine(name)
    pid = state.pids.get(name)
    if pid and _ours(pid, state.plan.directory):
        _killpg(pid, signal.SIGKILL)
    fleetd = (state.fleetd_pids or {}).get(name)
    if fleetd and _ours(fleetd, state.plan.directory):
        _killpg(fleetd, signal.SIGKILL)
    for p in machine_processes([m.root]):
        _killpg(p, signal.SIGKILL)


def stop_cluster(state: ClusterState, timeout: float = 30.0, say: Say = print) -> int:
    """Stop everything the cluster started; return how many processes had to be killed."""
    directory = state.plan.directory
    started = [*state.pids.values(), *(state.fleetd_pids or {}).values()]
    nodes = [p for p in started if _alive(p) and _ours(p, directory)]
    for pid in nodes:
        _killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in nodes):
        time.sleep(0.1)
    if state.update_server_pid and _alive(state.update_server_pid) \
            and _ours(state.update_server_pid, directory):
        _killpg(state.update_server_pid, signal.SIGTERM)
    killed = 0
    roots = [m.root for m in state.plan.machines]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = machine_processes(roots, directory)
        if not left:
            break
        if time.monotonic() > deadline - 8:
            for pid in left:
                _killpg(pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.2)
    left = machine_processes(roots, directory)
    if left:
        raise UpError(f"processes still running after stop: {left}")
    state.pids.clear()
    state.fleetd_pids = {}
    state.update_server_pid = None
    state.save()
    say(f"stopped {len(state.plan.machines)} machine(s), {len(nodes)} process(es)" + (f"; killed {killed} leftover(s)" if killed else ""))
    return killed
