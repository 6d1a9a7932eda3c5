"""`corral fleet`: fleetctl's verbs, flags, table output, messages and exit codes.

It talks to the KV store directly (fleetctl's ``--driver=etcd``), so it works against a corral
cluster or a real etcd with no fleetd API in between, or to a fleetd's HTTP API
(``--driver api``, fleetctl's default; :mod:`corral.fleet.api_client`). ``--driver auto``
(the default) asks the first endpoint once: a fleetd (``Server: fleetd/…``) gets the API,
anything else the KV store. Output follows fleet reference §3 (the
tabwriter tables, ``-`` placeholders, machine legends, message texts), with these documented
differences: unknown commands/flags exit 2 (fleetctl exits 0), and three verbs beyond fleet:
``why UNIT``, ``move UNIT MACHINE``, and ``start`` explaining why a unit could not be placed
when it gives up after ``--block-attempts``. ``status`` prints the unit state its machine
and ``journal`` read the unit's machine through its fleetd's HTTP extension (there is no SSH
here; :mod:`corral.fleet.api`), falling back to the published state; ``ssh`` is not provided.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote

import aiohttp
import click

import corral
from corral.client import ClientError, Timeouts
from corral.client.aio import AsyncClient
from corral.fleet.api_client import ApiRegistry, is_fleet_api
from corral.fleet.ctl import (
    MACHINE_FIELDS,
    UNIT_FIELDS,
    UNIT_FILE_FIELDS,
    FieldError,
    machine_legend,
    machines_table,
    parse_fields,
    tabwrite,
    unit_files_table,
    units_table,
)
from corral.fleet.errors import FleetError, MoveRefused
from corral.fleet.registry import DEFAULT_PREFIX, JobState, RegistryUnit
from corral.fleet.scheduler import ActionKind, SchedUnit, plan_move, why
from corral.fleet.store import FleetStore, Registry, Snapshot
from corral.fleet.unitfile import UnitFile, UnitNameInfo, mangle_name, validate_name
from corral.fleet.xfleet import requirements, unrecognized_keys, validate_options

__all__ = ["cli"]

T = TypeVar("T")


class Ctx:
    def __init__(
        self,
        endpoint: str,
        prefix: str,
        timeout: float,
        poll: float,
        window: float,
        driver: str = "etcd",
    ) -> None:
        self.endpoints = [e.strip() for e in endpoint.split(",") if e.strip()]
        self.prefix = prefix
        self.timeout = timeout
        self.poll = poll  # block-attempt poll period (fleetctl: 250 ms)
        self.window = window  # one block attempt (fleetctl: 2 s)
        self.driver = driver

    async def store(self) -> FleetStore:
        """fleetd's API (``--driver api``, or ``auto`` and the endpoint answers as fleetd)
        or the KV store."""
        driver = self.driver
        if driver == "auto":
            first = self.endpoints[0] if self.endpoints else ""
            driver = "api" if first and await is_fleet_api(first, self.timeout) else "etcd"
        if driver == "api":
            return ApiRegistry(self.endpoints[0] if self.endpoints else "", self.timeout)
        return Registry(self.client(), self.prefix)

    def run(self, fn: Callable[[FleetStore], Awaitable[T]]) -> T:
        async def go() -> T:
            reg = await self.store()
            try:
                return await fn(reg)
            finally:
                await reg.close()

        try:
            return asyncio.run(go())
        except (FleetError, ClientError) as exc:
            _fail(f"Error: {exc}")

    def client(self) -> AsyncClient:
        return AsyncClient(self.endpoints, Timeouts(connect=self.timeout, request=self.timeout))


def _fail(msg: str, code: int = 1) -> NoReturn:
    click.echo(msg, err=True)
    sys.exit(code)


def _err(msg: str) -> None:
    click.echo(msg, err=True)


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--endpoint",
    envvar="FLEETCTL_ENDPOINT",
    default="http://127.0.0.1:2379,http://127.0.0.1:4001",
    show_default=True,
    help="KV endpoints (comma-separated), or fleetd's API URL",
)
@click.option(
    "--etcd-key-prefix",
    envvar="FLEETCTL_ETCD_KEY_PREFIX",
    default=DEFAULT_PREFIX,
    show_default=True,
)
@click.option(
    "--request-timeout",
    envvar="FLEETCTL_REQUEST_TIMEOUT",
    type=float,
    default=3.0,
    show_default=True,
)
@click.option(
    "--driver",
    envvar="FLEETCTL_DRIVER",
    type=click.Choice(["auto", "api", "etcd"]),
    default="auto",
    show_default=True,
    help="api: fleetd's HTTP API at --endpoint; etcd: the KV store; auto: whichever answers",
)
@click.option("--block-poll", type=float, default=0.25, hidden=True)
@click.option("--block-window", type=float, default=2.0, hidden=True)
@click.version_option(
    corral.__version__,
    "-v",
    "--version",
    message="fleetctl version %(version)s",
)
@click.pass_context
def cli(
    ctx: click.Context,
    endpoint: str,
    etcd_key_prefix: str,
    request_timeout: float,
    driver: str,
    block_poll: float,
    block_window: float,
) -> None:
    """fleet: manage units across the machines of the cluster."""
    ctx.obj = Ctx(endpoint, etcd_key_prefix, request_timeout, block_poll, block_window, driver)


@cli.command()
def version() -> None:
    """Print the version."""
    click.echo(f"fleetctl version {corral.__version__}")


@cli.command()
@click.argument("units", nargs=-1)
def verify(units: Sequence[str]) -> None:
    """Deprecated (signed units)."""
    _fail("WARNING: The signed/verified units feature is DEPRECATED and cannot be used.", 2)


# --- lists -----------------------------------------------------------------------------------


def _fields(spec: str, valid: Sequence[str]) -> list[str]:
    try:
        return parse_fields(spec, valid)
    except FieldError as exc:
        _fail(str(exc))


@cli.command("list-machines")
@click.option("-l", "--full", is_flag=True)
@click.option("--no-legend", is_flag=True)
@click.option("--fields", default="machine,ip,metadata")
@pass_ctx
def list_machines(c: Ctx, full: bool, no_legend: bool, fields: str) -> None:
    """List the machines that are alive."""
    f = _fields(fields, MACHINE_FIELDS)

    async def go(reg: FleetStore) -> str:
        return machines_table(await reg.machines(), f, full, not no_legend)

    try:
        out = asyncio.run(_with(c, go))
    except (FleetError, ClientError) as exc:
        _fail(
            f"Error retrieving list of active machines from fleet API ({exc})\n"
            "Make sure the KV store is reachable (--endpoint) and that fleet's key prefix\n"
            "(--etcd-key-prefix) matches the one fleetd uses. Check fleetd's logs for\n"
            "registration errors."
        )
    click.echo(out, nl=False)


async def _with(c: Ctx, fn: Callable[[FleetStore], Awaitable[T]]) -> T:
    reg = await c.store()
    try:
        return await fn(reg)
    finally:
        await reg.close()


@cli.command("list-units")
@click.option("-l", "--full", is_flag=True)
@click.option("--no-legend", is_flag=True)
@click.option("--fields", default="unit,machine,active,sub")
@pass_ctx
def list_units(c: Ctx, full: bool, no_legend: bool, fields: str) -> None:
    """List the state of units on the machines that run them."""
    f = _fields(fields, UNIT_FIELDS)

    async def go(reg: FleetStore) -> str:
        snap = await reg.snapshot()
        return units_table(snap.states, snap.machines, f, full, not no_legend)

    try:
        out = asyncio.run(_with(c, go))
    except (FleetError, ClientError) as exc:
        _fail(f"Error retrieving list of units from repository: {exc}")
    click.echo(out, nl=False)


@cli.command("list-unit-files")
@click.option("-l", "--full", is_flag=True)
@click.option("--no-legend", is_flag=True)
@click.option("--fields", default="unit,hash,dstate,state,target")
@pass_ctx
def list_unit_files(c: Ctx, full: bool, no_legend: bool, fields: str) -> None:
    """List the units fleet knows, their desired and current states."""
    f = _fields(fields, UNIT_FILE_FIELDS)
    if "tmachine" in f:
        _err('WARNING: The "tmachine" field is deprecated. Use "target" instead')

    async def go(reg: FleetStore) -> str:
        return unit_files_table(await reg.snapshot(), f, full, not no_legend)

    try:
        out = asyncio.run(_with(c, go))
    except (FleetError, ClientError) as exc:
        _fail(f"Error retrieving list of units from repository: {exc}")
    click.echo(out, nl=False)


# --- submit / load / start ----------------------------------------------------------------------


def _is_global(u: RegistryUnit) -> bool:
    return requirements(u.unit, u.name).is_global


def _path(arg: str, name: str) -> Path:
    """The local file for an argument: as given, or with the name fleetctl gave it."""
    p = Path(arg)
    return p if p.name == name else p.parent / name


async def _local_or_template(
    reg: FleetStore, arg: str, name: str, local_first: bool = False
) -> UnitFile:
    path = _path(arg, name)
    if path.is_file():
        return UnitFile.parse(path.read_bytes())
    info = UnitNameInfo.of(name)
    if info is not None and info.is_instance:
        tpath = path.with_name(info.template)
        if local_first and tpath.is_file():  # a rolling replace takes the new local template
            return UnitFile.parse(tpath.read_bytes())
        tmpl = await reg.unit(info.template)
        if tmpl is not None:
            return tmpl.unit
        tpath = path.with_name(info.template)
        if tpath.is_file():
            return UnitFile.parse(tpath.read_bytes())
        raise FleetError(
            f"failed getting Unit({name}) from template: unable to find template "
            f"Unit({info.template}) in Registry or on filesystem"
        )
    raise FleetError(f"unable to find Unit({name}) in Registry or on filesystem")


async def _create(
    reg: FleetStore,
    args: Sequence[str],
    replace: bool,
    allowed: set[JobState],
    local_first: bool = False,
) -> list[str]:
    """Submits what is missing; returns the names in argument order. Prints fleet's lines."""
    names: list[str] = []
    for arg in args:
        name = mangle_name(arg)
        validate_name(name)
        existing = await reg.unit(name)
        if existing is not None and not _path(arg, name).is_file() and not local_first:
            names.append(name)
            continue
        local = await _local_or_template(reg, arg, name, local_first)
        for key in unrecognized_keys(local):
            _err(f'Unit {name}: unrecognized requirement in [X-Fleet] section: "{key}"')
        validate_options(local)
        if existing is not None:
            if existing.unit.hash == local.hash:
                if replace:
                    _err(f"Found same Unit({name}) in Registry, nothing to do")
                names.append(name)
                continue
            if not replace:
                _err(
                    f"WARNING: Unit {name} in registry differs from local unit file {arg}. Add --replace to override."
                )
                names.append(name)
                continue
            if existing.target_state not in allowed:
                _err(
                    f"Warning: can not replace Unit({name}) in state '{existing.target_state}', use the appropriate command"
                )
                names.append(name)
                continue
        await reg.create_unit(name, local, JobState.INACTIVE)
        is_global = requirements(local, name).is_global
        click.echo(f"Unit {name} " if is_global else f"Unit {name} inactive")
        names.append(name)
    return names


