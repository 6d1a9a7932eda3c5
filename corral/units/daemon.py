"""`corral units daemon`: one machine's unit runner plus its control socket, until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from corral.units.api import ControlServer
from corral.units.config import Defaults
from corral.units.process import set_child_subreaper
from corral.units.supervisor import UnitRunner

__all__ = ["run_daemon"]


async def run_daemon(
    root: Path,
    hostname: str | None = None,
    defaults: Defaults | None = None,
    boot: bool = True,
    stop_units_on_exit: bool = True,
) -> None:
    set_child_subreaper()  # Type=forking daemons re-parent to us, so we can reap them
    runner = UnitRunner(root, hostname=hostname, defaults=defaults, reap_orphans=True)
    await runner.start()
    server = ControlServer(runner)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if boot:
            await runner.boot()
        await stop.wait()
    finally:
        await server.close()
        await runner.close(stop_units=stop_units_on_exit)
