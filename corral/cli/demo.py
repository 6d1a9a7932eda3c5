"""`corral demo`: the guided tour `make demo` runs, on a cluster started as `corral up` does.

The tour starts N machines (`corral.up`), then runs its steps in order, each printing what
it does as it happens and adding rows to the summary:

* ``kv``: a write on one machine read on another, a long-poll watch on a third fired by it,
  the leader's member killed with SIGKILL and the cluster still serving (the unit runner
  restarts the member, which catches up);
* ``discovery``: a web server in a container and its sidekick container, which announces it
  in the KV store with a TTL, read back from another machine; when the server stops, the
  sidekick (bound to it) stops and the key expires (process units where containers cannot
  run, said so);
* ``fleet``: units placed by metadata and ``Conflicts``, a ``Global`` unit, a machine
  powered off and its unit rescheduled elsewhere;
* ``updates``: release 1.1.0 built and signed, published on the update server, machines
  updating one at a time under locksmith's reboot lock.

A step that cannot run says why (a row marked ``skipped``) instead of failing silently; a
step whose check fails is marked ``FAILED`` and the command exits 1 after the summary. The
cluster is left running (``--stop`` stops it) and the summary says how to look around.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from corral.containers.settings import RUNROOT_MAX, MachinePaths
from corral.locksmith import semaphore_key
from corral.testing.ports import free_ports
from corral.units.api import UnitsClient
from corral.units.errors import UnitError
from corral.up import (
    ClusterState,
    FleetMode,
    UpError,
    kill_machine,
    load_state,
    plan_cluster,
    start_cluster,
    start_machine,
    stop_cluster,
    wait_ready,
)
from corral.up.cluster import SOURCE, agent_status, cluster_status
from corral.up.kv_tour import run_kv_tour
from corral.up.plan import check_ttl
from corral.up.view import status_table

__all__ = ["STEPS", "StepFailed", "StepSkipped", "Tour", "cli"]


class StepFailed(Exception):
    """A check of the tour did not hold."""


class StepSkipped(Exception):
    """A step that cannot run here; the message says why."""


@dataclass
class Tour:
    """Shared state of the tour: the cluster, the console and the rows of the summary."""

    state: ClusterState
    console: Console
    timeout: float = 60.0
    service_ttl: int = 5
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return self.state.plan.machine(name).client_url

    def call(self, machine: str, method: str, path: str, form: dict[str, str] | None = None,
             timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
        data = "&".join(f"{k}={v}" for k, v in form.items()).encode() if form else None
        req = urllib.request.Request(self.url(machine) + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            try:
                return err.code, json.loads(err.read() or b"{}")
            except ValueError:
                return err.code, {}
        except (OSError, ValueError) as err:
            return 0, {"message": str(err)}

    def show(self, machine: str, method: str, path: str, **form: str) -> dict[str, Any]:
        status, doc = self.call(machine, method, path, form)
        args = " ".join(f"{k}={v}" for k, v in form.items())
        self.console.print(f"[bold cyan]{machine}[/] {method} {path} {args}".rstrip())
        self.console.print(f"  → {status} {json.dumps(doc)}", markup=False)
        return doc

    def ok(self, step: str, what: str) -> None:
        self.rows.append((step, what, "ok"))
        self.console.print(f"[green]✓[/] {what}")

    def eventually(self, check: Callable[[], bool], what: str,
                   timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.2)
        raise StepFailed(f"timed out waiting for {what}")

    def leader(self) -> str | None:
        for m in self.state.plan.machines:
            status, doc = self.call(m.name, "GET", "/v2/stats/self", timeout=2)
            if status == 200 and doc.get("state") == "StateLeader":
                return m.name
        return None

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a corral command as a user would, echoing it and its output."""
        self.console.print(f"[dim]$ corral {' '.join(args)}[/]")
        try:
            out = subprocess.run([sys.executable, "-m", "corral", *args], capture_output=True,
                                 text=True, timeout=120,
                                 env=dict(os.environ, PYTHONPATH=str(SOURCE)))
        except subprocess.TimeoutExpired:
            raise StepFailed(f"corral {' '.join(args)} did not finish within 120 s") from None
        text = (out.stdout + out.stderr).rstrip()
        if text:
            self.console.print(text, markup=False, highlight=False)
        return out

    def corral(self, *args: str, check: bool = True) -> str:
        """Run a corral command as a user would, echoing it; its stdout."""
        out = self.run(*args)
        text = (out.stdout + out.stderr).rstrip()
        if check and out.returncode != 0:
            raise StepFailed(f"corral {args[0]} exited {out.returncode}: {text[-300:]}")
        return out.stdout


def _names(t: Tour) -> list[str]:
    return list(t.state.plan.names)


