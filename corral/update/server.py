"""The update server (Nebraska-like): Omaha endpoint, package downloads, admin API, SQLite.

Theory of operation
-------------------
* Model: **apps** (id compared without braces/case) have **packages** (one per semver
  version: file, size, SHA-1 and SHA-256), **channels** (name → package version) and
  **groups** (id, the `track` clients send, a channel, a `GroupPolicy`). Every machine
  that checks in is an **instance** of a group; its state lives in the group's pure
  `policy.Rollout`, and every reported event and activity line is appended to history.
* `POST /v1/update/` takes one Omaha request. Bodies over 64 KiB get HTTP 400 with an empty
  body and malformed XML gets HTTP 200 with an empty body (both as Nebraska; the client
  reports error 30). Per `<app>`: events are recorded and acked (`<event status="ok">` for
  each, recorded or not), `<ping>` is acked, and `<updatecheck>` asks the group's rollout.
  A grant answers `ok` with the package; a hold or "up to date" answers `noupdate`.
* `GET /packages/<app>/<version>/<file>` serves payloads, with HTTP Range (resume).
* `/api/…` is the admin JSON API used by `corral updatecheck`; an optional bearer token
  guards it. The server stores and serves payloads but never holds a signing key.
* State is SQLite (format version in `PRAGMA user_version`; 2 added the `rollouts` table
  of failure counts and halts, and a version-1 database is upgraded in place), written
  through on every change; a restarted server resumes every rollout where it was.
* Health-gated rollouts: failure reports halt a version in a group (`policy.Halt`, see
  `policy`); `rollout_status` is what `GET /api/apps/<app>/groups/<id>/rollout` and
  `corral updatectl rollout status` show, `POST …/rollout/resume` lifts a halt, and a
  read-only copy without the event history is public at `GET /v1/rollout/<group>` so that
  `corral update status --rollout` works from any machine without the admin token.
* Time comes from an injectable clock, so tests can run the server on virtual time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from corral.update.errors import OmahaError, UpdateError, VersionError
from corral.update.omaha import (
    MAX_REQUEST_BYTES,
    Action,
    AppRequest,
    AppResponse,
    ErrorCode,
    EventResult,
    EventType,
    Manifest,
    Package,
    Response,
    UpdateCheckResponse,
    encode_response,
    normalize_app_id,
    parse_request,
)
from corral.update.payload import read_manifest
from corral.update.policy import (
    Decision,
    GroupPolicy,
    Halt,
    InstanceState,
    InstanceStatus,
    Rollout,
)
from corral.update.version import parse_version

__all__ = [
    "CORRAL_APP_ID",
    "SCHEMA_VERSION",
    "AdminError",
    "PackageInfo",
    "Store",
    "UpdateServer",
    "bootstrap",
    "make_app",
    "render_rollout",
]

CORRAL_APP_ID = "{3c1e8a52-7d0b-4f6a-9e2d-c0a11a1e0001}"
SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS packages (
  app TEXT, version TEXT, filename TEXT, size INTEGER, sha1 TEXT, sha256 TEXT, created REAL,
  PRIMARY KEY (app, version));
CREATE TABLE IF NOT EXISTS channels (app TEXT, name TEXT, version TEXT, PRIMARY KEY (app, name));
CREATE TABLE IF NOT EXISTS groups (
  app TEXT, id TEXT, track TEXT, channel TEXT, policy TEXT, halted INTEGER, halt_reason TEXT,
  PRIMARY KEY (app, id));
CREATE TABLE IF NOT EXISTS instances (
  app TEXT, grp TEXT, id TEXT, state TEXT, PRIMARY KEY (app, grp, id));
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL, app TEXT, grp TEXT, instance TEXT,
  version TEXT, type INTEGER, result INTEGER, error_code INTEGER, previous_version TEXT);
CREATE TABLE IF NOT EXISTS rollouts (
  app TEXT, grp TEXT, state TEXT, PRIMARY KEY (app, grp));
CREATE TABLE IF NOT EXISTS activity (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL, app TEXT, grp TEXT, instance TEXT,
  message TEXT);
"""


