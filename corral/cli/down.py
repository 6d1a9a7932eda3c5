"""`corral down`: stop the cluster `corral up` started in DIR (read from its state file)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import click

from corral.up import UpError, load_state, stop_cluster

__all__ = ["cli"]


def _is_up(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return b"up" in cmd and stat.rsplit(")", 1)[-1].split()[0] != "Z"


@click.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path("corral-cluster"), show_default=True,
              help="The folder given to `corral up`.")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds the machines get to stop their units before they are killed.")
def cli(directory: Path, timeout: float) -> None:
    """Stop every process `corral up` started in DIR; nothing is left running."""
    try:
        state = load_state(directory)
        up = state.up_pid
        if up and up != os.getpid() and _is_up(up):
            # A foreground `corral up` stops its own cluster on SIGTERM.
            with contextlib.suppress(ProcessLookupError):
                os.kill(up, signal.SIGTERM)
            deadline = time.monotonic() + timeout + 15
            while time.monotonic() < deadline and _is_up(up):
                time.sleep(0.1)
            state = load_state(directory)
        stop_cluster(state, timeout, say=click.echo)
    except UpError as err:
        raise click.ClickException(str(err)) from None