async def _wait(
    c: Ctx,
    reg: FleetStore,
    names: Sequence[str],
    want: JobState,
    attempts: int,
    check_active: bool = False,
) -> list[str]:
    """Polls until every unit reports ``want``; returns the units that timed out."""
    pending = list(names)
    deadline = None if attempts <= 0 else time.monotonic() + attempts * c.window
    while pending:
        snap = await reg.snapshot()
        by_id = {m.id: m for m in snap.machines}
        for name in list(pending):
            u = next((x for x in snap.units if x.name == name), None)
            if u is None:
                continue
            if snap.current_state(u) is want:
                st = snap.states.get((name, u.target))
                if check_active and (st is None or st.active_state != "active"):
                    continue
                click.echo(f"Unit {name} {want.value} on {machine_legend(u.target, by_id, False)}")
                pending.remove(name)
        if not pending:
            return []
        if deadline is not None and time.monotonic() >= deadline:
            return pending
        await asyncio.sleep(c.poll)
    return []


def _explain(snap: Snapshot, name: str) -> list[str]:
    units = [SchedUnit.from_unit(u.name, u.unit, u.target_state, u.target) for u in snap.units]
    by_id = {m.id: m for m in snap.machines}
    if not snap.machines:
        return [f"Unit {name}: no machines are available"]
    lines = []
    for mid, fit in why(snap.machines, units, name).items():
        if not fit.ok:
            lines.append(
                f"Unit {name} cannot run on {machine_legend(mid, by_id, False)}: {fit.rule}: {fit.message}"
            )
    return lines


