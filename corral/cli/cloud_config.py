"""`corral cloud-config`: check and preview #cloud-config files.

`validate FILE` prints coreos-cloudinit's report (`line N: kind: message`, one per line) and
exits 1 if there is any entry, as `coreos-cloudinit -validate` does; `render FILE` lists what
the config would write under a machine root.
"""

from __future__ import annotations

import gzip
import json
import sys

import click

from corral.cloudinit import CloudConfigError, ValidationFailed, parse, render, validate

__all__ = ["cli"]


def _read(path: str) -> bytes:
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from exc
    if data[:2] == b"\x1f\x8b":  # user data may arrive gzipped, as coreos-cloudinit accepted
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise click.ClickException(f"cannot decompress {path}: {exc}") from exc
    return data


@click.group()
def cli() -> None:
    """Validate and preview #cloud-config files."""


@cli.command("validate")
@click.argument("file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="print the report as a JSON list")
def validate_cmd(file: str, as_json: bool) -> None:
    """Validate FILE ('-' for stdin) as coreos-cloudinit v1.13.0 did; exit 1 on any entry."""
    data = _read(file)
    try:
        report = validate(data)
    except ValidationFailed as exc:
        click.echo(f"Failed while validating user_data ({json.dumps(str(exc))})", err=True)
        sys.exit(1)
    if as_json:
        click.echo(report.to_json())
    else:
        for entry in report.entries:
            click.echo(str(entry))
    sys.exit(1 if report.entries else 0)


@cli.command("render")
@click.argument("file", metavar="FILE")
@click.option("--machine-id", default="0" * 32, show_default=True, help="machine id to write")
def render_cmd(file: str, machine_id: str) -> None:
    """List the files FILE would write under a machine root (path, mode, size)."""
    try:
        files = render(parse(_read(file)), machine_id=machine_id)
    except CloudConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    for f in files:
        target = f" -> {f.link}" if f.link else f" ({len(f.content)} bytes)"
        click.echo(f"{f.mode:04o} {f.path}{target}")