def step_kv(t: Tour) -> None:
    t.console.rule("the KV store: write, watch, a member killed")
    names = _names(t)
    first, last = names[0], names[-1]
    t.show(first, "PUT", "/v2/keys/demo/message", value="Hello")
    doc = t.show(last, "GET", "/v2/keys/demo/message")
    if doc.get("node", {}).get("value") != "Hello":
        raise StepFailed(f"{last} did not read what {first} wrote")
    t.ok("kv", f"written on {first}, read on {last}")

    watcher_on = names[1 % len(names)]
    result: dict[str, Any] = {}
    # waitIndex just past the read: the watch sees the next change of the key even if the
    # write lands before the long poll is registered (fleet's own watchers make a count of
    # registered watchers useless as a signal).
    since = int(doc.get("node", {}).get("modifiedIndex", 0)) + 1
    thread = threading.Thread(target=lambda: result.update(
        ev=t.call(watcher_on, "GET", f"/v2/keys/demo/color?wait=true&waitIndex={since}",
                  timeout=60)[1]))
    thread.start()
    t.show(first, "PUT", "/v2/keys/demo/color", value="purple")
    thread.join(60)
    event = result.get("ev", {})
    t.console.print(f"  watcher on {watcher_on} received: {json.dumps(event)}", markup=False)
    if event.get("node", {}).get("value") != "purple":
        raise StepFailed("the watch did not fire")
    t.ok("kv", f"a watch on {watcher_on} fired for a write on {first}")

    if len(names) < 3:
        raise StepSkipped("killing a member needs 3 machines")
    leader = t.leader()
    if leader is None:
        raise StepFailed("no leader")
    units = UnitsClient(t.state.plan.machine(leader).root, timeout=10)
    pid = units.call("status", unit="etcd2.service").get("main_pid")
    if not isinstance(pid, int):
        raise StepFailed(f"etcd2.service on {leader} has no main pid")
    t.console.print(f"[bold red]kill -9[/] the leader's member ({leader}, pid {pid})")
    os.kill(pid, signal.SIGKILL)
    other = next(n for n in names if n != leader)
    t.eventually(lambda: t.call(other, "PUT", "/v2/keys/demo/after-kill",
                                {"value": "still-serving"}, timeout=3)[0] in (200, 201),
                 "a write with the leader's member dead")
    t.show(other, "GET", "/v2/keys/demo/after-kill")
    t.eventually(lambda: t.leader() not in (None, leader) or _restarted(t, leader, pid),
                 "a new leader or the member back")
    t.ok("kv", f"leader {leader} killed; the cluster kept serving writes")
    t.eventually(lambda: t.call(leader, "GET", "/v2/keys/demo/after-kill", timeout=3)[1]
                 .get("node", {}).get("value") == "still-serving",
                 f"{leader}'s member restarted and caught up")
    t.ok("kv", f"{leader}'s member was restarted by its unit runner and caught up")


def _restarted(t: Tour, name: str, old_pid: int) -> bool:
    try:
        st = UnitsClient(t.state.plan.machine(name).root, timeout=5).call(
            "status", unit="etcd2.service")
    except (UnitError, OSError):
        return False
    return st.get("active_state") == "active" and st.get("main_pid") not in (None, old_pid)


def _load(t: Tour, machine: str, name: str, text: str) -> None:
    units = UnitsClient(t.state.plan.machine(machine).root, timeout=30)
    units.call("load", unit=name, text=text, runtime=True)
    t.console.print(f"[bold]{machine}[/]: loaded {name}")
    t.console.print(text.rstrip(), markup=False, highlight=False, style="dim")


def _unit_state(t: Tour, machine: str, unit: str) -> str:
    try:
        st = UnitsClient(t.state.plan.machine(machine).root, timeout=10).call("status", unit=unit)
    except (UnitError, OSError):
        return "unknown"
    return str(st.get("active_state", "unknown"))


@dataclass(frozen=True)
class Discovery:
    """The service of the discovery step and its sidekick, as unit files.

    The sidekick is CoreOS's pattern (fleet's "service discovery" example): a second unit,
    bound to the service (`BindsTo=`, so it stops when the service stops), that writes the
    service's address under /services/ with a TTL and refreshes it well inside the TTL; if
    the service or its machine dies, nothing refreshes the key and etcd expires it.
    """

    machine: str
    kv_port: int
    port: int
    ttl: int
    refresh: float

    @property
    def key(self) -> str:
        return f"/services/www/{self.machine}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def containers(self) -> dict[str, str]:
        """Quadlet `.container` units running busybox: httpd, and a sidekick that speaks
        HTTP to the local KV member with `nc` (busybox has no etcdctl; etcd v2 `PUT
        /v2/keys/KEY` with `value` and `ttl` in a form body). Host network: the machines
        share loopback, and podman here runs only `--network=none|host`. `trap` makes
        each shell exit on `podman stop`'s SIGTERM (PID 1 ignores signals it has no
        handler for). In unit files `$$` is a literal `$`, and a doubled backslash a single one."""
        web = f"""[Unit]
Description=www, a tiny web server (busybox httpd in a container)

[Container]
Image=busybox
Network=host
StopTimeout=2
Exec=sh -c 'echo "hello from {self.machine}" > /tmp/index.html; trap "exit 0" TERM; \
httpd -f -p {self.address} -h /tmp & wait'
"""
        put = ('{ echo -ne "PUT /v2/keys$$KEY HTTP/1.0\\\\r\\\\nContent-Type: '
               'application/x-www-form-urlencoded\\\\r\\\\nContent-Length: $${#body}'
               '\\\\r\\\\n\\\\r\\\\n$$body"; sleep 1; } | nc 127.0.0.1 $$ETCD_PORT | tail -n 1')
        sidekick = f"""[Unit]
Description=announce www in the KV store with a TTL (sidekick)
BindsTo=www.container
After=www.container

[Container]
Image=busybox
Network=host
StopTimeout=2
Environment=ETCD_PORT={self.kv_port} KEY={self.key} VALUE={self.address} TTL={self.ttl} \
REFRESH={self.refresh:g}
Exec=sh -c 'trap "exit 0" TERM; while :; do body="value=$$VALUE&ttl=$$TTL"; \
({put}; echo) & sleep $$REFRESH & wait $$!; done'
"""
        return {"www.container": web, "www-announce.container": sidekick}

    def processes(self, url: str, root: Path) -> dict[str, str]:
        """The same pair as plain process units, for machines that cannot run containers."""
        www = root / "var/www"
        web = f"""[Unit]
Description=www, a tiny web server
[Service]
ExecStartPre=/bin/sh -c 'mkdir -p {www} && echo "hello from {self.machine}" > {www}/index.html'
ExecStart={sys.executable} -m http.server {self.port} --bind 127.0.0.1 --directory {www}
"""
        sidekick = f"""[Unit]
Description=announce www in the KV store with a TTL (sidekick)
BindsTo=www.service
After=www.service
[Service]
Environment=PYTHONPATH={SOURCE} ETCDCTL_ENDPOINTS={url}
ExecStart=/bin/sh -c 'while true; do {sys.executable} -m corral kv set --ttl {self.ttl} \
{self.key} {self.address} >/dev/null; sleep {self.refresh:g}; done'
"""
        return {"www.service": web, "www-announce.service": sidekick}


