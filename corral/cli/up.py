"""`corral up`: start N `corral node` machines on loopback with a live status view."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path
from types import FrameType

import click
from rich.console import Console
from rich.live import Live

from corral.testing.ports import free_ports
from corral.up import (
    FleetMode,
    UpError,
    cluster_status,
    load_state,
    plan_cluster,
    start_cluster,
    stop_cluster,
    wait_ready,
)
from corral.up.view import status_table

__all__ = ["cli"]


def _term(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.command()
@click.option("--machines", "-n", type=int, default=3, show_default=True,
              help="How many machines (1-9).")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path("corral-cluster"), show_default=True,
              help="Folder for the machines' roots, configs, logs and the state file.")
@click.option("--detach", is_flag=True,
              help="Start, wait until healthy, print the status and return (stop it with "
                   "`corral down`).")
@click.option("--no-updates", is_flag=True,
              help="No update server, slots, update agent or locksmith.")
@click.option("--fleet", "fleet", type=click.Choice([m.value for m in FleetMode]),
              default=FleetMode.NODE.value, show_default=True,
              help="Who runs fleetd: the node (coreos.fleet), corral up beside each node "
                   "(in-memory unit runner), or nobody.")
@click.option("--ready-timeout", type=float, default=120.0, show_default=True,
              help="Seconds to wait for every member to be healthy.")
@click.option("--refresh", type=float, default=1.0, show_default=True,
              help="Seconds between status refreshes.")
def cli(machines: int, directory: Path, detach: bool, no_updates: bool,
        fleet: str, ready_timeout: float, refresh: float) -> None:
    """Start a local corral cluster: N machines, each a `corral node` with its own root,
    cloud-config, slots and container storage, plus an update server.

    Ctrl-C (or `corral down --dir DIR` from another shell) stops everything it started.
    """
    console = Console()
    try:
        plan = plan_cluster(machines, directory, free_ports(2 * machines + 1),
                            [uuid.uuid4().hex for _ in range(machines)],
                            fleet=FleetMode(fleet))
    except UpError as err:
        raise click.ClickException(str(err)) from None
    signal.signal(signal.SIGTERM, _term)
    state = None
    try:
        state = start_cluster(plan, updates=not no_updates, say=console.print)
        with console.status("waiting for the members to elect a leader…"):
            wait_ready(state, ready_timeout)
        if detach:
            state.up_pid = None
            state.save()
            console.print(status_table(plan, cluster_status(state)))
            console.print(f"cluster running. Look around:\n"
                          f"  corral kv --endpoints {plan.endpoints} ls --recursive /\n"
                          f"  corral fleet --endpoint {plan.endpoints} list-machines\n"
                          f"  corral units --root {plan.machines[0].root} list\n"
                          f"Stop it: corral down --dir {plan.directory}")
            return
        console.print("[bold]cluster up[/]; Ctrl-C stops it")
        with Live(status_table(plan, cluster_status(state)), console=console,
                  refresh_per_second=4) as live:
            while True:
                time.sleep(refresh)
                live.update(status_table(plan, cluster_status(state)))
    except UpError as err:
        if state is not None:
            stop_cluster(state, say=console.print)
        raise click.ClickException(str(err)) from None
    except KeyboardInterrupt:
        console.print("stopping…")
        if state is None:
            return
        try:
            stop_cluster(load_state(plan.directory), say=console.print)
        except UpError as err:
            raise click.ClickException(str(err)) from None
