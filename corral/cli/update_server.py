"""`corral update-server`: the Omaha update server (Nebraska-like)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click
from aiohttp import web

from corral.update.errors import UpdateError
from corral.update.policy import GroupPolicy
from corral.update.server import CORRAL_APP_ID, Store, UpdateServer, bootstrap, make_app


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    click.echo(f"update server listening on http://{host}:{port}/v1/update/", err=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path), required=True,
              help="Where state.sqlite3 and stored packages live.")
@click.option("--listen", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--base-url", default=None,
              help="URL clients download packages from (default: the request's origin).")
@click.option("--admin-token", envvar="CORRAL_UPDATE_ADMIN_TOKEN", default=None,
              help="Require 'Authorization: Bearer TOKEN' on /api/.")
@click.option("--app-id", default=CORRAL_APP_ID, show_default=True,
              help="App created on first start, with a 'stable' channel and group.")
def cli(data_dir: Path, listen: str, port: int, base_url: str | None,
        admin_token: str | None, app_id: str) -> None:
    """Serve Omaha v3 at /v1/update/, packages at /packages/, the admin API at /api/."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        store = Store(data_dir)
        bootstrap(store, app_id, "stable", GroupPolicy())
    except (UpdateError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    app = make_app(UpdateServer(store, base_url=base_url), admin_token=admin_token)
    try:
        asyncio.run(_serve(app, listen, port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}:{port}: {exc.strerror}") from None
    finally:
        store.close()
