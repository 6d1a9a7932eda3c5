"""`corral units`: systemctl/journalctl-style verbs against one machine's unit runner."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from corral.containers.units import describe_container
from corral.units.api import UnitsClient
from corral.units.config import Defaults
from corral.units.errors import UnitError, UnitNotFoundError
from corral.units.journal import Journal
from corral.units.names import UnitName
from corral.units.supervisor import Layout, format_timestamp
from corral.units.syntax import parse_timespan

_DOT = {"active": "●", "reloading": "●", "failed": "×", "activating": "●", "deactivating": "●"}


def _client(ctx: click.Context) -> UnitsClient:
    return UnitsClient(ctx.obj["root"])


def _fail(err: UnitError) -> None:
    click.echo(f"Failed: {err}", err=True)
    sys.exit(4 if isinstance(err, UnitNotFoundError) else 1)


def _name(name: str, file: bool = False) -> str:
    """`foo` means `foo.service`, as with systemctl; so does `foo.container` (unless a file)."""
    if "." not in name.rpartition("@")[2] and not name.endswith(".service"):
        name += ".service"
    if not file and name.endswith(".container"):
        name = name.removesuffix(".container") + ".service"
    try:
        UnitName.parse(name)
    except UnitError as err:
        raise click.BadParameter(str(err)) from None
    return name


@click.group()
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("CORRAL_ROOT", "/"),
    show_default="$CORRAL_ROOT or /",
    help="The machine's root folder (one runner per root).",
)
@click.pass_context
def cli(ctx: click.Context, root: Path) -> None:
    """Manage systemd units run by corral's supervisor (like systemctl)."""
    ctx.ensure_object(dict)
    ctx.obj["root"] = root


