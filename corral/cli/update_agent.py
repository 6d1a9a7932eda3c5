"""`corral update-agent`: one machine's update agent, and the stand-in machine service."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from corral.update.agent import DEFAULT_SERVICE, Agent, AgentConfig, provision
from corral.update.errors import UpdateError
from corral.update.fleet_health import KvFleetView
from corral.update.payload import load_public_keys
from corral.update.server import CORRAL_APP_ID
from corral.update.slots import BACKENDS

KEYS_DIR = "etc/corral/update-keys"


def _trusted(root: Path, extra: tuple[Path, ...]) -> list[Ed25519PublicKey]:
    paths = sorted((root / KEYS_DIR).glob("*.pem")) if (root / KEYS_DIR).is_dir() else []
    try:
        return load_public_keys([p.read_bytes() for p in [*paths, *extra]])
    except (OSError, UpdateError) as exc:
        raise click.ClickException(f"bad trusted key: {exc}") from None


@click.group()
def cli() -> None:
    """Run a machine's update agent (A/B slots, boot counting, Omaha client)."""


@cli.command("provision")
@click.option("--root", type=click.Path(path_type=Path), required=True)
@click.option("--payload", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              required=True)
@click.option("--trusted-key", "keys", type=click.Path(path_type=Path, exists=True),
              multiple=True, help="Release public key to trust (repeatable; copied in).")
@click.option("--slot-backend", type=click.Choice(sorted(BACKENDS)), default="directory",
              show_default=True, help="Slots as release directories or as image files.")
def provision_cmd(root: Path, payload: Path, keys: tuple[Path, ...], slot_backend: str) -> None:
    """Install the first release into slot a of a new machine root."""
    key_dir = root / KEYS_DIR
    key_dir.mkdir(parents=True, exist_ok=True)
    for i, k in enumerate(keys):
        (key_dir / f"key-{i}.pem").write_bytes(k.read_bytes())
    try:
        version = provision(root, payload.read_bytes(), _trusted(root, ()), slot_backend)
    except UpdateError as exc:
        raise click.ClickException(f"refused (code {exc.code}): {exc}") from None
    click.echo(f"{root}: slot a holds corral {version} ({slot_backend} slots)")


@cli.command("run")
@click.option("--root", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--server", required=True, help="Omaha URL, e.g. http://127.0.0.1:8000/v1/update/")
@click.option("--group", default="stable", show_default=True, help="Track sent as app@track.")
@click.option("--app-id", default=CORRAL_APP_ID, show_default=True)
@click.option("--trusted-key", "keys", type=click.Path(path_type=Path, exists=True),
              multiple=True)
@click.option("--service", "services", multiple=True,
              help="Service command line started from the booted slot ({python}, {root}, "
                   "{slot} are expanded). Default: the stand-in service.")
@click.option("--health-command", default=None, help="Must exit 0 for the slot to be good.")
@click.option("--health-unit", "health_units", multiple=True,
              help="A unit (run by `corral units daemon` on this root) that must be active "
                   "for the slot to be good; ignored when the machine has no such unit.")
@click.option("--fleet-endpoint", "fleet_endpoints", multiple=True,
              help="KV (etcd v2) URL holding fleet's registry: the fleet units scheduled to "
                   "this machine must be active again after a boot (repeatable).")
@click.option("--fleet-prefix", default="/_coreos.com/fleet/", show_default=True)
@click.option("--fleet-machine-id", default=None,
              help="This machine's fleet ID (default: <root>/etc/machine-id).")
@click.option("--fleet-window", type=float, default=120.0, show_default=True,
              envvar="CORRAL_UPDATE_FLEET_WINDOW", show_envvar=True,
              help="Seconds after boot for the fleet units to be active again.")
@click.option("--health-period", type=float, default=45.0, show_default=True,
              envvar="CORRAL_UPDATE_HEALTH_PERIOD", show_envvar=True)
@click.option("--boot-deadline", type=float, default=300.0, show_default=True,
              envvar="CORRAL_UPDATE_BOOT_DEADLINE", show_envvar=True)
@click.option("--initial-check", type=float, default=420.0, show_default=True,
              envvar="CORRAL_UPDATE_INITIAL_CHECK", show_envvar=True)
@click.option("--initial-fuzz", type=float, default=600.0, show_default=True,
              envvar="CORRAL_UPDATE_INITIAL_FUZZ", show_envvar=True)
@click.option("--interval", type=float, default=2700.0, show_default=True,
              envvar="CORRAL_UPDATE_INTERVAL", show_envvar=True)
@click.option("--interval-fuzz", type=float, default=600.0, show_default=True,
              envvar="CORRAL_UPDATE_INTERVAL_FUZZ", show_envvar=True)
@click.option("--max-backoff", type=float, default=14400.0, show_default=True,
              envvar="CORRAL_UPDATE_MAX_BACKOFF", show_envvar=True)
@click.option("--reboot-strategy", type=click.Choice(["reboot", "off"]), default="off",
              show_default=True)
@click.option("--stop-timeout", type=float, default=5.0, show_default=True)
@click.option("--seed", type=int, default=None, help="Seed for check jitter.")
def run_cmd(root: Path, server: str, group: str, app_id: str, keys: tuple[Path, ...],
            services: tuple[str, ...], health_command: str | None,
            health_units: tuple[str, ...], fleet_endpoints: tuple[str, ...],
            fleet_prefix: str, fleet_machine_id: str | None, fleet_window: float,
            health_period: float,
            boot_deadline: float, initial_check: float, initial_fuzz: float, interval: float,
            interval_fuzz: float, max_backoff: float, reboot_strategy: str,
            stop_timeout: float, seed: int | None) -> None:
    """Boot the machine from its slots and keep it updated."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = AgentConfig(
            root=root, server=server, trusted_keys=_trusted(root, keys), app_id=app_id,
            group=group,
            services=[shlex.split(s) for s in services] or [DEFAULT_SERVICE],
            health_command=shlex.split(health_command) if health_command else None,
            health_units=health_units,
            health_period=health_period, boot_deadline=boot_deadline,
            fleet_window=fleet_window,
            initial_check=initial_check, initial_fuzz=initial_fuzz, interval=interval,
            interval_fuzz=interval_fuzz, max_backoff=max_backoff,
            reboot_strategy=reboot_strategy, stop_timeout=stop_timeout, seed=seed,
        )
        agent = Agent(config)
        if fleet_endpoints:
            # fleetd runs from the booted slot: its registration names the booted version.
            config.fleet_view = KvFleetView(list(fleet_endpoints),
                                            fleet_machine_id or agent.machine_id, fleet_prefix,
                                            expected_version=lambda: agent.version)
        asyncio.run(agent.run())
    except (UpdateError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


@cli.command("service", hidden=True)
@click.option("--status-file", type=click.Path(path_type=Path), required=True)
def service_cmd(status_file: Path) -> None:
    """Stand-in machine service: record which corral code runs, then stay up."""
    import corral

    status_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = status_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version": corral.__version__, "file": corral.__file__,
                               "pid": os.getpid(), "executable": sys.executable}))
    os.replace(tmp, status_file)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
