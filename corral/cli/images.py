"""`corral images`: images without a registry (import a rootfs tarball, list, remove, build busybox)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from corral.containers.errors import ContainerError
from corral.containers.images import build_busybox_tar, import_image, list_images, remove_image
from corral.containers.settings import load_settings


@click.group()
@click.option(
    "--root", envvar="CORRAL_ROOT", default="/", show_default=True, help="the machine's root folder"
)
@click.pass_context
def cli(ctx: click.Context, root: str) -> None:
    """Manage the machine's container images."""
    ctx.obj = {"root": Path(root)}


@cli.command("import")
@click.argument("tarball", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("name")
@click.pass_context
def import_(ctx: click.Context, tarball: Path, name: str) -> None:
    """Import a rootfs TARBALL as image NAME."""
    root = ctx.obj["root"]
    try:
        click.echo(import_image(root, load_settings(root), tarball, name))
    except ContainerError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


@cli.command("list")
@click.pass_context
def list_(ctx: click.Context) -> None:
    """List images."""
    root = ctx.obj["root"]
    click.echo(f"{'NAME':<40}{'ID':<14}SIZE")
    for i in list_images(root, load_settings(root)):
        click.echo(f"{i.name:<40}{i.id:<14}{i.size}")


@cli.command()
@click.argument("name")
@click.pass_context
def rm(ctx: click.Context, name: str) -> None:
    """Remove image NAME."""
    root = ctx.obj["root"]
    try:
        remove_image(root, load_settings(root), name)
    except ContainerError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


@cli.command("build-busybox")
@click.option("--name", default="busybox", show_default=True)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write the tarball here instead of importing it",
)
@click.pass_context
def build_busybox(ctx: click.Context, name: str, output: Path | None) -> None:
    """Build a minimal busybox image from Debian's busybox-static and import it."""
    root = ctx.obj["root"]
    try:
        if output is not None:
            build_busybox_tar(output)
            click.echo(str(output))
            return
        with tempfile.TemporaryDirectory() as tmp:
            tar = build_busybox_tar(Path(tmp) / "busybox.tar")
            click.echo(import_image(root, load_settings(root), tar, name))
    except ContainerError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
