"""`corral locksmith`: locksmithctl's verbs against the reboot semaphore in the KV store.

Outputs are locksmithctl v0.6's: `status` prints `Available: N` / `Max: M` and, when the lock
is held, a blank line, `MACHINE ID` and one holder per line; `set-max` prints `Old-Max:` and
`Max:`; failures print `Error locking: …` / `Error unlocking: …` and exit 1. corral adds, only
when there are any, the holders it released because their machine was gone.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from corral.locksmith import (
    DEFAULT_ENDPOINTS,
    RELEASED_PREFIX,
    ClientKeys,
    Lock,
    LockClient,
    LocksmithError,
    SetMax,
    Unlock,
)

__all__ = ["cli"]


class _Ctx:
    def __init__(self, endpoints: tuple[str, ...], group: str, root: Path) -> None:
        self.endpoints = endpoints
        self.group = group
        self.root = root

    def client(self) -> LockClient:
        client = LockClient(ClientKeys.connect(self.endpoints), self.group)
        try:
            client.init()
        except LocksmithError as exc:
            click.echo(f"Error initializing etcd client: {exc}", err=True)
            sys.exit(1)
        return client

    def machine_id(self, given: str | None) -> str:
        if given:
            return given
        try:
            mid = (self.root / "etc" / "machine-id").read_text().strip()
        except OSError:
            mid = ""
        if not mid:
            click.echo("Cannot read machine-id", err=True)
            sys.exit(1)
        return mid


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    out = tuple(e for v in values for e in v.split(",") if e)
    return out or DEFAULT_ENDPOINTS


@click.group()
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    envvar="LOCKSMITHCTL_ENDPOINT",
    help="KV endpoint (repeatable or comma-separated) [default: "
    + ",".join(DEFAULT_ENDPOINTS)
    + "]",
)
@click.option("--group", default="", envvar="LOCKSMITHCTL_GROUP", help="locksmith group")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="machine root whose etc/machine-id is this machine's id",
)
@click.pass_context
def cli(ctx: click.Context, endpoints: tuple[str, ...], group: str, root: Path) -> None:
    """Manage the cluster-wide reboot lock (locksmithctl compatible)."""
    ctx.obj = _Ctx(_split(endpoints), group, root)


@cli.command()
@click.pass_obj
def status(obj: _Ctx) -> None:
    """Get the status of the cluster wide reboot lock."""
    client = obj.client()
    try:
        sem, _index = client.get()
    except LocksmithError as exc:
        click.echo(f"Error setting value: {exc}", err=True)
        sys.exit(1)
    click.echo(f"Available: {sem.semaphore}")
    click.echo(f"Max: {sem.max}")
    if sem.holder_list:
        click.echo("")
        click.echo("MACHINE ID")
        for h in sem.holder_list:
            click.echo(h)
    try:
        released = client.keys.list(RELEASED_PREFIX)
    except LocksmithError:
        released = []
    if released:
        click.echo("")
        click.echo("RELEASED (machine gone)")
        for node in sorted(released, key=lambda n: n.key):
            try:
                record = json.loads(node.value or "{}")
                click.echo(
                    f"{record['holder']} after {record['released_at'] - record['missing_since']:g}s"
                )
            except (ValueError, KeyError, TypeError):
                click.echo(node.key.rsplit("/", 1)[-1])


@cli.command()
@click.argument("machine_id", required=False)
@click.pass_obj
def lock(obj: _Ctx, machine_id: str | None) -> None:
    """Lock this machine or a given machine-id for reboot."""
    mid = obj.machine_id(machine_id)
    client = obj.client()
    try:
        client.apply(Lock(mid))
    except LocksmithError as exc:
        click.echo(f"Error locking: {exc}", err=True)
        sys.exit(1)


@cli.command()
@click.argument("machine_id", required=False)
@click.pass_obj
def unlock(obj: _Ctx, machine_id: str | None) -> None:
    """Unlock this machine or a given machine-id for reboot."""
    mid = obj.machine_id(machine_id)
    client = obj.client()
    try:
        client.apply(Unlock(mid))
    except LocksmithError as exc:
        click.echo(f"Error unlocking: {exc}", err=True)
        sys.exit(1)


@cli.command("set-max")
@click.argument("value", required=False)
@click.pass_obj
def set_max(obj: _Ctx, value: str | None) -> None:
    """Set the maximum number of lock holders."""
    if value is None:
        click.echo("New maximum value must be set.", err=True)
        sys.exit(1)
    try:
        new_max = int(value, 10)
    except ValueError:
        click.echo(f"Invalid maximum value: {value}", err=True)
        sys.exit(1)
    client = obj.client()
    try:
        write = client.apply(SetMax(new_max))
    except LocksmithError as exc:
        click.echo(f"Error setting value: {exc}", err=True)
        sys.exit(1)
    click.echo(f"Old-Max: {write.before.max}")
    click.echo(f"Max: {write.after.max}")


@cli.command("fleetlock")
@click.option(
    "--listen",
    default="127.0.0.1:3333",
    show_default=True,
    help="HOST:PORT to serve FleetLock on",
)
@click.pass_obj
def fleetlock(obj: _Ctx, listen: str) -> None:
    """Serve the FleetLock protocol (Zincati's reboot lock) over the locksmith semaphore."""
    from aiohttp import web

    from corral.locksmith import make_fleetlock_app

    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise click.BadParameter(f"expected HOST:PORT, got {listen!r}", param_hint="--listen")
    app = make_fleetlock_app(lambda group: LockClient(ClientKeys.connect(obj.endpoints), group))
    web.run_app(app, host=host or "127.0.0.1", port=int(port_text), print=None)


@cli.command("daemon")
@click.option("--poll", default=1.0, show_default=True, help="seconds between agent status polls")
@click.option("--presence-ttl", type=int, default=None, help="keep a presence key with this TTL")
@click.option(
    "--dead-holder-grace",
    type=float,
    default=None,
    help="release holders whose presence is gone this many seconds",
)
@click.option(
    "--retry-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    envvar="LOCKSMITHD_RETRY_INTERVAL",
    show_envvar=True,
    help="seconds before the first retry of a refused lock (then doubling)",
)
@click.option(
    "--max-retry-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    envvar="LOCKSMITHD_MAX_RETRY_INTERVAL",
    show_envvar=True,
    help="cap of the retry interval, seconds",
)
@click.pass_obj
def daemon(
    obj: _Ctx,
    poll: float,
    presence_ttl: int | None,
    dead_holder_grace: float | None,
    retry_interval: float,
    max_retry_interval: float,
) -> None:
    """Run locksmithd beside the update agent of the machine at --root.

    Settings come from ROOT/usr/share/coreos/update.conf, ROOT/etc/coreos/update.conf and
    then the environment (REBOOT_STRATEGY, LOCKSMITHD_REBOOT_WINDOW_START/_LENGTH,
    LOCKSMITHD_GROUP, LOCKSMITHD_ENDPOINT), as locksmithd.service reads them.
    """
    import asyncio
    import logging
    import os

    from corral.locksmith import (
        AgentLink,
        ConfigError,
        DaemonSettings,
        LocksmithDaemon,
        RebootCoordinator,
        follow_agent,
        parse_env_file,
    )

    logging.basicConfig(level=logging.INFO, format="locksmithd: %(message)s")
    env: dict[str, str] = {}
    for conf in ("usr/share/coreos/update.conf", "etc/coreos/update.conf"):
        try:
            env.update(parse_env_file((obj.root / conf).read_text()))
        except OSError:
            pass
    env.update(os.environ)
    try:
        settings = DaemonSettings.from_env(env)
    except ConfigError as exc:
        click.echo(f"locksmithd: {exc}", err=True)
        sys.exit(1)
    endpoints = settings.endpoints if env.get("LOCKSMITHD_ENDPOINT") else obj.endpoints
    group = settings.group or obj.group
    machine_id = obj.machine_id(None)

    def make(reboot: Any) -> LocksmithDaemon:
        return LocksmithDaemon(
            RebootCoordinator(
                settings,
                initial_interval=timedelta(seconds=retry_interval),
                max_interval=timedelta(seconds=max(retry_interval, max_retry_interval)),
            ),
            LockClient(ClientKeys.connect(endpoints), group),
            machine_id,
            reboot,
            presence_ttl=presence_ttl,
            dead_holder_grace=dead_holder_grace,
        )

    sys.exit(asyncio.run(follow_agent(AgentLink(obj.root), make, poll=poll)))
