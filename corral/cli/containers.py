"""`corral containers`: a docker-like CLI over the machine's configured container driver.

Fleet-era units call `docker run/stop/kill/rm/pull`; corral maps those Exec lines here, so the
same unit runs on podman or plain runc. `run` execs the driver's foreground command, so the
container runtime client becomes the unit's main process and its exit status the unit's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from corral.containers.dockercompat import parse_run
from corral.containers.drivers import driver_for
from corral.containers.errors import ContainerError, DriverError
from corral.containers.images import list_images, normalize
from corral.containers.settings import load_settings

_PASS = {"ignore_unknown_options": True, "allow_extra_args": True}


def _root(ctx: click.Context) -> Path:
    return Path(ctx.obj["root"])


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@click.group()
@click.option(
    "--root", envvar="CORRAL_ROOT", default="/", show_default=True, help="the machine's root folder"
)
@click.pass_context
def cli(ctx: click.Context, root: str) -> None:
    """Run and manage containers with the machine's driver (docker-compatible verbs)."""
    ctx.obj = {"root": root}


@cli.command(context_settings=_PASS, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Run a container in the foreground (docker run syntax)."""
    root = _root(ctx)
    try:
        settings = load_settings(root)
        req = parse_run(args)
        if req.detach:
            _fail(
                "detached containers cannot be supervised; drop -d (the unit runs in the foreground)"
            )
        network = req.spec.network or settings.network
        if network not in settings.networks:
            _fail(
                f"network {network!r} is not allowed on this machine (allowed: {', '.join(settings.networks)})",
                125,
            )
        driver = driver_for(root, settings)
        argv = driver.run_argv(req.spec)
    except DriverError as exc:
        _fail(str(exc), exc.returncode)
        return
    except ContainerError as exc:
        _fail(str(exc), 125)
        return
    env = {**os.environ, **driver.env()}
    sys.stdout.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        _fail(f"{argv[0]}: {exc.strerror}", 127)


@cli.command()
@click.option("-t", "--time", "timeout", type=int, default=None, help="seconds before SIGKILL")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def stop(ctx: click.Context, timeout: int | None, names: tuple[str, ...]) -> None:
    """Stop containers (stop signal, then SIGKILL after the timeout) and remove them."""
    root = _root(ctx)
    settings = load_settings(root)
    driver = driver_for(root, settings)
    for n in names:
        driver.stop(n, settings.stop_timeout if timeout is None else timeout)
        click.echo(n)


@cli.command()
@click.option("-s", "--signal", "sig", default="KILL")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def kill(ctx: click.Context, sig: str, names: tuple[str, ...]) -> None:
    """Send a signal to running containers."""
    root = _root(ctx)
    driver = driver_for(root, load_settings(root))
    failed = False
    for n in names:
        st = driver.state(n)
        if st is None or st.status != "running":
            click.echo(
                f"Error response from daemon: Cannot kill container: {n}: No such container or not running",
                err=True,
            )
            failed = True
            continue
        try:
            driver.kill(n, sig)
            click.echo(n)
        except ContainerError as exc:
            click.echo(f"Error: {exc}", err=True)
            failed = True
    sys.exit(1 if failed else 0)


@cli.command()
@click.option("-f", "--force", is_flag=True)
@click.option("-v", "--volumes", is_flag=True)
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def rm(ctx: click.Context, force: bool, volumes: bool, names: tuple[str, ...]) -> None:
    """Remove containers."""
    root = _root(ctx)
    driver = driver_for(root, load_settings(root))
    failed = False
    for n in names:
        if driver.state(n) is None:
            click.echo(f"Error: No such container: {n}", err=True)
            failed = True
            continue
        driver.remove(n, force=force)
        click.echo(n)
    sys.exit(1 if failed else 0)


@cli.command()
@click.argument("image")
@click.pass_context
def pull(ctx: click.Context, image: str) -> None:
    """Make sure an image is present (there is no registry: imported images count)."""
    root = _root(ctx)
    settings = load_settings(root)
    names = {i.name for i in list_images(root, settings)}
    if normalize(image) in names:
        click.echo(f"Status: Image is up to date for {image}")
        return
    _fail(
        f"image {image!r} is not on this machine and there is no registry; use `corral images import`"
    )


@cli.command()
@click.option("-a", "--all", "show_all", is_flag=True)
@click.pass_context
def ps(ctx: click.Context, show_all: bool) -> None:
    """List containers."""
    root = _root(ctx)
    driver = driver_for(root, load_settings(root))
    click.echo(f"{'CONTAINER ID':<14}{'STATUS':<10}{'PID':<8}NAME")
    for c in driver.list():
        if show_all or c.status == "running":
            click.echo(f"{c.id[:12]:<14}{c.status:<10}{c.pid:<8}{c.name}")


@cli.command()
@click.argument("name")
@click.pass_context
def inspect(ctx: click.Context, name: str) -> None:
    """Show a container's state as JSON."""
    import json
    from dataclasses import asdict

    root = _root(ctx)
    st = driver_for(root, load_settings(root)).state(name)
    if st is None:
        _fail(f"no such container: {name}")
        return
    click.echo(json.dumps(asdict(st)))