def _containers_trouble(t: Tour, machine: str) -> str | None:
    """Why containers cannot run on `machine`, or None; imports the busybox image."""
    if shutil.which("podman") is None:
        return "podman is not installed"
    root = t.state.plan.machine(machine).root
    runroot = MachinePaths(root).runroot
    if len(str(runroot)) > RUNROOT_MAX:
        t.console.print(f"[yellow]note[/]: {root} is long for podman 4.3 (more than "
                        f"{RUNROOT_MAX - len('/run/ps')} characters): each container exit "
                        "waits 20 s for podman's cleanup (docs/containers.md)")
    t.console.print("an image from the machine's own container storage (there is no registry):")
    out = t.run("images", "--root", str(root), "build-busybox")
    if out.returncode != 0:
        return f"importing the busybox image failed: {(out.stdout + out.stderr).strip()[-200:]}"
    return None


def _serving(t: Tour, d: Discovery, host: str) -> str | None:
    """Wait until www answers; None, or why it did not (its unit failed, or time ran out)."""
    deadline = time.monotonic() + t.timeout
    while time.monotonic() < deadline:
        if _http_ok(f"http://{d.address}/"):
            return None
        if _unit_state(t, host, "www.service") in ("failed", "inactive"):
            break
        time.sleep(0.2)
    try:
        lines = UnitsClient(t.state.plan.machine(host).root, timeout=10).call(
            "journal", unit="www.service", lines=3)
    except (UnitError, OSError):
        lines = []
    return (f"www.service is {_unit_state(t, host, 'www.service')}: "
            + " / ".join(str(x) for x in lines or ["no output"]))[-300:]


def step_discovery(t: Tour) -> None:
    t.console.rule("service discovery: a container and its sidekick")
    names = _names(t)
    host, reader = names[0], names[-1]
    (port,) = free_ports(1)
    d = Discovery(host, t.state.plan.machine(host).client_port, port, t.service_ttl,
                  max(1.0, round(t.service_ttl / 3, 1)))
    why = _containers_trouble(t, host)
    if why is None:
        for name, text in d.containers().items():
            _load(t, host, name, text)
        _start(t, host, "www-announce.service")  # BindsTo= starts www first
        why = _serving(t, d, host)
        if why is not None:
            for unit in ("www-announce.service", "www.service"):
                with contextlib.suppress(UnitError, OSError):
                    UnitsClient(t.state.plan.machine(host).root, timeout=60).call(
                        "unload", unit=unit)
        else:
            t.ok("discovery", f"{host} runs www and its sidekick as containers (busybox "
                 "image, Quadlet .container units)")
    if why is not None:
        t.rows.append(("discovery", f"containers cannot run on {host} ({why}); www and its "
                       "sidekick run as process units instead", "skipped"))
        t.console.print(f"[yellow]containers cannot run on {host}[/] ({why}): "
                        "falling back to process units", highlight=False)
        for name, text in d.processes(t.url(host), t.state.plan.machine(host).root).items():
            _load(t, host, name, text)
        _start(t, host, "www-announce.service")
        t.eventually(lambda: _http_ok(f"http://{d.address}/"), "www answering")

    path = "/v2/keys" + d.key
    t.eventually(lambda: t.call(reader, "GET", path)[0] == 200,
                 "the announcement on another machine")
    doc = t.show(reader, "GET", path)
    addr = doc.get("node", {}).get("value", "")
    page = _http_get(f"http://{addr}/")
    t.console.print(f"[bold cyan]{reader}[/] GET http://{addr}/ → {page!r}")
    if not page.startswith(f"hello from {host}"):
        raise StepFailed(f"{reader} read {addr!r} but fetched {page!r}")
    t.ok("discovery", f"{reader} found www at {addr} (ttl {doc['node'].get('ttl')} s) and "
         f"fetched its page: {page.strip()!r}")
    first = doc["node"].get("modifiedIndex", 0)
    t.eventually(lambda: t.call(reader, "GET", path)[1].get("node", {})
                 .get("modifiedIndex", first) != first, "the sidekick to refresh the key",
                 3 * d.ttl)
    t.show(reader, "GET", path)
    t.ok("discovery", f"the sidekick refreshes the key every {d.refresh:g} s (TTL {d.ttl} s)")

    # Not waiting for the stop job: the sidekick is stopped first (it is bound to www), so
    # its key starts expiring while the containers are still being stopped and removed.
    UnitsClient(t.state.plan.machine(host).root, timeout=60).call(
        "stop", unit="www.service", wait=False)
    t.console.print(f"[bold]{host}[/]: stopping www.service")
    t.eventually(lambda: t.call(reader, "GET", path)[0] == 404,
                 "the announcement to expire", 3 * d.ttl + t.timeout)
    t.show(reader, "GET", path)
    t.eventually(lambda: all(_unit_state(t, host, u) in ("inactive", "failed")
                             for u in ("www.service", "www-announce.service")),
                 "www and its sidekick to stop (BindsTo=)")
    t.ok("discovery", f"www stopped: its sidekick stopped with it (BindsTo=) → "
         f"{_unit_state(t, host, 'www-announce.service')}")
    t.ok("discovery", f"nothing refreshes the key: the announcement expired with its TTL "
         f"({d.ttl} s)")


