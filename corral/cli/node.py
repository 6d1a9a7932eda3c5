"""`corral node --root DIR --cloud-config FILE`: boot one machine from its #cloud-config.

Validates the config (errors refuse it, with coreos-cloudinit's line-numbered messages),
writes it under the root saying what changed, then runs the machine's unit runner and its
services until SIGTERM or Ctrl-C, and stops everything it started. `--apply-only` writes and
exits (what a re-applied config changes, without running anything).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import click

from corral.cloudinit import CloudConfigError
from corral.node import ConfigRefused, Node, NodeError
from corral.units.errors import UnitError

__all__ = ["cli"]


def _say(line: str) -> None:
    click.echo(line, err=True)


async def _run(node: Node) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.run(stop, ready=lambda: _say("machine up"))


@click.command()
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The machine's root folder (default: the config's corral.root).")
@click.option("--cloud-config", "config_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="The #cloud-config file.")
@click.option("--allow-host-root", is_flag=True,
              help="Allow --root / (provision this host itself).")
@click.option("--apply-only", is_flag=True, help="Apply the config and exit; start nothing.")
@click.option("--restart-sec", default=1.0, show_default=True, type=float,
              help="RestartSec= of corral's service units.")
@click.option("--slot-poll", default=1.0, show_default=True, type=float,
              help="Seconds between checks of the update agent's booted slot.")
@click.option("--reboot-pause", default=0.0, show_default=True, type=float,
              help="Seconds a reboot keeps the machine's services down (between stop and start).")
def cli(
    root: Path | None,
    config_file: Path,
    allow_host_root: bool,
    apply_only: bool,
    restart_sec: float,
    slot_poll: float,
    reboot_pause: float,
) -> None:
    """Boot one machine under --root from its #cloud-config."""
    try:
        data = config_file.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {config_file}: {exc.strerror}") from None
    if root is None:
        from corral.cloudinit import parse

        try:
            configured = parse(data).corral.root
        except CloudConfigError:
            configured = ""
        if not configured:
            raise click.UsageError("give --root (or set corral.root in the cloud-config)")
        root = Path(configured)
    try:
        node = Node(root, data, python=sys.executable, allow_host_root=allow_host_root,
                    say=_say, restart_sec=restart_sec, slot_poll=slot_poll,
                    reboot_pause=reboot_pause)
        node.prepare()
        if apply_only:
            return
        asyncio.run(_run(node))
    except ConfigRefused as err:
        for entry in err.entries:
            click.echo(str(entry), err=True)
        click.echo("Failed: the cloud-config has errors; nothing was applied", err=True)
        sys.exit(1)
    except (NodeError, CloudConfigError, UnitError) as err:
        click.echo(f"Failed: {err}", err=True)
        sys.exit(1)
    except OSError as err:
        click.echo(f"Failed: cannot use the machine root {root}: {err}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
