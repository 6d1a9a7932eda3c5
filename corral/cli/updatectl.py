"""`corral updatectl`: the update server's admin API from the shell (updateservicectl-like)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import click

from corral.update.errors import UpdateError
from corral.update.payload import read_manifest
from corral.update.server import CORRAL_APP_ID, render_rollout


class _Api:
    def __init__(self, server: str, token: str | None) -> None:
        self.server = server.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Content-Type",
                       "application/octet-stream" if raw is not None else "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            raise click.ClickException(f"{method} {path}: HTTP {exc.code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise click.ClickException(f"cannot reach {self.server}: {exc}") from None


def _app_path(app: str) -> str:
    return "/api/apps/" + urllib.parse.quote(app.strip("{}"), safe="")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = [max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        click.echo("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths,
                                                                      strict=True)))


@click.group()
@click.option("--server", envvar="CORRAL_UPDATECTL_SERVER", default="http://127.0.0.1:8000",
              show_default=True, help="Update server base URL.")
@click.option("--token", envvar="CORRAL_UPDATE_ADMIN_TOKEN", default=None)
@click.pass_context
def cli(ctx: click.Context, server: str, token: str | None) -> None:
    """Manage apps, packages, channels, groups; inspect instances and events."""
    ctx.obj = _Api(server, token)


app_option = click.option("--app", default=CORRAL_APP_ID, show_default=True)


@cli.group()
def app() -> None:
    """Applications."""


@app.command("list")
@click.pass_obj
def app_list(api: _Api) -> None:
    _table(api.call("GET", "/api/apps"), ["id", "name"])


@app.command("create")
@click.argument("app_id")
@click.option("--name", default="")
@click.pass_obj
def app_create(api: _Api, app_id: str, name: str) -> None:
    click.echo(api.call("POST", "/api/apps", {"id": app_id, "name": name})["id"])


@cli.group()
def package() -> None:
    """Release payloads stored on the server."""


@package.command("list")
@app_option
@click.pass_obj
def package_list(api: _Api, app: str) -> None:
    _table(api.call("GET", _app_path(app) + "/packages"), ["version", "filename", "size",
                                                          "sha256"])


@package.command("upload")
@app_option
@click.option("--version", default=None, help="Default: the version in the payload.")
@click.argument("payload", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.pass_obj
def package_upload(api: _Api, app: str, version: str | None, payload: Path) -> None:
    data = payload.read_bytes()
    if version is None:
        try:
            version = read_manifest(data).version
        except UpdateError as exc:
            raise click.ClickException(f"{payload}: {exc}") from None
    q = urllib.parse.urlencode({"filename": payload.name})
    info = api.call("PUT", f"{_app_path(app)}/packages/{version}?{q}", raw=data)
    click.echo(f"{info['version']} {info['filename']} {info['size']} sha256={info['sha256']}")


@cli.group()
def channel() -> None:
    """Channels: name → package version."""


@channel.command("list")
@app_option
@click.pass_obj
def channel_list(api: _Api, app: str) -> None:
    _table(api.call("GET", _app_path(app) + "/channels"), ["name", "version"])


@channel.command("set")
@app_option
@click.argument("name")
@click.argument("version")
@click.pass_obj
def channel_set(api: _Api, app: str, name: str, version: str) -> None:
    api.call("PUT", f"{_app_path(app)}/channels/{name}", {"version": version})
    click.echo(f"{name} -> {version}")


@cli.group()
def group() -> None:
    """Groups and their rollout policy."""


@group.command("list")
@app_option
@click.pass_obj
def group_list(api: _Api, app: str) -> None:
    rows = api.call("GET", _app_path(app) + "/groups")
    for r in rows:
        r.update(r.pop("policy"))
    _table(rows, ["id", "track", "channel", "version", "updates_enabled", "safe_mode",
                  "max_updates_per_period", "period_seconds", "halt_after_failures",
                  "halted"])


@group.command("set")
@app_option
@click.argument("group_id")
@click.option("--channel", default="stable", show_default=True)
@click.option("--track", default=None)
@click.option("--enabled/--disabled", "updates_enabled", default=True)
@click.option("--safe-mode/--no-safe-mode", default=False)
@click.option("--office-hours/--no-office-hours", default=False)
@click.option("--timezone", default="UTC", show_default=True)
@click.option("--period", "period_seconds", type=float, default=60.0, show_default=True)
@click.option("--max-updates", "max_updates_per_period", type=int, default=999999,
              show_default=True)
@click.option("--update-timeout", "update_timeout_seconds", type=float, default=3600.0,
              show_default=True)
@click.option("--halt-after-failures", "halt_after_failures", type=click.IntRange(min=0),
              default=1, show_default=True,
              help="Failures of a version that halt its rollout (0: never; safe mode: 1).")
@click.pass_obj
def group_set(api: _Api, app: str, group_id: str, **fields: Any) -> None:
    api.call("PUT", f"{_app_path(app)}/groups/{group_id}", fields)
    click.echo(f"group {group_id} updated")


@cli.group()
def instance() -> None:
    """Machines that checked in."""


@instance.command("list")
@click.pass_obj
def instance_list(api: _Api) -> None:
    _table(api.call("GET", "/api/instances"), ["id", "group", "version", "status_name",
                                               "granted_version", "failed_versions"])


@cli.command()
@click.option("--instance", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def events(api: _Api, instance: str | None, as_json: bool) -> None:
    """Every event instances reported, oldest first."""
    q = "?" + urllib.parse.urlencode({"instance": instance}) if instance else ""
    rows = api.call("GET", "/api/events" + q)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    _table(rows, ["seq", "instance", "version", "type", "result", "error_code",
                  "previous_version"])


@cli.command()
@click.pass_obj
def activity(api: _Api) -> None:
    """The server's activity log."""
    _table(api.call("GET", "/api/activity"), ["seq", "grp", "instance", "message"])


@cli.group()
def rollout() -> None:
    """A group's rollout: versions per machine, progress, halts; resume a halted version."""


group_option = click.option("--group", "group_id", default="stable", show_default=True)


@rollout.command("status")
@app_option
@group_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def rollout_status(api: _Api, app: str, group_id: str, as_json: bool) -> None:
    """Versions per machine, updates in progress, halts and why."""
    doc = api.call("GET", f"{_app_path(app)}/groups/{urllib.parse.quote(group_id)}/rollout")
    click.echo(json.dumps(doc, indent=1) if as_json else render_rollout(doc))


@rollout.command("resume")
@app_option
@group_option
@click.option("--version", default=None, help="Default: the version the group's channel is at.")
@click.pass_obj
def rollout_resume(api: _Api, app: str, group_id: str, version: str | None) -> None:
    """Lift a halted version: the group's machines may be offered it again."""
    body = {} if version is None else {"version": version}
    out = api.call("POST", f"{_app_path(app)}/groups/{urllib.parse.quote(group_id)}"
                   "/rollout/resume", body)
    click.echo(f"rollout of {out['resumed']} resumed (was: {out['was']['reason']})")
