"""`corral release`: make and check signed release payloads with an offline release key."""

from __future__ import annotations

import os
from pathlib import Path

import click

import corral
from corral.update.errors import UpdateError
from corral.update.payload import (
    build_payload,
    generate_key,
    key_id,
    load_private_key,
    load_public_keys,
    sign_payload,
    verify_payload,
)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None


@click.group()
def cli() -> None:
    """Build, sign and verify corral release payloads."""


@cli.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Directory for release.key (private, keep offline) and release.pub.")
def keygen(out_dir: Path) -> None:
    """Create an Ed25519 release key pair."""
    private, public = generate_key()
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path = out_dir / "release.key"
    if key_path.exists():
        raise click.ClickException(f"{key_path} exists; refusing to overwrite a release key")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    (out_dir / "release.pub").write_bytes(public)
    kid = key_id(load_public_keys([public])[0])
    click.echo(f"key {kid}: {key_path}, {out_dir / 'release.pub'}")


@cli.command()
@click.option("--version", "version", required=True, help="Semantic version of the release.")
@click.option("--source", type=click.Path(path_type=Path, file_okay=False, exists=True),
              default=None, help="Directory holding the corral package (default: this corral).")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True)
def build(version: str, source: Path | None, out: Path) -> None:
    """Package corral's source at VERSION into one (unsigned) payload file."""
    src = source if source is not None else Path(corral.__file__).resolve().parent.parent
    try:
        data = build_payload(src, version)
    except UpdateError as exc:
        raise click.ClickException(str(exc)) from None
    out.write_bytes(data)
    click.echo(f"{out}: corral {version}, {len(data)} bytes (unsigned)")


@cli.command()
@click.option("--key", "key_path", type=click.Path(path_type=Path), required=True)
@click.argument("payload", type=click.Path(path_type=Path))
def sign(key_path: Path, payload: Path) -> None:
    """Add a signature by the release key to PAYLOAD (in place)."""
    try:
        key = load_private_key(_read(key_path))
        signed = sign_payload(_read(payload), key)
    except UpdateError as exc:
        raise click.ClickException(str(exc)) from None
    payload.write_bytes(signed)
    click.echo(f"{payload}: signed by {key_id(key.public_key())}")


@cli.command()
@click.option("--trusted-key", "keys", type=click.Path(path_type=Path), multiple=True,
              help="A trusted release public key (repeatable).")
@click.argument("payload", type=click.Path(path_type=Path))
def verify(keys: tuple[Path, ...], payload: Path) -> None:
    """Check PAYLOAD against the trusted keys; exit 1 if it must not be installed."""
    try:
        manifest = verify_payload(_read(payload), load_public_keys(_read(k) for k in keys))
    except UpdateError as exc:
        raise click.ClickException(f"refused (code {exc.code}): {exc}") from None
    click.echo(f"{payload}: corral {manifest.version}, {len(manifest.files)} files, signature ok")