def _activate(
    c: Ctx, args: Sequence[str], want: JobState, attempts: int, no_block: bool, replace: bool
) -> None:
    verb = "load" if want is JobState.LOADED else "start"
    allowed = {JobState.INACTIVE, JobState.LOADED} if want is JobState.LOADED else set(JobState)

    async def go(reg: FleetStore) -> int:
        try:
            names = await _create(reg, args, replace, allowed)
        except FleetError as exc:
            _fail(f"Error creating units: {exc}")
        units, _ = await reg.units()
        wait: list[str] = []
        for name in names:
            u = next((x for x in units if x.name == name), None)
            if u is None:
                _fail(
                    f"Error {'loading' if verb == 'load' else 'starting'} units: unable to find unit {name}"
                )
            info = UnitNameInfo.of(name)
            if info is not None and info.is_template:
                _fail(
                    f'Error {"loading" if verb == "load" else "starting"} units: cannot activate template "{name}"'
                )
            if u.target_state is want:
                continue  # already there: nothing to do, nothing printed
            await reg.set_target_state(name, want)
            if _is_global(u):
                click.echo(f"Triggered global unit {name} {verb}")
            elif no_block:
                click.echo(f"Triggered unit {name} {verb}")
                if want is JobState.LAUNCHED:
                    click.echo(f"Triggered unit {name} {verb}")  # fleetctl prints it twice
            else:
                wait.append(name)
        left = await _wait(c, reg, wait, want, attempts, check_active=want is JobState.LAUNCHED)
        if left:
            snap = await reg.snapshot()
            for name in left:
                _err(
                    f"Error waiting for units: timed out waiting for unit {name} to report state {want.value}"
                )
                for line in _explain(snap, name):
                    _err(line)
            _err("Error waiting for unit states, exit status: 1")
            return 1
        return 0

    sys.exit(c.run(go))