@cli.command()
@click.option("--hostname", default=None, help="Hostname this machine reports (%H).")
@click.option("--default-timeout", default="90s", help="DefaultTimeoutStartSec/StopSec.")
@click.option("--no-boot", is_flag=True, help="Do not start enabled units.")
@click.option(
    "--setenv",
    multiple=True,
    metavar="KEY=VALUE",
    help="DefaultEnvironment= entry given to every unit process (repeatable).",
)
@click.pass_context
def daemon(
    ctx: click.Context,
    hostname: str | None,
    default_timeout: str,
    no_boot: bool,
    setenv: tuple[str, ...],
) -> None:
    """Run this machine's unit runner in the foreground."""
    from corral.units.daemon import run_daemon

    try:
        timeout = parse_timespan(default_timeout)
    except UnitError as err:
        raise click.BadParameter(str(err)) from None
    env = []
    for item in setenv:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        env.append((key, value))
    defaults = Defaults(timeout_start=timeout, timeout_stop=timeout, environment=tuple(env))
    try:
        asyncio.run(run_daemon(ctx.obj["root"], hostname, defaults, boot=not no_boot))
    except UnitError as err:
        _fail(err)
    except OSError as err:
        click.echo(f"Failed: cannot use the machine root {ctx.obj['root']}: {err}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


def _job(verb: str) -> click.Command:
    @click.command(name=verb, help=f"{verb.capitalize()} units.")
    @click.argument("units", nargs=-1, required=True)
    @click.option("--no-block", is_flag=True, help="Do not wait for the job to finish.")
    @click.pass_context
    def command(ctx: click.Context, units: tuple[str, ...], no_block: bool) -> None:
        client = UnitsClient(ctx.obj["root"], timeout=None)  # jobs may take long, as in systemctl
        code = 0
        for unit in units:
            try:
                client.call(verb, unit=_name(unit), wait=not no_block)
            except UnitError as err:
                click.echo(str(err), err=True)
                code = 4 if isinstance(err, UnitNotFoundError) else 1
        sys.exit(code)

    return command


for _verb in ("start", "stop", "restart", "reload"):
    cli.add_command(_job(_verb))


@cli.command()
@click.argument("unit")
@click.argument("file", type=click.File("r"), required=False)
@click.option("--persistent", is_flag=True, help="Store under etc/ instead of run/.")
@click.pass_context
def load(ctx: click.Context, unit: str, file: Any, persistent: bool) -> None:
    """Load a unit file (from FILE or stdin) as runtime (default) or persistent."""
    try:
        text = (file or sys.stdin).read()
    except UnicodeDecodeError as err:
        raise click.BadParameter(f"unit file is not UTF-8 text: {err}") from None
    try:
        st = _client(ctx).call(
            "load", unit=_name(unit, file=True), text=text, runtime=not persistent
        )
    except UnitError as err:
        _fail(err)
        return
    if st["load_state"] != "loaded":
        click.echo(f"{st['name']}: {st['load_state']}: {st['load_error']}", err=True)
        sys.exit(1)
    for w in st["warnings"]:
        click.echo(f"warning: {w}", err=True)


@cli.command()
@click.argument("unit")
@click.pass_context
def unload(ctx: click.Context, unit: str) -> None:
    """Stop a unit and remove its unit file."""
    try:
        _client(ctx).call("unload", unit=_name(unit))
    except UnitError as err:
        _fail(err)


@cli.command("daemon-reload")
@click.pass_context
def daemon_reload(ctx: click.Context) -> None:
    """Re-read all unit files."""
    try:
        _client(ctx).call("daemon-reload")
    except UnitError as err:
        _fail(err)


@cli.command("reset-failed")
@click.argument("units", nargs=-1)
@click.pass_context
def reset_failed(ctx: click.Context, units: tuple[str, ...]) -> None:
    """Forget failed states (and start-limit counters)."""
    try:
        for unit in units or (None,):
            _client(ctx).call("reset-failed", unit=_name(unit) if unit else None)
    except UnitError as err:
        _fail(err)


@cli.command()
@click.argument("units", nargs=-1, required=True)
@click.option("--runtime", is_flag=True, help="Enable until the runner's state is wiped.")
@click.pass_context
def enable(ctx: click.Context, units: tuple[str, ...], runtime: bool) -> None:
    """Enable units (started when the machine boots) per their [Install] section."""
    for unit in units:
        try:
            targets = _client(ctx).call("enable", unit=_name(unit), runtime=runtime)
        except UnitError as err:
            _fail(err)
            return
        if not targets:
            click.echo(
                f"The unit {_name(unit)} has no installation config ([Install] "
                "WantedBy=/RequiredBy=); it is static and was not enabled.",
                err=True,
            )
        for t in targets:
            click.echo(f"Enabled {_name(unit)} (wanted by {t}).")


@cli.command()
@click.argument("units", nargs=-1, required=True)
@click.pass_context
def disable(ctx: click.Context, units: tuple[str, ...]) -> None:
    """Disable units."""
    for unit in units:
        try:
            _client(ctx).call("disable", unit=_name(unit))
        except UnitError as err:
            _fail(err)


def _ago(since: float | None) -> str:
    if since is None:
        return ""
    secs = max(0, int(time.time() - since))
    if secs < 60:
        return f"{secs}s ago"
    if secs < 3600:
        return f"{secs // 60}min {secs % 60}s ago"
    return f"{secs // 3600}h {secs % 3600 // 60}min ago"


def render_status(st: dict[str, Any]) -> str:
    active, sub = st["active_state"], st["sub_state"]
    lines = [f"{_DOT.get(active, '○')} {st['name']} - {st['description']}"]
    if st["load_state"] == "loaded":
        lines.append(
            f"     Loaded: loaded ({st['fragment_path']}; {st['file_state']}; "
            "vendor preset: disabled)"
        )
    else:
        lines.append(
            f"     Loaded: {st['load_state']}"
            + (f" (Reason: {st['load_error']})" if st["load_error"] else "")
        )
    state = f"{active} ({sub})"
    if active == "failed":
        state = f"failed (Result: {st['result']})"
    when = f" since {format_timestamp(st['since'])}; {_ago(st['since'])}" if st["since"] else ""
    lines.append(f"     Active: {state}{when}")
    if st["main_pid"]:
        comm = f" ({st['main_comm']})" if st["main_comm"] else ""
        lines.append(f"   Main PID: {st['main_pid']}{comm}")
    if st["dropin_paths"]:
        lines.insert(2, "    Drop-In: " + "\n             ".join(st["dropin_paths"]))
    if st["status_text"]:
        lines.append(f'     Status: "{st["status_text"]}"')
    if not st["main_pid"] and st["exec_main_code"]:
        lines.append(f"   Main PID: (code={st['exec_main_code']}, status={st['exec_main_status']})")
    if st.get("container_state"):
        lines.append(f"  Container: {st['container_state']}")
    if st.get("journal"):
        lines.append("")
        lines.extend(st["journal"])
    return "\n".join(lines)


@cli.command()
@click.argument("units", nargs=-1, required=True)
@click.option("-n", "--lines", default=10, show_default=True, help="Journal lines to show.")
@click.pass_context
def status(ctx: click.Context, units: tuple[str, ...], lines: int) -> None:
    """Show runtime status like `systemctl status` (exit 3 if not active)."""
    code = 0
    for i, unit in enumerate(units):
        try:
            st = _client(ctx).call("status", unit=_name(unit), lines=lines)
        except UnitError as err:
            _fail(err)
            return
        if st.get("container"):  # asked here, so a slow runtime never blocks the runner
            st["container_state"] = describe_container(Path(ctx.obj["root"]), st["container"])
        if i:
            click.echo()
        click.echo(render_status(st))
        if st["load_state"] == "not-found":
            code = 4
        elif st["active_state"] not in ("active", "reloading") and code == 0:
            code = 3
    sys.exit(code)


@cli.command("is-active")
@click.argument("units", nargs=-1, required=True)
@click.option("-q", "--quiet", is_flag=True)
@click.pass_context
def is_active(ctx: click.Context, units: tuple[str, ...], quiet: bool) -> None:
    """Print each unit's active state; exit 0 only if all are active."""
    code = 0
    for unit in units:
        try:
            st = _client(ctx).call("status", unit=_name(unit), lines=0)
        except UnitError as err:
            _fail(err)
            return
        if not quiet:
            click.echo(st["active_state"])
        if st["active_state"] not in ("active", "reloading"):
            code = 3
    sys.exit(code)


@cli.command()
@click.argument("unit")
@click.option("-p", "--property", "props", multiple=True, help="Only these properties.")
@click.pass_context
def show(ctx: click.Context, unit: str, props: tuple[str, ...]) -> None:
    """Print properties as Key=value lines (systemctl show style)."""
    try:
        st = _client(ctx).call("show", unit=_name(unit), lines=0)
    except UnitError as err:
        _fail(err)
        return
    values = {
        "Id": st["name"],
        "Description": st["description"],
        "LoadState": st["load_state"],
        "ActiveState": st["active_state"],
        "SubState": st["sub_state"],
        "UnitFileState": st["file_state"],
        "FragmentPath": st["fragment_path"],
        "MainPID": st["main_pid"] or 0,
        "Result": st["result"],
        "StatusText": st["status_text"],
        "NRestarts": st["restart_count"],
        "Type": st["service_type"],
        "Restart": st["restart"],
        "InvocationID": st["invocation_id"],
        "ExecMainCode": st["exec_main_code"],
        "ExecMainStatus": st["exec_main_status"],
        "DropInPaths": " ".join(st["dropin_paths"]),
    }
    for key, value in values.items():
        if not props or key in props:
            click.echo(f"{key}={value}")


@cli.command("list")
@click.argument("pattern", required=False)
@click.option("--all", "show_all", is_flag=True, help="Include inactive units.")
@click.pass_context
def list_units(ctx: click.Context, pattern: str | None, show_all: bool) -> None:
    """List units: UNIT LOAD ACTIVE SUB DESCRIPTION."""
    try:
        units = _client(ctx).call("list", pattern=pattern)
    except UnitError as err:
        _fail(err)
        return
    rows = [
        u
        for u in units
        if show_all or u["active_state"] != "inactive" or u["load_state"] != "loaded"
    ]
    width = max([len(u["name"]) for u in rows] + [4])
    click.echo(f"{'UNIT':<{width}} LOAD        ACTIVE     SUB          DESCRIPTION")
    for u in rows:
        click.echo(
            f"{u['name']:<{width}} {u['load_state']:<11} {u['active_state']:<10} "
            f"{u['sub_state']:<12} {u['description']}"
        )
    click.echo(f"\n{len(rows)} loaded units listed.")


@cli.command()
@click.argument("unit")
@click.pass_context
def cat(ctx: click.Context, unit: str) -> None:
    """Print a unit's file and drop-ins."""
    try:
        click.echo(_client(ctx).call("cat", unit=_name(unit)), nl=False)
    except UnitError as err:
        _fail(err)


@cli.command()
@click.argument("unit")
@click.option("-n", "--lines", type=int, default=None, help="Only the last N lines.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("--follow-for", type=float, default=None, hidden=True)
@click.pass_context
def journal(
    ctx: click.Context, unit: str, lines: int | None, follow: bool, follow_for: float | None
) -> None:
    """Print a unit's journal (reads the machine root directly)."""
    j = Journal(Layout(ctx.obj["root"]).journal, create=False)
    name = _name(unit)
    found = j.tail(name, lines if lines is not None else (10 if follow else None))
    for line in found:
        click.echo(line)
    if not found and not follow:
        click.echo("-- No entries --")
    if follow:
        try:
            for line in j.follow(name, stop_after=follow_for):
                click.echo(line)
        except KeyboardInterrupt:
            pass