def _start(t: Tour, machine: str, unit: str) -> None:
    UnitsClient(t.state.plan.machine(machine).root, timeout=120).call("start", unit=unit)
    t.console.print(f"[bold]{machine}[/]: started {unit}")


def _http_get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read(200).decode(errors="replace"))
    except OSError as err:
        return f"({err})"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


FLEET_UNITS = {
    "web@.service": "[Unit]\nDescription=web %i\n[Service]\nExecStart=/bin/sleep 100000\n"
                    "[X-Fleet]\nMachineMetadata=role=web\nConflicts=web@*\n",
    "db.service": "[Unit]\nDescription=database\n[Service]\nExecStart=/bin/sleep 100000\n"
                  "[X-Fleet]\nMachineMetadata=role=db\n",
    "monitor.service": "[Unit]\nDescription=monitor on every machine\n[Service]\n"
                       "ExecStart=/bin/sleep 100000\n[X-Fleet]\nGlobal=true\n",
    "worker.service": "[Unit]\nDescription=a worker that may run anywhere\n[Service]\n"
                      "ExecStart=/bin/sleep 100000\n",
}


def _fleet_get(t: Tour, path: str) -> dict[str, Any]:
    """A recursive GET under fleet's registry from the first member that answers (one may
    be powered off); {} when the key does not exist."""
    for name in t.state.plan.names:
        status, doc = t.call(name, "GET", f"/v2/keys/_coreos.com/fleet/{path}?recursive=true",
                             timeout=2)
        if status in (200, 404):
            node = doc.get("node") if status == 200 else None
            return node if isinstance(node, dict) else {}
    return {}


def _placement(t: Tour) -> dict[str, set[str]]:
    """unit -> the machines' names where fleet's agents report it active.

    Read from the registry (``states/<unit>/<machine-id>``, what `fleet list-units` shows)
    rather than by running the CLI at every poll: the CLI is shown to the user once."""
    ids = _fleet_ids(t)
    placed: dict[str, set[str]] = {}
    for unit in _fleet_get(t, "states").get("nodes") or []:
        name = str(unit.get("key", "")).rsplit("/", 1)[-1]
        for st in unit.get("nodes") or []:
            mid = str(st.get("key", "")).rsplit("/", 1)[-1]
            try:
                active = json.loads(st.get("value") or "{}").get("activeState")
            except (ValueError, AttributeError):
                continue
            if active == "active":
                placed.setdefault(name, set()).add(ids.get(mid, mid[:8]))
    return placed


def _fleet_ids(t: Tour) -> dict[str, str]:
    ids = {}
    for m in t.state.plan.machines:
        try:
            ids[(m.root / "etc/machine-id").read_text().strip()] = m.name
        except OSError:
            continue
    return ids


