"""The single-member KV tour (`corral demo --root DIR`): the v2 API on one `corral etcd`.

It starts a `corral etcd` member on free loopback ports under DIR, shows writes, a
directory listing, an in-order queue, a compare-and-swap, a TTL key expiring, and a
long-poll watch firing, then prints a short summary. It needs no machines, slots or fleet;
the full tour on `corral up` machines is `corral demo` without `--root`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from corral.testing.ports import free_ports

__all__ = ["KvTour", "run_kv_tour"]


@dataclass
class KvTour:
    """Shared state of the tour: the member's URL and the rows of the summary."""

    url: str
    console: Console
    rows: list[tuple[str, str]] = field(default_factory=list)

    def call(self, method: str, path: str, **form: str) -> tuple[int, dict[str, Any], str]:
        data = "&".join(f"{k}={v}" for k, v in form.items()).encode() if form else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                body = resp.read()
                return resp.status, json.loads(body), resp.headers.get("X-Etcd-Index", "")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read()), err.headers.get("X-Etcd-Index", "")

    def show(self, what: str, method: str, path: str, **form: str) -> dict[str, Any]:
        status, doc, index = self.call(method, path, **form)
        args = " ".join(f"{k}={v}" for k, v in form.items())
        self.console.print(f"[bold cyan]{method}[/] {path} {args}".rstrip())
        # markup=False: causes such as "[red != blue]" are not rich markup.
        self.console.print(f"  → {status} X-Etcd-Index={index} {json.dumps(doc)}", markup=False)
        self.rows.append((what, f"{status} {doc.get('action') or doc.get('message', '')}"))
        return doc


def step_writes(t: KvTour) -> None:
    t.console.rule("keys: set, get, listing")
    t.show("set a key", "PUT", "/v2/keys/demo/message", value="Hello")
    t.show("read it back", "GET", "/v2/keys/demo/message")
    t.show("set another", "PUT", "/v2/keys/demo/color", value="blue")
    t.show("list the dir (sorted)", "GET", "/v2/keys/demo?recursive=true&sorted=true")


def step_queue_and_cas(t: KvTour) -> None:
    t.console.rule("in-order keys and compare-and-swap")
    t.show("enqueue job 1", "POST", "/v2/keys/demo/queue", value="job1")
    t.show("enqueue job 2", "POST", "/v2/keys/demo/queue", value="job2")
    t.show(
        "CAS with a stale value fails", "PUT", "/v2/keys/demo/color?prevValue=red", value="green"
    )
    t.show("CAS with the right value", "PUT", "/v2/keys/demo/color?prevValue=blue", value="green")


def step_ttl(t: KvTour) -> None:
    t.console.rule("TTL: a key that expires")
    t.show("set with ttl=1", "PUT", "/v2/keys/demo/session?ttl=1", value="alive")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, _, _ = t.call("GET", "/v2/keys/demo/session")
        if status == 404:
            break
        time.sleep(0.1)
    t.show("after the deadline it is gone", "GET", "/v2/keys/demo/session")


def step_watch(t: KvTour) -> None:
    t.console.rule("watch: a long poll answered by the next write")
    result: dict[str, Any] = {}

    def watch() -> None:
        result["event"] = t.call("GET", "/v2/keys/demo/color?wait=true")[1]

    watcher = threading.Thread(target=watch)
    watcher.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until the member counts the watcher
        if t.call("GET", "/v2/stats/store")[1].get("watchers", 0) >= 1:
            break
        time.sleep(0.05)
    t.show("write while watched", "PUT", "/v2/keys/demo/color", value="purple")
    watcher.join(timeout=30)
    event = result.get("event", {})
    t.console.print(f"  watcher received: {json.dumps(event)}", markup=False)
    t.rows.append(("the watch fired", str(event.get("action", "no event"))))


STEPS: list[Callable[[KvTour], None]] = [step_writes, step_queue_and_cas, step_ttl, step_watch]


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"corral etcd exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/version", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise click.ClickException("corral etcd did not become ready in 30 s")


def run_kv_tour(base: Path, console: Console) -> None:
    """Start a member under `base`, run the steps, print the summary; raise
    click.ClickException when the member fails or the watch does not fire."""
    base.mkdir(parents=True, exist_ok=True)
    client, peer = free_ports(2)
    url = f"http://127.0.0.1:{client}"
    log = base / "etcd.log"
    argv = [
        sys.executable, "-m", "corral", "etcd",
        "--name", "demo",
        "--data-dir", str(base / "demo.etcd"),
        "--listen-client-urls", url,
        "--advertise-client-urls", url,
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
    ]  # fmt: skip
    console.print(f"[bold]starting[/] corral etcd on {url} (data in {base})")
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    tour = KvTour(url, console)
    try:
        _wait_ready(url, proc, log)
        for step in STEPS:
            step(tour)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    table = Table(title="corral demo: what happened")
    table.add_column("step")
    table.add_column("answer")
    for what, answer in tour.rows:
        table.add_row(what, answer)
    console.print(table)
    fired = any(what == "the watch fired" and ans != "no event" for what, ans in tour.rows)
    if not fired:
        raise click.ClickException("the watch did not fire")