def _block_opts(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--block-attempts", type=int, default=0, help="attempts (of 2 s) to wait; 0 = forever"
    )(f)
    f = click.option("--no-block", is_flag=True, help="do not wait for the units")(f)
    return f


@cli.command()
@click.option("--replace", is_flag=True)
@click.option("--sign", is_flag=True, hidden=True)
@click.argument("units", nargs=-1)
@pass_ctx
def submit(c: Ctx, replace: bool, sign: bool, units: Sequence[str]) -> None:
    """Upload unit files to the cluster without scheduling them."""
    if sign:
        _fail("WARNING: The signed/verified units feature is DEPRECATED and cannot be used.", 2)
    if not units:
        _fail("No units given", 0)

    async def go(reg: FleetStore) -> int:
        try:
            await _create(reg, units, replace, {JobState.INACTIVE})
        except FleetError as exc:
            _fail(f"Error creating units: {exc}")
        return 0

    sys.exit(c.run(go))


@cli.command()
@_block_opts
@click.option("--replace", is_flag=True)
@click.argument("units", nargs=-1)
@pass_ctx
def load(c: Ctx, block_attempts: int, no_block: bool, replace: bool, units: Sequence[str]) -> None:
    """Schedule units to machines and load them there, without starting them."""
    _activate(c, units, JobState.LOADED, block_attempts, no_block, replace)


@cli.command()
@_block_opts
@click.option("--replace", is_flag=True)
@click.option(
    "--rolling",
    is_flag=True,
    help="with --replace: one unit at a time, each active before the next; stop at a failure",
)
@click.argument("units", nargs=-1)
@pass_ctx
def start(
    c: Ctx, block_attempts: int, no_block: bool, replace: bool, rolling: bool, units: Sequence[str]
) -> None:
    """Schedule units and start them; explains why when a unit cannot be placed."""
    if rolling:
        if not replace or no_block:
            _fail("--rolling needs --replace and cannot be combined with --no-block", 2)
        _rolling(c, units, block_attempts)
    _activate(c, units, JobState.LAUNCHED, block_attempts, no_block, replace)