def _halt_doc(h: Halt) -> dict[str, Any]:
    doc = asdict(h)
    doc["reason"] = h.reason
    doc["code_name"] = _code_name(h.code)
    return doc


def _code_name(code: int | None) -> str:
    if code is None:
        return ""
    try:
        return ErrorCode(code).name
    except ValueError:
        return ""


class AdminError(UpdateError):
    """A bad admin API request; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _state_to_json(s: InstanceState) -> str:
    d = asdict(s)
    d["status"] = int(s.status)
    d["failed_versions"] = sorted(s.failed_versions)
    return json.dumps(d)


def _state_from_json(text: str) -> InstanceState:
    d = json.loads(text)
    d["status"] = InstanceStatus(d["status"])
    d["failed_versions"] = frozenset(d["failed_versions"])
    return InstanceState(**d)


@dataclass(frozen=True, slots=True)
class PackageInfo:
    app: str
    version: str
    filename: str
    size: int
    sha1: str
    sha256: str


class Store:
    """SQLite persistence plus the in-memory rollouts it feeds."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "packages").mkdir(exist_ok=True)
        self.db = sqlite3.connect(data_dir / "state.sqlite3", isolation_level=None)
        self.db.row_factory = sqlite3.Row
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, SCHEMA_VERSION):
            raise UpdateError(f"state database has schema {version}, expected {SCHEMA_VERSION}")
        # WAL with synchronous=NORMAL: a crash never corrupts the database; a power loss may
        # drop the last few events, which clients re-report on their next check anyway.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.rollouts: dict[tuple[str, str], Rollout] = {}
        for g in self.db.execute("SELECT * FROM groups").fetchall():
            self._load_rollout(g["app"], g["id"])

    # ------------------------------------------------------------------ model

    def _load_rollout(self, app: str, group: str) -> Rollout:
        g = self.db.execute("SELECT * FROM groups WHERE app=? AND id=?", (app, group)).fetchone()
        policy = GroupPolicy(**json.loads(g["policy"]))
        r = Rollout(policy, self.channel_version(app, g["channel"]))
        row = self.db.execute("SELECT state FROM rollouts WHERE app=? AND grp=?",
                              (app, group)).fetchone()
        if row is not None:
            doc = json.loads(row["state"])
            r.failures = {str(k): int(v) for k, v in doc["failures"].items()}
            r.halts = {h["version"]: Halt(**h) for h in doc["halts"]}
        elif g["halted"] and r.target is not None:
            # A schema-1 database kept only a flag: keep the rollout halted after the upgrade.
            r.halts[r.target] = Halt(r.target, "(recorded before the upgrade)", None, 0.0, 1)
        for row in self.db.execute("SELECT state FROM instances WHERE app=? AND grp=?",
                                   (app, group)):
            s = _state_from_json(row["state"])
            r.instances[s.id] = s
        self.rollouts[(app, group)] = r
        return r

    def add_app(self, app_id: str, name: str) -> str:
        app = normalize_app_id(app_id)
        if not app:
            raise AdminError("app id is empty")
        self.db.execute("INSERT OR REPLACE INTO apps VALUES (?, ?)", (app, name))
        return app

    def apps(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM apps ORDER BY id")]

    def require_app(self, app_id: str) -> str:
        app = normalize_app_id(app_id)
        if self.db.execute("SELECT 1 FROM apps WHERE id=?", (app,)).fetchone() is None:
            raise AdminError(f"unknown app {app_id!r}", 404)
        return app

    def add_package(self, app_id: str, version: str, filename: str, data: bytes,
                    now: float) -> PackageInfo:
        app = self.require_app(app_id)
        try:
            parse_version(version)
        except VersionError as exc:
            raise AdminError(str(exc)) from None
        if "/" in filename or filename in ("", ".", ".."):
            raise AdminError(f"bad file name {filename!r}")
        try:
            manifest = read_manifest(data)
        except UpdateError as exc:
            raise AdminError(f"not a corral release payload: {exc}") from None
        if manifest.version != version:
            raise AdminError(f"payload is version {manifest.version}, not {version}")
        directory = self.data_dir / "packages" / app / version
        directory.mkdir(parents=True, exist_ok=True)
        (directory / filename).write_bytes(data)
        info = PackageInfo(
            app, version, filename, len(data),
            base64.b64encode(hashlib.sha1(data).digest()).decode(),
            base64.b64encode(hashlib.sha256(data).digest()).decode(),
        )
        self.db.execute(
            "INSERT OR REPLACE INTO packages VALUES (?, ?, ?, ?, ?, ?, ?)",
            (app, version, filename, info.size, info.sha1, info.sha256, now),
        )
        return info

    def package(self, app: str, version: str) -> PackageInfo | None:
        r = self.db.execute("SELECT * FROM packages WHERE app=? AND version=?",
                            (app, version)).fetchone()
        if r is None:
            return None
        return PackageInfo(r["app"], r["version"], r["filename"], r["size"], r["sha1"],
                           r["sha256"])

    def packages(self, app_id: str) -> list[dict[str, Any]]:
        app = self.require_app(app_id)
        rows = [dict(r) for r in self.db.execute("SELECT * FROM packages WHERE app=?", (app,))]
        return sorted(rows, key=lambda r: parse_version(r["version"]))

    def channel_version(self, app: str, channel: str) -> str | None:
        r = self.db.execute("SELECT version FROM channels WHERE app=? AND name=?",
                            (app, channel)).fetchone()
        return None if r is None else str(r["version"])

    def set_channel(self, app_id: str, name: str, version: str) -> None:
        app = self.require_app(app_id)
        if self.package(app, version) is None:
            raise AdminError(f"no package {version} in app {app}", 404)
        self.db.execute("INSERT OR REPLACE INTO channels VALUES (?, ?, ?)", (app, name, version))
        for (a, g), rollout in self.rollouts.items():
            row = self.db.execute("SELECT channel FROM groups WHERE app=? AND id=?",
                                  (a, g)).fetchone()
            if a == app and row["channel"] == name:
                rollout.set_target(version)
                self._save_group(a, g)

    def channels(self, app_id: str) -> list[dict[str, Any]]:
        app = self.require_app(app_id)
        return [dict(r) for r in self.db.execute("SELECT * FROM channels WHERE app=?", (app,))]

    def set_group(self, app_id: str, group: str, channel: str, track: str | None,
                  policy: GroupPolicy) -> None:
        app = self.require_app(app_id)
        self.db.execute(
            "INSERT OR REPLACE INTO groups VALUES (?, ?, ?, ?, ?, ?, ?)",
            (app, group, track or group, channel, json.dumps(asdict(policy)), 0, ""),
        )
        existing = self.rollouts.get((app, group))
        rollout = self._load_rollout(app, group)
        if existing is not None:
            rollout.instances = existing.instances
            rollout.failures, rollout.halts = existing.failures, existing.halts
        self._save_group(app, group)

    def groups(self, app_id: str) -> list[dict[str, Any]]:
        app = self.require_app(app_id)
        out = []
        for r in self.db.execute("SELECT * FROM groups WHERE app=?", (app,)):
            d = dict(r)
            d["policy"] = json.loads(d["policy"])
            d["halted"] = bool(d["halted"])
            d["version"] = self.channel_version(app, d["channel"])
            out.append(d)
        return out

    def _save_group(self, app: str, group: str) -> None:
        r = self.rollouts[(app, group)]
        self.db.execute("UPDATE groups SET halted=?, halt_reason=? WHERE app=? AND id=?",
                        (int(r.halted), r.halt_reason, app, group))
        state = {"failures": r.failures, "halts": [asdict(h) for h in r.halts.values()]}
        self.db.execute("INSERT OR REPLACE INTO rollouts VALUES (?, ?, ?)",
                        (app, group, json.dumps(state)))

    def require_group(self, app_id: str, group: str) -> tuple[str, Rollout]:
        app = self.require_app(app_id)
        rollout = self.rollouts.get((app, group))
        if rollout is None:
            raise AdminError(f"unknown group {group!r}", 404)
        return app, rollout

    def resume(self, app_id: str, group: str, version: str | None, now: float) -> Halt | None:
        """An operator lifts a halted version (default: the group's target)."""
        app, rollout = self.require_group(app_id, group)
        if version is not None:
            try:
                parse_version(version)
            except VersionError as exc:
                raise AdminError(str(exc)) from None
        halt = rollout.resume(version)
        if halt is None:
            which = version or rollout.target or "(no version)"
            raise AdminError(f"{which} is not halted in group {group}", 409)
        self._save_group(app, group)
        self.log(now, app, group, "", f"rollout of {halt.version} resumed by an operator")
        return halt

    def rollout_status(self, app_id: str, group: str, now: float) -> dict[str, Any]:
        """The rollout as an operator sees it: per-machine versions, progress, halts."""
        app, rollout = self.require_group(app_id, group)
        instances = []
        versions: dict[str, int] = {}
        for s in sorted(rollout.instances.values(), key=lambda s: s.id):
            versions[s.version] = versions.get(s.version, 0) + 1
            instances.append({
                "id": s.id, "version": s.version, "status": s.status.name,
                "granted_version": s.granted_version, "last_check": s.last_check,
                "failed_versions": sorted(s.failed_versions),
                "in_progress": rollout.in_progress(s, now),
            })
        return {
            "app": app, "group": group, "target": rollout.target,
            "halted": rollout.halted, "halt_reason": rollout.halt_reason,
            "halt_after_failures": rollout.threshold,
            "halts": [_halt_doc(h) for h in sorted(rollout.halts.values(),
                                                    key=lambda h: h.at)],
            "failures": dict(sorted(rollout.failures.items())),
            "versions": dict(sorted(versions.items())),
            "updated": sum(1 for i in instances if i["version"] == rollout.target),
            "in_progress": [i["id"] for i in instances if i["in_progress"]],
            "instances": instances,
        }

    def resolve_group(self, app: str, track: str | None) -> str | None:
        track = track or ""
        r = self.db.execute(
            "SELECT id FROM groups WHERE app=? AND (track=? OR id=?) ORDER BY track=? DESC",
            (app, track, track, track),
        ).fetchone()
        return None if r is None else str(r["id"])

    def save_instance(self, app: str, group: str, state: InstanceState) -> None:
        self.db.execute("INSERT OR REPLACE INTO instances VALUES (?, ?, ?, ?)",
                        (app, group, state.id, _state_to_json(state)))

    def instances(self) -> list[dict[str, Any]]:
        out = []
        for (app, group), rollout in sorted(self.rollouts.items()):
            for s in rollout.instances.values():
                d = json.loads(_state_to_json(s))
                d["status_name"] = s.status.name
                d.update(app=app, group=group)
                out.append(d)
        return out

    def record_event(self, now: float, app: str, group: str, instance: str, version: str,
                     ev_type: int, result: int, code: int | None, prev: str | None) -> None:
        self.db.execute(
            "INSERT INTO events (ts, app, grp, instance, version, type, result, error_code,"
            " previous_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (now, app, group, instance, version, ev_type, result, code, prev),
        )

    def events(self, instance: str | None = None) -> list[dict[str, Any]]:
        if instance is None:
            rows = self.db.execute("SELECT * FROM events ORDER BY seq")
        else:
            rows = self.db.execute("SELECT * FROM events WHERE instance=? ORDER BY seq",
                                   (instance,))
        return [dict(r) for r in rows]

    def log(self, now: float, app: str, group: str, instance: str, message: str) -> None:
        self.db.execute(
            "INSERT INTO activity (ts, app, grp, instance, message) VALUES (?, ?, ?, ?, ?)",
            (now, app, group, instance, message),
        )

    def activity(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM activity ORDER BY seq")]

    def close(self) -> None:
        self.db.close()


class UpdateServer:
    """Omaha request handling over a `Store`; `clock` is injectable."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time,
                 base_url: str | None = None) -> None:
        self.store = store
        self.clock = clock
        self.base_url = base_url

    def handle(self, body: bytes, origin: str) -> bytes:
        """One Omaha exchange; raises `OmahaError` for unparsable requests."""
        request = parse_request(body)
        now = self.clock()
        apps = [self._app(a, now, origin) for a in request.apps]
        return encode_response(
            Response(apps=tuple(apps), server="corral",
                     daystart_elapsed_seconds=int(now % 86400))
        )

    def _app(self, app: AppRequest, now: float, origin: str) -> AppResponse:
        acks = tuple("ok" for _ in app.events)
        ping = "ok" if app.ping is not None else None
        store = self.store
        app_key = normalize_app_id(app.app_id)
        group = None
        if store.db.execute("SELECT 1 FROM apps WHERE id=?", (app_key,)).fetchone() is not None:
            group = store.resolve_group(app_key, app.track)
        if group is None:
            uc = UpdateCheckResponse("error-internal") if app.update_check is not None else None
            return AppResponse(app.app_id, "error-unknownApplicationOrGroup", ping, uc, acks)
        rollout = store.rollouts[(app_key, group)]
        iid = (app.machine_id or "").strip("{}")
        version = app.version or ""
        if iid and iid not in rollout.instances:
            rollout.instances[iid] = InstanceState(iid, version=version, last_check=now)
            store.log(now, app_key, group, iid, f"instance registered at {version}")
        for ev in app.events:
            store.record_event(now, app_key, group, iid, version, ev.event_type,
                               ev.event_result, ev.error_code, ev.previous_version)
            if not iid:
                continue
            before = rollout.instances[iid].status
            halts_before = set(rollout.halts)
            if (ev.event_type == EventType.UPDATE_COMPLETE
                    and ev.event_result == EventResult.SUCCESS_REBOOT):
                rollout.complete_on_reboot(iid, ev.previous_version or "", version)
            else:
                rollout.event(iid, ev, now)
            after = rollout.instances[iid].status
            if after != before:
                store.log(now, app_key, group, iid, f"{before.name} -> {after.name}")
            for v in set(rollout.halts) - halts_before:
                store.log(now, app_key, group, iid, f"rollout halted: {rollout.halts[v].reason}")
            if ev.event_result == EventResult.ERROR:
                store._save_group(app_key, group)
        uc_response = None
        if app.update_check is not None and iid:
            decision = rollout.check(iid, version, now)
            uc_response = self._answer(app_key, decision, origin)
            if not decision.grant or decision.reason == "granted":
                store.log(now, app_key, group, iid, f"check at {version}: {decision.reason}")
        elif app.update_check is not None:
            uc_response = UpdateCheckResponse("noupdate")
        if iid:
            store.save_instance(app_key, group, rollout.instances[iid])
        return AppResponse(app.app_id, "ok", ping, uc_response, acks)

    def _answer(self, app: str, decision: Decision, origin: str) -> UpdateCheckResponse:
        if not decision.grant or decision.version is None:
            return UpdateCheckResponse("noupdate")
        pkg = self.store.package(app, decision.version)
        if pkg is None:
            return UpdateCheckResponse("noupdate")
        base = (self.base_url or origin).rstrip("/")
        return UpdateCheckResponse(
            "ok",
            urls=(f"{base}/packages/{app}/{pkg.version}/",),
            manifest=Manifest(
                pkg.version,
                (Package(pkg.filename, pkg.size, pkg.sha1, "true", pkg.sha256),),
                (Action("postinstall", (("sha256", pkg.sha256),
                                        ("DisablePayloadBackoff", "true"))),),
            ),
        )


# --------------------------------------------------------------------------- HTTP


_POLICY_FIELDS = set(GroupPolicy.__dataclass_fields__)


def make_app(server: UpdateServer, admin_token: str | None = None,
             max_package_bytes: int = 1 << 30) -> web.Application:
    store = server.store

    @web.middleware
    async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
        if (request.path.startswith("/api/") and admin_token is not None
                and request.headers.get("Authorization") != f"Bearer {admin_token}"):
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except AdminError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        except (UpdateError, ValueError, TypeError, KeyError) as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)

    async def omaha(request: web.Request) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
            return web.Response(status=400)
        body = await request.content.read(MAX_REQUEST_BYTES + 1)
        if len(body) > MAX_REQUEST_BYTES:
            return web.Response(status=400)
        try:
            out = server.handle(body, str(request.url.origin()))
        except OmahaError:
            return web.Response(status=200, body=b"", content_type="text/xml")
        return web.Response(body=out, content_type="text/xml", charset="utf-8")

    async def download(request: web.Request) -> web.StreamResponse:
        app = normalize_app_id(request.match_info["app"])
        pkg = store.package(app, request.match_info["version"])
        if pkg is None or pkg.filename != request.match_info["name"]:
            raise web.HTTPNotFound()
        path = store.data_dir / "packages" / app / pkg.version / pkg.filename
        return web.FileResponse(path)

    async def body_json(request: web.Request) -> dict[str, Any]:
        try:
            doc = await request.json()
        except ValueError:
            raise AdminError("body is not JSON") from None
        if not isinstance(doc, dict):
            raise AdminError("body must be a JSON object")
        return doc

    async def get_apps(request: web.Request) -> web.Response:
        return web.json_response(store.apps())

    async def post_app(request: web.Request) -> web.Response:
        doc = await body_json(request)
        app = store.add_app(str(doc.get("id", "")), str(doc.get("name", "")))
        return web.json_response({"id": app}, status=201)

    async def put_package(request: web.Request) -> web.Response:
        data = await request.read()
        name = request.query.get("filename") or f"corral-{request.match_info['version']}.payload"
        info = store.add_package(request.match_info["app"], request.match_info["version"],
                                 name, data, server.clock())
        return web.json_response(asdict(info), status=201)

    async def get_packages(request: web.Request) -> web.Response:
        return web.json_response(store.packages(request.match_info["app"]))

    async def put_channel(request: web.Request) -> web.Response:
        doc = await body_json(request)
        store.set_channel(request.match_info["app"], request.match_info["name"],
                          str(doc.get("version", "")))
        return web.json_response({"ok": True})

    async def get_channels(request: web.Request) -> web.Response:
        return web.json_response(store.channels(request.match_info["app"]))

    async def put_group(request: web.Request) -> web.Response:
        doc = await body_json(request)
        unknown = set(doc) - _POLICY_FIELDS - {"channel", "track"}
        if unknown:
            raise AdminError(f"unknown group fields: {sorted(unknown)}")
        policy = GroupPolicy(**{k: v for k, v in doc.items() if k in _POLICY_FIELDS})
        store.set_group(request.match_info["app"], request.match_info["id"],
                        str(doc.get("channel", "stable")), doc.get("track"), policy)
        return web.json_response({"ok": True})

    async def get_groups(request: web.Request) -> web.Response:
        return web.json_response(store.groups(request.match_info["app"]))

    async def get_rollout(request: web.Request) -> web.Response:
        return web.json_response(store.rollout_status(
            request.match_info["app"], request.match_info["id"], server.clock()))

    async def public_rollout(request: web.Request) -> web.Response:
        app = request.query.get("app", CORRAL_APP_ID)
        return web.json_response(store.rollout_status(app, request.match_info["group"],
                                                      server.clock()))

    async def post_resume(request: web.Request) -> web.Response:
        doc = await body_json(request) if request.can_read_body else {}
        version = doc.get("version")
        if version is not None and not isinstance(version, str):
            raise AdminError("version must be a string")
        halt = store.resume(request.match_info["app"], request.match_info["id"], version,
                            server.clock())
        assert halt is not None
        return web.json_response({"resumed": halt.version, "was": _halt_doc(halt)})

    async def get_instances(request: web.Request) -> web.Response:
        return web.json_response(store.instances())

    async def get_events(request: web.Request) -> web.Response:
        return web.json_response(store.events(request.query.get("instance")))

    async def get_activity(request: web.Request) -> web.Response:
        return web.json_response(store.activity())

    app = web.Application(middlewares=[errors], client_max_size=max_package_bytes)
    app.add_routes([
        web.post("/v1/update/", omaha),
        web.post("/v1/update", omaha),
        web.get("/packages/{app}/{version}/{name}", download),
        web.get("/api/apps", get_apps),
        web.post("/api/apps", post_app),
        web.get("/api/apps/{app}/packages", get_packages),
        web.put("/api/apps/{app}/packages/{version}", put_package),
        web.get("/api/apps/{app}/channels", get_channels),
        web.put("/api/apps/{app}/channels/{name}", put_channel),
        web.get("/api/apps/{app}/groups", get_groups),
        web.put("/api/apps/{app}/groups/{id}", put_group),
        web.get("/api/apps/{app}/groups/{id}/rollout", get_rollout),
        web.post("/api/apps/{app}/groups/{id}/rollout/resume", post_resume),
        web.get("/v1/rollout/{group}", public_rollout),
        web.get("/api/instances", get_instances),
        web.get("/api/events", get_events),
        web.get("/api/activity", get_activity),
    ])
    return app


def bootstrap(store: Store, app_id: str = CORRAL_APP_ID, group: str = "stable",
              policy: GroupPolicy | None = None) -> None:
    """A fresh server's defaults: corral's app with a `stable` channel and group."""
    app = normalize_app_id(app_id)
    if store.db.execute("SELECT 1 FROM apps WHERE id=?", (app,)).fetchone() is None:
        store.add_app(app_id, "corral")
    if store.resolve_group(app, group) is None:
        store.set_group(app, group, group, group, policy or GroupPolicy())



def render_rollout(doc: dict[str, Any]) -> str:
    """`rollout_status` as text: the headline, any halts, then one line per machine."""
    lines = [f"group {doc['group']}: target {doc['target'] or '(none)'}; "
             f"{doc['updated']}/{len(doc['instances'])} machines updated; "
             f"in progress: {', '.join(doc['in_progress']) or 'none'}"]
    if doc["halted"]:
        lines.append(f"HALTED: {doc['halt_reason']}")
    for h in doc["halts"]:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(h["at"]))
        name = f" {h['code_name']}" if h["code_name"] else ""
        lines.append(f"halt {h['version']}: machine {h['instance']} code {h['code']}{name} "
                     f"at {when} ({h['failures']} failure(s)); "
                     f"resume: corral updatectl rollout resume --version {h['version']}")
    threshold = doc["halt_after_failures"] or "never"
    lines.append(f"failures per version: {doc['failures'] or '{}'}; halts after: {threshold}")
    lines.append("versions: " + (", ".join(f"{v} x{n}" for v, n in doc["versions"].items())
                                 or "(no machines)"))
    rows = [("MACHINE", "VERSION", "STATUS", "GRANTED", "FAILED ON")] + [
        (i["id"], i["version"], i["status"] + ("*" if i["in_progress"] else ""),
         i["granted_version"] or "-", ",".join(i["failed_versions"]) or "-")
        for i in doc["instances"]
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    return "\n".join(lines)