def step_fleet(t: Tour) -> None:
    t.console.rule("fleet: placement by metadata, Conflicts, Global, a machine lost")
    plan = t.state.plan
    if plan.fleet is FleetMode.OFF:
        raise StepSkipped("the cluster runs without fleet (--fleet off)")
    if plan.fleet is FleetMode.SEPARATE:
        t.console.print("fleetd runs beside each node with the in-memory unit runner: fleet "
                        "places and tracks the units, their processes are not started")
    if len(plan.machines) < 3:
        raise StepSkipped("placement by metadata needs 3 machines (role=web, web, db)")
    ep = plan.endpoints
    t.eventually(lambda: len(_fleet_ids(t)) == len(plan.machines) and len(
        _fleet_get(t, "machines").get("nodes") or []) == len(plan.machines),
        "fleet to see every machine")
    t.console.print("fleet sees every machine (`corral fleet list-machines`): " + ", ".join(
        f"{m.name} ({m.metadata.split(',')[0]})" for m in plan.machines))
    folder = plan.directory / "units"
    folder.mkdir(exist_ok=True)
    for name, text in FLEET_UNITS.items():
        (folder / name).write_text(text)
    files = [str(folder / n) for n in ("web@.service", "db.service", "monitor.service",
                                       "worker.service")]
    t.corral("fleet", "--endpoint", ep, "submit", *files)
    # --no-block: web@3 can never be placed, and the placement is watched below
    t.corral("fleet", "--endpoint", ep, "start", "--no-block", "web@1", "web@2", "db",
             "monitor", "worker", "web@3", check=False)
    want_web = {"m1", "m2"}

    def placed_right() -> bool:
        p = _placement(t)
        web = p.get("web@1.service", set()) | p.get("web@2.service", set())
        return (web == want_web and p.get("db.service") == {"m3"}
                and p.get("monitor.service") == set(plan.names)
                and len(p.get("worker.service", set())) == 1)

    t.eventually(placed_right, "units placed by metadata, Conflicts and Global", 90)
    t.corral("fleet", "--endpoint", ep, "list-units")
    t.ok("fleet", "web@1/web@2 on the two role=web machines (Conflicts keeps them apart), "
         "db on role=db, monitor on every machine")
    t.corral("fleet", "--endpoint", ep, "why", "web@3", check=False)
    if _placement(t).get("web@3.service"):
        raise StepFailed("web@3 was placed although every role=web machine runs a web@")
    t.ok("fleet", "web@3 stays unplaced: every role=web machine already runs a web@ (Conflicts)")
    workers = sorted(_placement(t).get("worker.service", set()))
    if len(workers) != 1:
        raise StepFailed(f"worker.service should run on one machine, runs on {workers}")
    victim = workers[0]
    t.console.print(f"[bold red]power off[/] {victim} (SIGKILL, no goodbye to fleet)")
    kill_machine(t.state, victim)
    t.eventually(lambda: bool(_placement(t).get("worker.service", set()) - {victim}),
                 "worker.service rescheduled on a live machine", 90)
    t.ok("fleet", f"{victim} lost; worker.service now runs on "
         f"{', '.join(sorted(_placement(t)['worker.service'] - {victim}))} (fleet's agent_ttl "
         f"is {plan.agent_ttl})")
    t.console.print(f"booting {victim} again")
    start_machine(t.state, plan.machine(victim))
    t.corral("fleet", "--endpoint", ep, "list-units")
    t.eventually(lambda: t.call(victim, "GET", "/health", timeout=2)[1].get("health") == "true",
                 f"{victim}'s member healthy again", 90)
    t.ok("fleet", f"{victim} booted again and rejoined the KV cluster")


def _kv_get(t: Tour, path: str) -> dict[str, Any] | None:
    """GET /v2/keys<path> from the first member that answers (one may be rebooting)."""
    for name in t.state.plan.names:
        status, doc = t.call(name, "GET", "/v2/keys" + path, timeout=2)
        if status == 200:
            return doc
        if status == 404:
            return None
    return None


def _locksmith_holders(t: Tour) -> list[str]:
    doc = _kv_get(t, "/" + semaphore_key("corral-up").lstrip("/"))
    try:
        holders = json.loads((doc or {})["node"]["value"]).get("holders") or []
    except (KeyError, TypeError, ValueError):
        return []
    ids = _fleet_ids(t)
    return [ids.get(h, h[:8]) for h in holders]


def _release(t: Tour, version: str, source: Path | None = None) -> None:
    plan = t.state.plan
    out = plan.directory / f"corral-{version}.payload"
    extra = ["--source", str(source)] if source else []
    t.corral("release", "build", "--version", version, "--out", str(out), *extra)
    t.corral("release", "sign", "--key", str(t.state.release_key), str(out))
    t.corral("updatectl", "--server", plan.update_url, "package", "upload", str(out))
    t.corral("updatectl", "--server", plan.update_url, "channel", "set", "stable", version)


# The updates step's fleet units: `hello` (global) runs the release's own program, so a
# release can break it without breaking the machine; `app@N` may run anywhere, one per
# machine, so a rebooting machine's app moves to the machine that has none.
UPDATE_UNITS = {
    "hello.service": "[Unit]\nDescription=hello, a program of the booted release\n[Service]\n"
                     f"Type=notify\nExecStart={sys.executable} -m corral.update.hello\n"
                     "[X-Fleet]\nGlobal=true\n",
    "app@.service": "[Unit]\nDescription=app %i\n[Service]\nExecStart=/bin/sleep 100000\n"
                    "[X-Fleet]\nConflicts=app@*\n",
}
BROKEN_HELLO = ('import sys\nprint("hello: this release\'s copy is broken", flush=True)\n'
                "sys.exit(1)\n")


def _fleet_states(t: Tour) -> dict[str, dict[str, str]]:
    """unit -> machine name -> its activeState, as the machines' fleet agents publish it."""
    doc = _kv_get(t, "/_coreos.com/fleet/states?recursive=true")
    ids = _fleet_ids(t)
    out: dict[str, dict[str, str]] = {}
    for unit in (doc or {}).get("node", {}).get("nodes") or []:
        name = str(unit.get("key", "")).rsplit("/", 1)[-1]
        for st in unit.get("nodes") or []:
            machine = ids.get(str(st.get("key", "")).rsplit("/", 1)[-1])
            try:
                active = json.loads(st.get("value") or "{}").get("activeState", "")
            except (ValueError, AttributeError):
                continue
            if machine is not None:
                out.setdefault(name, {})[machine] = str(active)
    return out


def _rollout(t: Tour) -> dict[str, Any]:
    """The group's rollout, from the server's public, read-only status document."""
    from corral.update.server import CORRAL_APP_ID

    url = f"{t.state.plan.update_url}/v1/rollout/stable?app={CORRAL_APP_ID}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            doc = json.loads(resp.read())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