def _rolling(c: Ctx, args: Sequence[str], attempts: int) -> NoReturn:
    """Rolling ``--replace``: each unit (re)started with its new text and active before the
    next is touched; the first that fails or times out ends the roll (the rest keep running
    their old text)."""

    async def one(reg: FleetStore, arg: str) -> str | None:
        try:
            (name,) = await _create(reg, [arg], True, set(JobState), local_first=True)
        except FleetError as exc:
            return f"Error creating units: {exc}"
        u = await reg.unit(name)
        info = UnitNameInfo.of(name)
        if u is None or (info is not None and info.is_template):
            return f"Error starting units: unable to roll unit {name}"
        await reg.set_target_state(name, JobState.LAUNCHED)
        want = u.unit.hash_hex
        deadline = None if attempts <= 0 else time.monotonic() + attempts * c.window
        while True:
            snap = await reg.snapshot()
            cur = next((x for x in snap.units if x.name == name), None)
            if cur is None:
                return f"Error rolling units: unit {name} was destroyed"
            st = snap.states.get((name, cur.target))
            if st is not None and st.unit_hash == want:
                legend = machine_legend(cur.target, {m.id: m for m in snap.machines}, False)
                if st.active_state == "active":
                    click.echo(f"Unit {name} launched on {legend}")
                    return None
                if st.active_state == "failed":
                    return f"Error rolling units: unit {name} failed on {legend} ({st.sub_state})"
            if deadline is not None and time.monotonic() >= deadline:
                why_not = " ".join(_explain(snap, name))
                return f"Error rolling units: timed out waiting for unit {name} to be active" + (
                    f" ({why_not})" if why_not else ""
                )
            await asyncio.sleep(c.poll)

    async def go(reg: FleetStore) -> int:
        for i, arg in enumerate(args):
            err = await one(reg, arg)
            if err is not None:
                _err(err)
                rest = [mangle_name(a) for a in args[i + 1 :]]
                if rest:
                    _err(f"Rolling replace stopped; not touched: {' '.join(rest)}")
                return 1
        return 0

    sys.exit(c.run(go))


# --- stop / unload / destroy -----------------------------------------------------------------------


def _lower(c: Ctx, args: Sequence[str], want: JobState, attempts: int, no_block: bool) -> None:
    verb, past = ("stop", "stopped") if want is JobState.LOADED else ("unload", "unloaded")

    async def go(reg: FleetStore) -> int:
        snap = await reg.snapshot()
        found = [u for name in map(mangle_name, args) for u in snap.units if u.name == name]
        if not found:
            _fail("Units not found in registry", 0)
        wait = []
        for u in found:
            cur = snap.current_state(u)
            if want is JobState.LOADED and not _is_global(u):
                if cur is JobState.INACTIVE:
                    _fail(f"Unable to stop unit {u.name} in state inactive")
                if cur is JobState.LOADED and u.target_state is JobState.LOADED:
                    continue  # already loaded: skipped silently
            await reg.set_target_state(u.name, want)
            if _is_global(u):
                click.echo(f"Triggered global unit {u.name} {verb}")
            elif no_block:
                click.echo(f"Triggered unit {u.name} {verb}")
            else:
                wait.append(u.name)
        left = await _wait_lower(c, reg, wait, want, attempts)
        names = " ".join(u.name for u in found)
        if left:
            _err(f"Failed to {verb} units [{names}]. err: timed out waiting for units {left}")
            return 1
        _err(f"Successfully {past} units [{names}].")
        return 0

    sys.exit(c.run(go))


async def _wait_lower(
    c: Ctx, reg: FleetStore, names: list[str], want: JobState, attempts: int
) -> list[str]:
    pending = list(names)
    deadline = None if attempts <= 0 else time.monotonic() + attempts * c.window
    while pending:
        snap = await reg.snapshot()
        by_id = {m.id: m for m in snap.machines}
        for name in list(pending):
            u = next((x for x in snap.units if x.name == name), None)
            if u is None or snap.current_state(u) is want:
                if want is JobState.INACTIVE:
                    click.echo(f"Unit {name} inactive")
                else:
                    target = u.target if u is not None else ""
                    click.echo(f"Unit {name} loaded on {machine_legend(target, by_id, False)}")
                pending.remove(name)
        if not pending:
            break
        if deadline is not None and time.monotonic() >= deadline:
            return pending
        await asyncio.sleep(c.poll)
    return []


