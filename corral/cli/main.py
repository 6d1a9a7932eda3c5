"""Entry point of the `corral` command: a click group that finds its subcommands lazily."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import click

import corral
import corral.cli

_NOT_COMMANDS = {"main"}


def _command_modules() -> dict[str, str]:
    """Subcommand name → module name, read from the package without importing it."""
    names: dict[str, str] = {}
    for info in pkgutil.iter_modules(corral.cli.__path__):
        if info.name.startswith("_") or info.name in _NOT_COMMANDS:
            continue
        names[info.name.replace("_", "-")] = f"corral.cli.{info.name}"
    return names


class LazyGroup(click.Group):
    """A group whose subcommands are the modules of `corral.cli`, imported on use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_command_modules()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        module_name = _command_modules().get(cmd_name)
        if module_name is None:
            return None
        module = importlib.import_module(module_name)
        command: Any = module.cli
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}.cli is not a click command")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(corral.__version__, prog_name="corral")
def cli() -> None:
    """corral: an etcd-compatible KV store, units, containers, fleet and atomic updates."""


def main() -> None:
    cli(prog_name="corral")