@dataclass
class _Watch:
    """What the updates step has seen so far; prints every change as it happens."""

    t: Tour
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    holders: list[str] = field(default_factory=list)
    placement: dict[str, str] = field(default_factory=dict)  # app@N -> machine active on
    hello: dict[str, str] = field(default_factory=dict)  # machine -> hello's activeState
    rebooting: set[str] = field(default_factory=set)  # lock holders not yet good again
    moved: list[tuple[str, str, str]] = field(default_factory=list)  # unit, from, to
    installed: dict[str, set[str]] = field(default_factory=dict)  # version -> machines
    started: float = field(default_factory=time.monotonic)

    def poll(self) -> None:
        t = self.t

        def say(text: str) -> None:
            t.console.print(f"[dim]{time.monotonic() - self.started:5.1f}s[/] {text}")
        for m in t.state.plan.machines:
            st = agent_status(m.root)
            if not st:
                continue
            old = self.agents.get(m.name, {})
            self.agents[m.name] = st
            op = str(st.get("CURRENT_OP", "")).removeprefix("UPDATE_STATUS_")
            new = st.get("NEW_VERSION")
            if op in ("DOWNLOADING", "FINALIZING", "UPDATED_NEED_REBOOT") and new:
                self.installed.setdefault(str(new), set()).add(m.name)
            for slot in st.get("slots") or []:
                if isinstance(slot, dict) and slot.get("version"):
                    self.installed.setdefault(str(slot["version"]), set()).add(m.name)
            if old and old.get("CURRENT_OP") != st.get("CURRENT_OP") \
                    and op not in ("CHECKING_FOR_UPDATE", "IDLE"):
                say(f"[bold]{m.name}[/] {op.lower().replace('_', ' ')}"
                    + (f" {new}" if op not in ("IDLE",) and new else ""))
            if old and old.get("boot_id") != st.get("boot_id"):
                say(f"[bold]{m.name}[/] rebooted into {st.get('version')} "
                    f"(slot {st.get('slot')}); proving itself")
            if st.get("slot_good") and not old.get("slot_good") and old:
                say(f"[bold]{m.name}[/] [green]{st.get('version')} is good[/] "
                    "(services up, its fleet units active again)")
            fell = (st.get("last_fallback") or {}) if isinstance(st.get("last_fallback"),
                                                                 dict) else {}
            if fell and fell != (old.get("last_fallback") or {}) and old:
                say(f"[bold]{m.name}[/] [red]gave {fell.get('version')} up[/] (code "
                    f"{fell.get('code')}: {fell.get('detail')}) and fell back to "
                    f"{fell.get('fell_back_to')}")
        holders = _locksmith_holders(t)
        if len(holders) > 1:
            raise StepFailed(f"{len(holders)} machines held the reboot lock at once: {holders}")
        if holders != self.holders:
            say(f"reboot lock (locksmith): {', '.join(holders) or 'free'}")
            self.rebooting.update(holders)
        self.holders = holders
        states = _fleet_states(t)
        for unit, where in sorted(states.items()):
            active = {mach for mach, a in where.items() if a == "active"}
            if unit.startswith("app@") and len(active) == 1:
                (now,) = active
                before = self.placement.get(unit)
                if before != now:
                    self.placement[unit] = now
                    if before is not None:
                        down = before in self.rebooting and self.agents.get(
                            before, {}).get("slot_good") is False
                        say(f"fleet: {unit} moved {before} → {now}, active"
                            + (f" (while {before} reboots)" if down else ""))
                        if down:
                            self.moved.append((unit, before, now))
            if unit == "hello.service":
                for mach, a in sorted(where.items()):
                    if self.hello.get(mach) != a:
                        self.hello[mach] = a
                        if a != "active" or mach in self.rebooting:
                            say(f"fleet: hello.service on {mach}: {a}")
        for mach in list(self.rebooting):
            if mach not in holders and self.agents.get(mach, {}).get("slot_good"):
                self.rebooting.discard(mach)

    def until(self, check: Callable[[], bool], what: str, timeout: float) -> None:
        def step() -> bool:
            self.poll()
            return check()

        self.t.eventually(step, what, timeout)