@cli.command()
@_block_opts
@click.argument("units", nargs=-1)
@pass_ctx
def stop(c: Ctx, block_attempts: int, no_block: bool, units: Sequence[str]) -> None:
    """Stop launched units (they stay loaded on their machine)."""
    _lower(c, units, JobState.LOADED, block_attempts, no_block)


@cli.command()
@_block_opts
@click.argument("units", nargs=-1)
@pass_ctx
def unload(c: Ctx, block_attempts: int, no_block: bool, units: Sequence[str]) -> None:
    """Unload units from their machines (they stay known to fleet)."""
    _lower(c, units, JobState.INACTIVE, block_attempts, no_block)


@cli.command()
@_block_opts
@click.argument("units", nargs=-1)
@pass_ctx
def destroy(c: Ctx, block_attempts: int, no_block: bool, units: Sequence[str]) -> None:
    """Remove units from the cluster (their machines stop and unload them)."""

    async def go(reg: FleetStore) -> int:
        known = {u.name for u in (await reg.units())[0]}
        names = [n for n in map(mangle_name, units) if n in known]
        if not names:
            _fail("Units not found in registry", 0)
        code = 0
        for name in names:
            try:
                await reg.destroy_unit(name)
            except FleetError as exc:
                _err(f"Error destroying units: {exc}")
                code = 1
                continue
            click.echo(f"Destroyed {name}")
        return code

    sys.exit(c.run(go))


# --- inspection --------------------------------------------------------------------------------------


@cli.command()
@click.argument("units", nargs=-1)
@pass_ctx
def cat(c: Ctx, units: Sequence[str]) -> None:
    """Print a unit's canonical text."""
    if len(units) != 1:
        _fail("One unit file must be provided")
    name = mangle_name(units[0])
    u = c.run(lambda reg: reg.unit(name))
    if u is None:
        _fail(f"Unit {name} not found")
    click.echo(u.unit.text, nl=False)


