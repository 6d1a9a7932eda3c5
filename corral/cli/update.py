"""`corral update status|check|watch|reboot|reset`: update_engine_client for the local agent."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import click

from corral.update.agent import short_socket_path
from corral.update.server import CORRAL_APP_ID, render_rollout


async def _call(root: Path, method: str, path: str) -> dict[str, Any]:
    sock = root / "run/update-agent.sock"
    if not sock.exists():
        raise click.ClickException(f"no update agent is running under {root}")
    with short_socket_path(sock) as name:
        connector = aiohttp.UnixConnector(path=name)
        async with aiohttp.ClientSession(connector=connector) as session, session.request(
            method, f"http://agent{path}"
        ) as resp:
            doc: dict[str, Any] = await resp.json()
            if resp.status != 200:
                raise click.ClickException(str(doc.get("error", resp.status)))
            return doc


def _request(root: Path, method: str, path: str) -> dict[str, Any]:
    try:
        return asyncio.run(_call(root, method, path))
    except aiohttp.ClientError as exc:
        raise click.ClickException(f"cannot reach the update agent: {exc}") from None


root_option = click.option("--root", type=click.Path(path_type=Path), default=Path("/"),
                           show_default=True, help="The machine's root folder.")


@click.group()
def cli() -> None:
    """Talk to this machine's update agent (update_engine_client)."""


def _rollout(server: str, app_id: str, group: str) -> dict[str, Any]:
    """The group's rollout from the update server's public read-only endpoint."""
    base = server.rstrip("/")
    if base.endswith("/v1/update"):
        base = base[: -len("/v1/update")]
    url = (f"{base}/v1/rollout/{urllib.parse.quote(group, safe='')}?"
           + urllib.parse.urlencode({"app": app_id}))
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
            return doc
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise click.ClickException(f"rollout status: HTTP {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise click.ClickException(f"cannot reach the update server {base}: {exc}") from None


@cli.command()
@root_option
@click.option("--json", "as_json", is_flag=True, help="Print everything the agent reports.")
@click.option("--rollout", "with_rollout", is_flag=True,
              help="Also show the machine's group rollout, as the update server sees it.")
@click.option("--server", default=None,
              help="Update server URL for --rollout (default: the agent's). With it, the "
                   "rollout is shown even where no agent runs.")
@click.option("--group", default=None, help="Group for --rollout (default: the agent's).")
def status(root: Path, as_json: bool, with_rollout: bool, server: str | None,
           group: str | None) -> None:
    """Print LAST_CHECKED_TIME, PROGRESS, CURRENT_OP, NEW_VERSION, NEW_SIZE."""
    if with_rollout and server and not (root / "run/update-agent.sock").exists():
        alone = _rollout(server, CORRAL_APP_ID, group or "stable")
        click.echo(json.dumps(alone, indent=2) if as_json else render_rollout(alone))
        return
    doc = _request(root, "GET", "/status")
    rollout = (_rollout(server or doc["server"], doc["app_id"], group or doc["group"])
               if with_rollout else None)
    if as_json:
        if rollout is not None:
            doc["rollout"] = rollout
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"LAST_CHECKED_TIME={doc['LAST_CHECKED_TIME']}")
    click.echo(f"PROGRESS={doc['PROGRESS']:.6f}")
    click.echo(f"CURRENT_OP={doc['CURRENT_OP']}")
    click.echo(f"NEW_VERSION={doc['NEW_VERSION']}")
    click.echo(f"NEW_SIZE={doc['NEW_SIZE']}")
    if rollout is None:
        return
    click.echo(f"VERSION={doc['version']} SLOT={doc['slot']} GOOD={doc['slot_good']}")
    fallback = doc.get("last_fallback")
    if fallback:
        click.echo(f"LAST_FALLBACK={fallback['version']} -> {fallback['fell_back_to']} "
                   f"code {fallback['code']}: {fallback['detail']}")
    click.echo(render_rollout(rollout))


@cli.command()
@root_option
@click.option("--force", is_flag=True, help="Install even a version this machine fell back from.")
@click.option("--wait", "wait", type=float, default=0.0,
              help="Poll up to this many seconds until the agent is idle or needs a reboot.")
def check(root: Path, force: bool, wait: float) -> None:
    """Ask the agent to check for an update now (AttemptUpdate)."""
    before = _request(root, "GET", "/status")["LAST_CHECKED_TIME"]
    _request(root, "POST", "/check" + ("?force=1" if force else ""))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        doc = _request(root, "GET", "/status")
        if doc["CURRENT_OP"] == "UPDATE_STATUS_UPDATED_NEED_REBOOT":
            click.echo("Update succeeded -- reboot needed.")
            return
        if doc["CURRENT_OP"] == "UPDATE_STATUS_IDLE" and doc["LAST_CHECKED_TIME"] != before:
            click.echo("No update available." if not doc["last_error"] else doc["last_error"])
            return
        time.sleep(0.2)
    click.echo("check requested")


async def _watch(root: Path, count: int | None, as_json: bool) -> None:
    sock = root / "run/update-agent.sock"
    if not sock.exists():
        raise click.ClickException(f"no update agent is running under {root}")
    timeout = aiohttp.ClientTimeout(total=None)
    with short_socket_path(sock) as name:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=name),
                                         timeout=timeout) as session, session.get(
            "http://agent/watch"
        ) as resp:
            await _print_watch(resp, count, as_json)


async def _print_watch(resp: aiohttp.ClientResponse, count: int | None, as_json: bool) -> None:
    seen = 0
    async for line in resp.content:
        doc = json.loads(line)
        if as_json:
            click.echo(json.dumps(doc))
        else:
            click.echo(f"LAST_CHECKED_TIME={doc['LAST_CHECKED_TIME']} "
                       f"PROGRESS={doc['PROGRESS']:.6f} CURRENT_OP={doc['CURRENT_OP']} "
                       f"NEW_VERSION={doc['NEW_VERSION']} NEW_SIZE={doc['NEW_SIZE']}")
        seen += 1
        if count is not None and seen >= count:
            return


@cli.command()
@root_option
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Exit after this many status lines.")
@click.option("--json", "as_json", is_flag=True)
def watch(root: Path, count: int | None, as_json: bool) -> None:
    """Print the status now and at every change (-watch_for_updates)."""
    try:
        asyncio.run(_watch(root, count, as_json))
    except aiohttp.ClientError as exc:
        raise click.ClickException(f"cannot reach the update agent: {exc}") from None
    except KeyboardInterrupt:
        pass


@cli.command()
@root_option
def reboot(root: Path) -> None:
    """Restart the machine's services from the slot gptprio chooses."""
    _request(root, "POST", "/reboot")
    click.echo("rebooting")


@cli.command("reset")
@root_option
def reset(root: Path) -> None:
    """ResetStatus: leave UPDATED_NEED_REBOOT (the slot table is not touched)."""
    _request(root, "POST", "/reset")
    click.echo("status reset")