def step_updates(t: Tour) -> None:
    t.console.rule("updates: a release rolled out one machine at a time, a bad one halted")
    plan = t.state.plan
    if t.state.release_key is None or t.state.update_server_pid is None:
        raise StepSkipped("the cluster runs without updates (--no-updates)")
    if plan.fleet is not FleetMode.NODE or len(plan.machines) < 3:
        raise StepSkipped("the health-gated rollout needs 3 machines running fleet "
                          "(--fleet node)")
    names = list(plan.names)
    ep = plan.endpoints
    w = _Watch(t)

    folder = plan.directory / "units"
    folder.mkdir(exist_ok=True)
    for name, text in UPDATE_UNITS.items():
        (folder / name).write_text(text)
    t.console.print("fleet units: hello.service (Global) runs `python -m corral.update.hello` "
                    "from each machine's booted release; app@1 and app@2 run anywhere, "
                    "never two on one machine (Conflicts)")
    t.corral("fleet", "--endpoint", ep, "submit", str(folder / "hello.service"),
             str(folder / "app@.service"))
    t.corral("fleet", "--endpoint", ep, "start", "--no-block", "hello", "app@1", "app@2")

    def units_up() -> bool:
        s = _fleet_states(t)
        return (all(s.get("hello.service", {}).get(n) == "active" for n in names)
                and all(list(s.get(f"app@{i}.service", {}).values()) == ["active"]
                        for i in (1, 2)))

    w.until(units_up, "hello on every machine and app@1, app@2 active", 90)
    t.ok("updates", "fleet: hello.service active on every machine, app@1 and app@2 placed")

    t.console.print("safe mode: one machine first; its first failure halts the version")
    t.corral("updatectl", "--server", plan.update_url, "group", "set", "stable",
             "--safe-mode")
    _release(t, "1.1.0")
    t.console.print(f"the agents check every few seconds here ({plan.directory}/m1.yml: "
                    "update-engine.service's drop-in); locksmith takes the reboot lock for "
                    "each reboot")
    order: list[str] = []

    def all_on(version: str) -> bool:
        for n in names:
            st = w.agents.get(n, {})
            if st.get("version") == version and st.get("slot_good") and n not in order:
                order.append(n)
        return len(order) == len(names)

    w.until(lambda: all_on("1.1.0"), "every machine on 1.1.0", 150)
    t.ok("updates", f"1.1.0 rolled out one machine at a time: {' → '.join(order)} "
         "(never more than one reboot-lock holder)")
    apps = {f"app@{i}.service" for i in (1, 2)}
    if not w.moved:
        raise StepFailed("no app unit was seen moving off a rebooting machine")
    t.ok("updates", "while a machine rebooted its fleet units moved and were active elsewhere: "
         + ", ".join(f"{u.removesuffix('.service')} {a}→{b}" for u, a, b in w.moved))
    try:
        w.until(lambda: units_up() and all(
            t.call(n, "GET", "/health", timeout=2)[1].get("health") == "true" for n in names),
            "the KV cluster healthy and every fleet unit active", 90)
    except StepFailed as exc:
        raise StepFailed(f"{exc}; fleet unit states: {_fleet_states(t)}") from None
    t.corral("fleet", "--endpoint", ep, "list-units")
    t.ok("updates", "the KV cluster is healthy on 1.1.0; hello, "
         + ", ".join(sorted(u.removesuffix(".service") for u in apps)) + " active")

    # A release that breaks a fleet unit, not the machine: its copy of hello exits 1.
    bad = plan.directory / "bad-source"
    if bad.exists():
        shutil.rmtree(bad)
    shutil.copytree(SOURCE / "corral", bad / "corral",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (bad / "corral/update/hello.py").write_text(BROKEN_HELLO)
    t.console.print("release 1.2.0: the machine's services are fine, but its copy of hello "
                    "exits 1")
    _release(t, "1.2.0", bad)

    def halted() -> bool:
        return any(h.get("version") == "1.2.0" for h in _rollout(t).get("halts") or [])

    w.until(lambda: bool(w.installed.get("1.2.0")), "a machine to take 1.2.0", 60)
    if len(w.installed["1.2.0"]) != 1:
        raise StepFailed(f"safe mode let {sorted(w.installed['1.2.0'])} take 1.2.0 at once")
    (first,) = w.installed["1.2.0"]

    def fell_back() -> bool:
        st = w.agents.get(first, {})
        return ("1.2.0" in (st.get("fell_back_from") or []) and st.get("version") == "1.1.0"
                and bool(st.get("slot_good")))

    w.until(fell_back, f"{first} to boot 1.2.0, fail its fleet gate and fall back", 180)
    fallback = w.agents[first].get("last_fallback") or {}
    code = fallback.get("code")
    if code != 3010 or "hello.service" not in str(fallback.get("detail")):
        raise StepFailed(f"{first} fell back, but not for hello.service (3010): {fallback}")
    t.ok("updates", f"1.2.0 broke hello.service on {first}: its fleet gate failed (code 3010, "
         f"CORRAL_FLEET_UNITS_INACTIVE) and it fell back to 1.1.0")
    w.until(halted, "the server to halt 1.2.0", 60)
    halt = next(h for h in _rollout(t)["halts"] if h.get("version") == "1.2.0")
    t.corral("updatectl", "--server", plan.update_url, "rollout", "status")
    other = next(n for n in names if n != first)
    t.corral("update", "status", "--root", str(plan.machine(other).root), "--rollout")
    t.ok("updates", f"the server halted 1.2.0: {first} reported code {halt.get('code')} "
         f"({halt.get('code_name') or 'CORRAL_FLEET_UNITS_INACTIVE'})")

    # Every other machine checks again after the halt: none is offered 1.2.0.
    after = int(time.time()) + 1

    def checked_again() -> bool:
        return all(int(w.agents.get(n, {}).get("LAST_CHECKED_TIME") or 0) >= after
                   for n in names if n != first)

    w.until(checked_again, "the other machines to check again", 60)
    w.until(units_up, "hello active on every machine again", 60)
    took = sorted(w.installed.get("1.2.0", set()) - {first})
    if took:
        raise StepFailed(f"1.2.0 was installed on {', '.join(took)} too")
    for n in names:
        st = agent_status(plan.machine(n).root)
        slots = {s.get("version") for s in st.get("slots") or []}
        if n != first and "1.2.0" in slots:
            raise StepFailed(f"{n} has 1.2.0 in a slot")
        if st.get("version") != "1.1.0":
            raise StepFailed(f"{n} runs {st.get('version')}, not 1.1.0")
    t.ok("updates", "the other machines checked again, never installed 1.2.0 and run 1.1.0; "
         "hello is active everywhere again")


def _corral_command() -> str:
    """How the user runs corral from here: `corral` when it is on PATH (an activated venv),
    else the venv's script by its path relative to the working folder (after `make demo`)."""
    script = Path(sys.executable).with_name("corral")
    found = shutil.which("corral")
    if found is not None and Path(found).resolve() == script.resolve():
        return "corral"
    if not script.exists():
        return f"{sys.executable} -m corral"
    with contextlib.suppress(ValueError):
        return os.path.relpath(script)
    return str(script)


STEPS: dict[str, Callable[[Tour], None]] = {
    "kv": step_kv,
    "discovery": step_discovery,
    "fleet": step_fleet,
    "updates": step_updates,
}


def run_tour(t: Tour, steps: list[str]) -> bool:
    """Run the steps; return whether every check held."""
    good = True
    for name in steps:
        t.state = load_state(t.state.plan.directory)
        started = time.monotonic()
        try:
            STEPS[name](t)
        except StepSkipped as why:
            t.rows.append((name, str(why), "skipped"))
            t.console.print(f"[yellow]skipped[/] {name}: {why}")
        except (StepFailed, UnitError, UpError, OSError) as err:
            good = False
            t.rows.append((name, str(err), "FAILED"))
            t.console.print(f"[red]FAILED[/] {name}: {err}")
        t.durations[name] = time.monotonic() - started
        t.console.print(f"[dim]{name}: {t.durations[name]:.0f} s[/]")
    return good


@click.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path("corral-cluster"), show_default=True,
              help="Folder of the cluster (as `corral up --dir`).")
