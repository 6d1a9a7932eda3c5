"""`corral fleetd`: one fleet machine (presence, engine, agent, unit-state publisher).

Options are fleet's (``fleetd --help``), from flags, ``FLEET_*`` environment variables or an
INI-style config file (``--config``; default ``<root>/etc/fleet/fleet.conf`` if present),
in that order of precedence. The machine ID is ``--machine-id`` or ``<root>/etc/machine-id``.

Units run through a unit runner (``--runner``): ``units`` drives the machine's units daemon
(``corral units --root DIR daemon``, found by its socket under ``--root``), so scheduled units
run as processes; ``memory`` is the in-process stand-in (no processes, every start succeeds)
that scheduling tests use. ``auto`` (the default) picks ``units`` when the socket exists.

``--api-listen HOST:PORT`` serves fleet's HTTP API v1 (units read and write, machines, state)
and the status/journal extension (:mod:`corral.fleet.api`); the URL is published in the
registry for ``corral fleet status/journal``. Port 0 picks a free port.

SIGTERM/SIGINT: graceful shutdown (units stopped and unloaded, machine key deleted), exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import click
from aiohttp import web

import corral
from corral.fleet.api import make_app
from corral.fleet.config import ConfigError, load_config
from corral.fleet.machine import FleetMachine
from corral.fleet.runner import MemoryRunner, UnitRunner
from corral.fleet.units_runner import DaemonRunner
from corral.units.api import socket_path

__all__ = ["cli"]

_FLAGS = (
    "etcd_servers",
    "etcd_key_prefix",
    "etcd_request_timeout",
    "engine_reconcile_interval",
    "agent_ttl",
    "agent_reconcile_interval",
    "public_ip",
    "metadata",
    "disable_engine",
    "disable_watches",
    "verbosity",
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None)
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    default=Path("/"),
    show_default=True,
    help="the machine's root folder",
)
@click.option("--machine-id", default=None, help="default: <root>/etc/machine-id")
@click.option(
    "--runner", type=click.Choice(["auto", "units", "memory"]), default="auto", show_default=True
)
@click.option("--api-listen", default="", help="HOST:PORT to serve fleet's HTTP API on")
@click.option("--etcd-servers", default=None, help="comma-separated KV endpoints")
@click.option("--etcd-key-prefix", default=None)
@click.option("--etcd-request-timeout", default=None)
@click.option("--engine-reconcile-interval", default=None)
@click.option("--agent-ttl", default=None, help="Go duration, e.g. 30s")
@click.option("--agent-reconcile-interval", default=None)
@click.option("--public-ip", default=None)
@click.option("--metadata", default=None, help="k=v,k2=v2")
@click.option("--disable-engine", default=None)
@click.option("--disable-watches", default=None)
@click.option("--verbosity", default=None)
@click.option("--version", "show_version", is_flag=True)
@click.argument("args", nargs=-1)
def cli(
    config_path: Path | None,
    root: Path,
    machine_id: str | None,
    runner: str,
    api_listen: str,
    show_version: bool,
    args: tuple[str, ...],
    **flags: str | None,
) -> None:
    """Run one fleet machine."""
    if show_version or args == ("version",):
        click.echo(f"fleetd version {corral.__version__}")
        return
    if args:
        click.echo("fleetd takes no arguments. Did you mean to invoke fleetctl instead?", err=True)
        click.echo(click.get_current_context().get_usage(), err=True)
        sys.exit(1)
    given = {k: v for k, v in flags.items() if k in _FLAGS and v is not None}
    try:
        cfg = load_config(config_path, os.environ, given, root / "etc/fleet/fleet.conf")
    except (ConfigError, OSError) as exc:
        click.echo(f"Failed parsing config: {exc}", err=True)
        sys.exit(1)
    if machine_id is None:
        try:
            machine_id = (root / "etc/machine-id").read_text().strip()
        except OSError:
            machine_id = ""
    if not machine_id:
        click.echo("unable to determine local machine ID", err=True)
        sys.exit(1)
    logging.basicConfig(
        level=logging.DEBUG if cfg.verbosity > 0 else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    if runner == "auto":
        runner = "units" if socket_path(root).exists() else "memory"
    if runner == "units" and not socket_path(root).exists():
        click.echo(
            f"no units daemon for {root} (start `corral units --root {root} daemon` first)",
            err=True,
        )
        sys.exit(1)
    listen: tuple[str, int] | None = None
    if api_listen:
        host, _, port = api_listen.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            click.echo(f"--api-listen: expected HOST:PORT, got {api_listen!r}", err=True)
            sys.exit(1)
        listen = (host, int(port))
    the_runner: UnitRunner = DaemonRunner(root) if runner == "units" else MemoryRunner()
    machine = FleetMachine(machine_id, cfg, the_runner, version=corral.__version__)
    asyncio.run(_serve(machine, listen))


async def _serve(machine: FleetMachine, listen: tuple[str, int] | None) -> None:
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, done.set)
    web_runner: web.AppRunner | None = None
    if listen is not None:
        web_runner = web.AppRunner(make_app(machine.registry, machine.runner, machine.id))
        await web_runner.setup()
        site = web.TCPSite(web_runner, listen[0], listen[1])
        await site.start()
        bound = web_runner.addresses  # the real port when 0 was asked for
        port = int(bound[0][1]) if bound else listen[1]
        machine.api_url = f"http://{listen[0]}:{port}"
        logging.getLogger("corral.fleet").info("fleet API on %s", machine.api_url)
    machine.start()
    await done.wait()
    await machine.stop()
    if web_runner is not None:
        await web_runner.cleanup()