async def _remote(url: str, path: str, request_timeout: float) -> dict[str, Any]:
    """GET one of fleetd's extension resources; a clear FleetError when it cannot."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=request_timeout)) as sess,
            sess.get(url.rstrip("/") + path) as resp,
        ):
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise FleetError(f"cannot reach fleetd at {url}: {exc or type(exc).__name__}") from None
    if not isinstance(body, dict):
        raise FleetError(f"fleetd at {url} sent a malformed answer")
    if "error" in body:
        err = body["error"]
        raise FleetError(str(err.get("message", err)) if isinstance(err, dict) else str(err))
    return body


def _since(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return ""
    return " since " + time.strftime("%a %Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


@cli.command()
@click.argument("units", nargs=-1, required=True)
@pass_ctx
def status(c: Ctx, units: Sequence[str]) -> None:
    """systemctl-style status from the unit's machine (through its fleetd's HTTP API).

    Machines that serve no API (or run no processes) show the state they published.
    """

    async def go(reg: FleetStore) -> tuple[Snapshot, dict[str, str]]:
        return await reg.snapshot(), await reg.api_endpoints()

    snap, apis = c.run(go)
    by_id = {m.id: m for m in snap.machines}
    code = 0
    for i, arg in enumerate(units):
        name = mangle_name(arg)
        u = next((x for x in snap.units if x.name == name), None)
        if u is None:
            _fail(f"Unit {name} does not exist.")
        states = {mid: s for (n, mid), s in snap.states.items() if n == name}
        if not states:
            _fail(f"Unit {name} does not appear to be loaded.")
        if i:
            click.echo("")
        for mid, s in sorted(states.items()):
            desc = u.unit.description
            legend = machine_legend(mid, by_id, True)
            remote: dict[str, Any] | None = None
            if mid in apis:
                path = f"/x-corral/v1/units/{quote(name)}/status?lines=10"
                try:
                    remote = asyncio.run(_remote(apis[mid], path, c.timeout))
                except FleetError as exc:
                    _err(f"{exc}; showing the state {mid} published")
            click.echo(f"● {name}" + (f" - {desc}" if desc else ""))
            if remote is None:
                click.echo(f"   Loaded: {s.load_state}")
                click.echo(f"   Active: {s.active_state} ({s.sub_state})")
                click.echo(f"  Machine: {legend}")
                click.echo(f"     Hash: {s.unit_hash}")
                if s.active_state != "active":
                    code = 3
                continue
            frag = remote.get("fragment_path") or ""
            click.echo(
                f"   Loaded: {remote.get('load_state')}"
                + (f" ({frag}; {remote.get('file_state', '')})" if frag else "")
            )
            click.echo(
                f"   Active: {remote.get('active_state')} ({remote.get('sub_state')})"
                + _since(remote.get("since"))
            )
            if remote.get("main_pid"):
                comm = remote.get("main_comm") or ""
                click.echo(f" Main PID: {remote['main_pid']}" + (f" ({comm})" if comm else ""))
            click.echo(f"  Machine: {legend}")
            lines = remote.get("journal") or []
            if lines:
                click.echo("")
                for line in lines:
                    click.echo(str(line))
            if remote.get("active_state") != "active":
                code = 3
    sys.exit(code)


@cli.command()
@click.option("--lines", "-n", type=click.IntRange(min=0), default=10, show_default=True)
@click.argument("unit_name")
@pass_ctx
def journal(c: Ctx, lines: int, unit_name: str) -> None:
    """Print the last journal lines of UNIT from the machine it runs on."""
    name = mangle_name(unit_name)

    async def go(reg: FleetStore) -> list[str]:
        snap = await reg.snapshot()
        u = next((x for x in snap.units if x.name == name), None)
        if u is None:
            _fail(f"Unit {name} does not exist.")
        if _is_global(u):
            _fail(f"Unable to retrieve journal of global unit {name}.")
        mid = u.target
        if not mid or (name, mid) not in snap.states:
            _fail(f"Unit {name} does not appear to be running.")
        apis = await reg.api_endpoints()
        if mid not in apis:
            _fail(f"Machine {mid} serves no fleet API (start its fleetd with --api-listen).")
        path = f"/x-corral/v1/units/{quote(name)}/journal?lines={lines}"
        body = await _remote(apis[mid], path, c.timeout)
        return [str(x) for x in body.get("lines") or []]

    for line in c.run(go):
        click.echo(line)


@cli.command("why")
@click.option("-l", "--full", is_flag=True)
@click.argument("unit_name")
@pass_ctx
def why_cmd(c: Ctx, full: bool, unit_name: str) -> None:
    """Per machine, the first placement rule that keeps UNIT off it."""
    name = mangle_name(unit_name)
    snap = c.run(lambda reg: reg.snapshot())
    units = [SchedUnit.from_unit(u.name, u.unit, u.target_state, u.target) for u in snap.units]
    try:
        fits = why(snap.machines, units, name)
    except KeyError:
        _fail(f"Unit {name} not found")
    by_id = {m.id: m for m in snap.machines}
    target = next(u.target for u in units if u.name == name)
    rows = [["MACHINE", "RESULT", "REASON"]]
    for mid, fit in fits.items():
        if fit.ok:
            result = "scheduled here" if mid == target else ("ok (replaces)" if fit.rule else "ok")
            rows.append([machine_legend(mid, by_id, full), result, fit.message or "-"])
        else:
            rows.append([machine_legend(mid, by_id, full), str(fit.rule), fit.message])
    if not fits:
        _fail("No machines are available")
    click.echo(tabwrite(rows), nl=False)


@cli.command()
@click.argument("unit_name")
@click.argument("machine")
@pass_ctx
def move(c: Ctx, unit_name: str, machine: str) -> None:
    """Move UNIT to MACHINE (ID or unique prefix) if every placement rule holds there."""
    name = mangle_name(unit_name)

    async def go(reg: FleetStore) -> str:
        snap = await reg.snapshot()
        units = [SchedUnit.from_unit(u.name, u.unit, u.target_state, u.target) for u in snap.units]
        actions = plan_move(snap.machines, units, name, machine)
        for a in actions:
            if a.kind is ActionKind.UNSCHEDULE:
                await reg.unschedule_unit(a.unit, a.machine)
            elif not await reg.schedule_unit(a.unit, a.machine):
                raise MoveRefused(f"Unit {name} was scheduled concurrently; try again")
        dest = actions[-1].machine if actions else next(u.target for u in units if u.name == name)
        return (
            f"Unit {name} moved to {machine_legend(dest, {m.id: m for m in snap.machines}, False)}"
        )

    click.echo(c.run(go))


def main() -> None:  # pragma: no cover - console entry for debugging
    cli(prog_name=os.path.basename(sys.argv[0]))