@click.option("--machines", "-n", type=int, default=3, show_default=True)
@click.option("--steps", default=",".join(STEPS), show_default=True,
              help="Comma-separated steps to run, in order.")
@click.option("--fleet", type=click.Choice([m.value for m in FleetMode]),
              default=FleetMode.NODE.value, show_default=True,
              help="Who runs fleetd (as `corral up --fleet`).")
@click.option("--stop", is_flag=True, help="Stop the cluster after the summary.")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds each check may take to come true.")
@click.option("--election-timeout", type=click.IntRange(min=1), default=1000,
              show_default=True, help="The KV members' election timeout, in ms (heartbeat "
              "100 ms).")
@click.option("--agent-ttl", default="5s", show_default=True,
              help="fleet's agent_ttl: how long a silent machine stays registered (at least "
                   "5 election timeouts).")
@click.option("--service-ttl", type=click.IntRange(min=1), default=5, show_default=True,
              help="TTL in seconds of the discovery step's announcement (at least 5 election "
                   "timeouts); its sidekick refreshes it every third of that.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Only the short KV tour: one `corral etcd` member with its data in ROOT "
                   "(stopped at the end).")
def cli(directory: Path, machines: int, steps: str, fleet: str, stop: bool,
        timeout: float, election_timeout: int, agent_ttl: str, service_ttl: int,
        root: Path | None) -> None:
    """The tour: start a cluster as `corral up` does, show the KV store, service discovery,
    fleet and updates at work, print a summary, and leave the cluster running."""
    if root is not None:
        run_kv_tour(root, Console())
        return
    wanted = [s.strip() for s in steps.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STEPS]
    if unknown:
        raise click.BadParameter(f"unknown step(s) {unknown}; choose from {list(STEPS)}",
                                 param_hint="--steps")
    console = Console()
    started = time.monotonic()
    try:
        check_ttl("--service-ttl", service_ttl, election_timeout)
        plan = plan_cluster(machines, directory, free_ports(2 * machines + 1),
                            [uuid.uuid4().hex for _ in range(machines)], fleet=FleetMode(fleet),
                            election_ms=election_timeout, agent_ttl=agent_ttl)
        console.rule(f"corral up: {machines} machines in {plan.directory}")
        # Without the updates step, no update server, slots, agents or locksmith: seven
        # fewer processes competing for the CPU while the other steps run.
        state = start_cluster(plan, updates="updates" in wanted, say=console.print)
        with console.status("waiting for the members to elect a leader…"):
            wait_ready(state, 120)
    except UpError as err:
        raise click.ClickException(str(err)) from None
    console.print(status_table(plan, cluster_status(state)))
    tour = Tour(load_state(plan.directory), console, timeout, service_ttl=service_ttl)
    tour.durations["up"] = time.monotonic() - started
    good = run_tour(tour, wanted)
    table = Table(title=f"corral demo: what happened ({time.monotonic() - started:.0f} s)",
                  caption="seconds: " + ", ".join(f"{k} {v:.0f}"
                                                  for k, v in tour.durations.items()))
    for col in ("step", "what", "result"):
        table.add_column(col)
    colors = {"ok": "green", "skipped": "yellow", "FAILED": "red"}
    for step, what, result in tour.rows:
        table.add_row(step, what, f"[{colors[result]}]{result}[/]")
    console.print(status_table(plan, cluster_status(tour.state)))
    console.print(table)
    if stop:
        stop_cluster(load_state(plan.directory), say=console.print)
    else:
        c = _corral_command()
        # soft_wrap: the commands stay whole lines a user can copy, whatever the width.
        console.print(
            "The cluster is still running. Look around:\n"
            f"  {c} kv --endpoints {plan.endpoints} ls --recursive /\n"
            f"  {c} fleet --endpoint {plan.endpoints} list-units\n"
            f"  {c} units --root {plan.machines[0].root} list\n"
            f"  {c} units --root {plan.machines[0].root} cat www-announce\n"
            f"  {c} update status --root {plan.machines[0].root}\n"
            f"  {c} updatectl --server {plan.update_url} rollout status\n"
            f"Logs: {plan.directory}/*.log and `{c} units --root DIR journal UNIT`\n"
            f"Stop it: {c} down --dir {plan.directory}", markup=False, soft_wrap=True)
    if not good:
        raise click.ClickException("some steps of the tour failed (see above)")
