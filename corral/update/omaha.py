"""Omaha v3 codec, as update_engine and Nebraska speak it. Pure: bytes in, values out.

Theory of operation
-------------------
One HTTP POST carries one `<request>`; the answer is one `<response>`. Both are parsed into
frozen dataclasses and written back out by `encode_request` / `encode_response`.

Rules this module implements (references are to the project's update reference, §1):

1. *Hostile input is refused before it is parsed.* Bodies larger than a limit (64 KiB for
   requests, Nebraska's cap; 1 MiB for responses, go-omaha's client cap) raise
   `XmlParseError`; parsing goes through defusedxml with DTDs forbidden, so entity
   expansion ("billion laughs") and external entities never run.
2. *Unknown elements and attributes are tolerated* (spec, "Clients and servers MUST
   tolerate"); only what corral uses is read, and `protocol` must be exactly `3.0`.
3. *update_engine's quirks are first-class*: one `<app>` may carry `<ping>`,
   `<updatecheck>` and `<event>` together (§1.1); requests are written byte-for-byte in
   update_engine's format (`GetRequestXml`, 4/8-space indent, explicit close tags, the
   space in `delta_okay="false" >`), responses in Nebraska's shape.
4. *App ids compare without braces and case* (`normalize_app_id`), as Nebraska does.
5. *Error codes carry flags* (bit 28 custom server, 29 dev image, 30 resumed download);
   `mask_error_code` strips them before interpretation (§1.5).
6. *The client trusts little of a response* (§1.4): `interpret_update_check` applies
   update_engine's acceptance rules in order and returns either `NoUpdate` or an
   `UpdateOffer`, raising the error whose code update_engine would report (30, 31, 34).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from corral.update.errors import EmptyResponseError, ResponseInvalidError, XmlParseError

__all__ = [
    "COREOS_APP_ID",
    "ERROR_CODE_MASK",
    "MAX_REQUEST_BYTES",
    "MAX_RESPONSE_BYTES",
    "PROTOCOL",
    "UPDATER_VERSION",
    "Action",
    "AppRequest",
    "AppResponse",
    "ErrorCode",
    "Event",
    "EventResult",
    "EventType",
    "Manifest",
    "NoUpdate",
    "Os",
    "Package",
    "Ping",
    "Request",
    "Response",
    "UpdateCheck",
    "UpdateCheckResponse",
    "UpdateOffer",
    "encode_request",
    "encode_response",
    "interpret_update_check",
    "mask_error_code",
    "normalize_app_id",
    "parse_request",
    "parse_response",
]

PROTOCOL = "3.0"
UPDATER_VERSION = "update_engine-0.4.10"
COREOS_APP_ID = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}"
MAX_REQUEST_BYTES = 64 * 1024
MAX_RESPONSE_BYTES = 1024 * 1024
ERROR_CODE_MASK = 0x0FFFFFFF


class EventType(enum.IntEnum):
    UNKNOWN = 0
    DOWNLOAD_COMPLETE = 1
    INSTALL_COMPLETE = 2
    UPDATE_COMPLETE = 3
    UPDATE_DOWNLOAD_STARTED = 13
    UPDATE_DOWNLOAD_FINISHED = 14
    UPDATE_INSTALLED = 800


class EventResult(enum.IntEnum):
    ERROR = 0
    SUCCESS = 1
    SUCCESS_REBOOT = 2
    UPDATE_DEFERRED = 9


class ErrorCode(enum.IntEnum):
    """update_engine's `ActionExitCode` values that corral reports or interprets."""

    SUCCESS = 0
    ERROR = 1
    OMAHA_REQUEST_ERROR = 2
    DOWNLOAD_TRANSFER_ERROR = 9
    PAYLOAD_HASH_MISMATCH = 10
    PAYLOAD_SIZE_MISMATCH = 11
    DOWNLOAD_PAYLOAD_VERIFICATION = 12
    NEW_PARTITION_INFO = 13
    DOWNLOAD_WRITE = 14
    SIGNED_PAYLOAD_EXPECTED = 17
    PAYLOAD_PUBKEY_VERIFICATION = 18
    EMPTY_RESPONSE = 30
    XML_PARSE = 31
    RESPONSE_INVALID = 34
    IGNORED_PER_POLICY = 35
    DEFERRED_PER_POLICY = 36
    DEFERRED_FOR_BACKOFF = 40
    ROLLBACK = 44
    # corral's own range, 3000-3099 (above update_engine's 2000+HTTP status): the booted
    # new slot failed corral's health gate, so the machine fell back.
    CORRAL_SERVICE_EXITED = 3001
    CORRAL_HEALTH_DEADLINE = 3002
    CORRAL_HEALTH_COMMAND = 3003
    CORRAL_FLEET_UNITS_INACTIVE = 3010
    CORRAL_FLEET_UNREACHABLE = 3011

    FLAG_CUSTOM_SERVER = 0x10000000
    FLAG_DEV_IMAGE = 0x20000000
    FLAG_RESUMED = 0x40000000


def mask_error_code(code: int) -> int:
    """Strip update_engine's flag bits (28–30, and the sign) from an error code."""
    return code & ERROR_CODE_MASK


def normalize_app_id(app_id: str) -> str:
    """`{E96281A6-…}` and `e96281a6-…` are the same app (Nebraska `GetAppID`)."""
    return app_id.strip().strip("{}").strip().lower()


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Os:
    version: str | None = "Chateau"
    platform: str | None = "CoreOS"
    sp: str | None = None
    arch: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    active: str | None = "1"
    a: str | None = None
    r: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateCheck:
    target_version_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    event_type: int
    event_result: int
    error_code: int | None = None
    previous_version: str | None = None

    @property
    def masked_error_code(self) -> int | None:
        return None if self.error_code is None else mask_error_code(self.error_code)


@dataclass(frozen=True, slots=True)
class AppRequest:
    """One `<app>` of a request; attribute fields are in update_engine's emission order."""

    app_id: str
    version: str | None = None
    track: str | None = None
    boot_id: str | None = None
    oem: str | None = None
    oem_version: str | None = None
    aleph_version: str | None = None
    machine_id: str | None = None
    machine_alias: str | None = None
    lang: str | None = None
    board: str | None = None
    hardware_class: str | None = None
    delta_okay: str | None = None
    ping: Ping | None = None
    update_check: UpdateCheck | None = None
    events: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class Request:
    apps: tuple[AppRequest, ...]
    os: Os | None = None
    version: str | None = UPDATER_VERSION
    updater_version: str | None = UPDATER_VERSION
    install_source: str | None = "scheduler"
    is_machine: str | None = "1"
    protocol: str = PROTOCOL


@dataclass(frozen=True, slots=True)
class Package:
    name: str
    size: int | None = None
    hash: str | None = None
    required: str | None = "true"
    hash_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """An `<action>`; attributes kept in order because servers put anything here."""

    event: str
    attrs: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str | None:
        for key, value in self.attrs:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Manifest:
    version: str
    packages: tuple[Package, ...] = ()
    actions: tuple[Action, ...] = ()


@dataclass(frozen=True, slots=True)
class UpdateCheckResponse:
    status: str | None
    urls: tuple[str, ...] = ()
    manifest: Manifest | None = None
    poll_interval: str | None = None


@dataclass(frozen=True, slots=True)
class AppResponse:
    app_id: str
    status: str | None = "ok"
    ping_status: str | None = None
    update_check: UpdateCheckResponse | None = None
    event_statuses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Response:
    apps: tuple[AppResponse, ...]
    server: str | None = "corral"
    daystart_elapsed_seconds: int | None = 0
    protocol: str = PROTOCOL


@dataclass(frozen=True, slots=True)
class NoUpdate:
    poll_interval: int | None = None


@dataclass(frozen=True, slots=True)
class UpdateOffer:
    """What update_engine takes from an `ok` answer: the first package, the sha256 action."""

    version: str
    urls: tuple[str, ...]
    name: str
    size: int
    sha256: str
    poll_interval: int | None = None
    disable_payload_backoff: bool = False
    extra: dict[str, str] = field(default_factory=dict, compare=False)


# --------------------------------------------------------------------------- parsing


def _load(body: bytes | str, limit: int, what: str) -> Element:
    data = body.encode() if isinstance(body, str) else body
    if len(data) > limit:
        raise XmlParseError(f"{what} is {len(data)} bytes, over the {limit}-byte limit")
    if not data.strip():
        raise EmptyResponseError(f"empty {what}")
    try:
        root: Element = SafeET.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise XmlParseError(f"{what} refused: {type(exc).__name__}") from None
    except (ParseError, ValueError) as exc:
        raise XmlParseError(f"{what} is not well-formed XML: {exc}") from None
    return root


def _check_root(root: Element, tag: str) -> None:
    if root.tag != tag:
        raise XmlParseError(f"expected <{tag}>, got <{root.tag}>")
    protocol = root.get("protocol")
    if protocol != PROTOCOL:
        raise XmlParseError(f"unsupported omaha protocol: {protocol!r}")


def _int(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        raise XmlParseError(f"{what} is not an integer: {value!r}") from None


def parse_request(body: bytes | str, limit: int = MAX_REQUEST_BYTES) -> Request:
    """Parse a client's `<request>`; raise an `OmahaError` subclass if it is unusable."""
    root = _load(body, limit, "request")
    _check_root(root, "request")
    os_el = root.find("os")
    os = (
        None
        if os_el is None
        else Os(os_el.get("version"), os_el.get("platform"), os_el.get("sp"), os_el.get("arch"))
    )
    apps = []
    for app in root.findall("app"):
        app_id = app.get("appid")
        if not app_id:
            raise XmlParseError("<app> without appid")
        ping_el = app.find("ping")
        uc_el = app.find("updatecheck")
        events = tuple(
            Event(
                _int(ev.get("eventtype"), "eventtype") or 0,
                _int(ev.get("eventresult"), "eventresult") or 0,
                _int(ev.get("errorcode"), "errorcode"),
                ev.get("previousversion"),
            )
            for ev in app.findall("event")
        )
        apps.append(
            AppRequest(
                app_id=app_id,
                version=app.get("version"),
                track=app.get("track"),
                boot_id=app.get("bootid"),
                oem=app.get("oem"),
                oem_version=app.get("oemversion"),
                aleph_version=app.get("alephversion"),
                machine_id=app.get("machineid"),
                machine_alias=app.get("machinealias"),
                lang=app.get("lang"),
                board=app.get("board"),
                hardware_class=app.get("hardware_class"),
                delta_okay=app.get("delta_okay"),
                ping=None
                if ping_el is None
                else Ping(ping_el.get("active"), ping_el.get("a"), ping_el.get("r")),
                update_check=None
                if uc_el is None
                else UpdateCheck(uc_el.get("targetversionprefix")),
                events=events,
            )
        )
    return Request(
        apps=tuple(apps),
        os=os,
        version=root.get("version"),
        updater_version=root.get("updaterversion"),
        install_source=root.get("installsource"),
        is_machine=root.get("ismachine"),
    )


def parse_response(body: bytes | str, limit: int = MAX_RESPONSE_BYTES) -> Response:
    """Parse a server's `<response>` (structure only; see `interpret_update_check`)."""
    root = _load(body, limit, "response")
    _check_root(root, "response")
    daystart = root.find("daystart")
    elapsed: int | None = None
    if daystart is not None:
        # update_engine tolerates a missing or non-numeric value (NoElapsedSecondsTest).
        try:
            elapsed = int(daystart.get("elapsed_seconds", ""))
        except ValueError:
            elapsed = None
    apps = []
    for app in root.findall("app"):
        ping = app.find("ping")
        uc = app.find("updatecheck")
        apps.append(
            AppResponse(
                app_id=app.get("appid", ""),
                status=app.get("status"),
                ping_status=None if ping is None else ping.get("status", ""),
                update_check=None if uc is None else _parse_update_check(uc),
                event_statuses=tuple(ev.get("status", "") for ev in app.findall("event")),
            )
        )
    return Response(
        apps=tuple(apps), server=root.get("server"), daystart_elapsed_seconds=elapsed
    )


def _parse_update_check(uc: Element) -> UpdateCheckResponse:
    urls = tuple(u.get("codebase", "") for u in uc.findall("urls/url"))
    manifest_el = uc.find("manifest")
    manifest = None
    if manifest_el is not None:
        packages = []
        for p in manifest_el.findall("packages/package"):
            try:
                size: int | None = int(p.get("size", ""))
            except ValueError:
                size = None
            packages.append(
                Package(p.get("name", ""), size, p.get("hash"), p.get("required"),
                        p.get("hash_sha256"))
            )
        actions = tuple(
            Action(a.get("event", ""), tuple((k, v) for k, v in a.attrib.items() if k != "event"))
            for a in manifest_el.findall("actions/action")
        )
        manifest = Manifest(manifest_el.get("version", ""), tuple(packages), actions)
    return UpdateCheckResponse(uc.get("status"), urls, manifest, uc.get("PollInterval"))


def interpret_update_check(
    body: bytes | str, limit: int = MAX_RESPONSE_BYTES
) -> NoUpdate | UpdateOffer:
    """Apply update_engine's acceptance rules (`ParseResponse`) to an update-check answer.

    Returns `NoUpdate` or an `UpdateOffer`. Raises `EmptyResponseError` (30),
    `XmlParseError` (31) or `ResponseInvalidError` (34). As in update_engine, the first
    `<app>`'s `<updatecheck>` is used and neither `appid` nor `app@status` is checked.
    """
    response = parse_response(body, limit)
    uc = next((a.update_check for a in response.apps if a.update_check is not None), None)
    if uc is None or response.apps[0].update_check is None:
        raise ResponseInvalidError("no /response/app/updatecheck")
    poll: int | None = None
    if uc.poll_interval is not None:
        try:
            poll = int(uc.poll_interval)
        except ValueError:
            poll = None
    if uc.status is None:
        raise ResponseInvalidError("updatecheck without status")
    if uc.status == "noupdate":
        return NoUpdate(poll)
    if uc.status != "ok":
        raise ResponseInvalidError(f"updatecheck status {uc.status!r}")
    m = uc.manifest
    if m is None:
        raise ResponseInvalidError("ok without <manifest>")
    if not uc.urls or any(not u for u in uc.urls):
        raise ResponseInvalidError("ok without a url codebase")
    if not m.packages or not m.packages[0].name or not (m.packages[0].size or 0) > 0:
        raise ResponseInvalidError("ok without a named package of positive size")
    post = next((a for a in m.actions if a.event == "postinstall"), None)
    sha256 = post.get("sha256") if post is not None else None
    if post is None or not sha256:
        raise ResponseInvalidError("ok without a postinstall action carrying sha256")
    pkg = m.packages[0]
    urls = tuple(u if u.endswith("/") else u + "/" for u in uc.urls)
    return UpdateOffer(
        version=m.version,
        urls=tuple(u + pkg.name for u in urls),
        name=pkg.name,
        size=pkg.size or 0,
        sha256=sha256,
        poll_interval=poll,
        disable_payload_backoff=(post.get("DisablePayloadBackoff") or "").lower() == "true",
        extra=dict(post.attrs),
    )


# --------------------------------------------------------------------------- encoding


# Whitespace other than spaces is escaped, or XML attribute normalisation would turn it
# into spaces and a value would not survive a round trip.
_ATTR_ENTITIES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


def _attrs(pairs: Iterable[tuple[str, Any]]) -> str:
    return "".join(
        f' {k}="{escape(str(v), _ATTR_ENTITIES)}"' for k, v in pairs if v is not None
    )


def encode_request(request: Request) -> bytes:
    """Write a request exactly as update_engine's `GetRequestXml` does."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>']
    lines.append(
        "<request"
        + _attrs([
            ("protocol", request.protocol),
            ("version", request.version),
            ("updaterversion", request.updater_version),
            ("installsource", request.install_source),
            ("ismachine", request.is_machine),
        ])
        + ">"
    )
    if request.os is not None:
        o = request.os
        lines.append(
            "    <os"
            + _attrs([("version", o.version), ("platform", o.platform), ("sp", o.sp),
                      ("arch", o.arch)])
            + "></os>"
        )
    for app in request.apps:
        lines.append(
            "    <app"
            + _attrs([
                ("appid", app.app_id),
                ("version", app.version),
                ("track", app.track),
                ("bootid", app.boot_id),
                ("oem", app.oem),
                ("oemversion", app.oem_version),
                ("alephversion", app.aleph_version),
                ("machineid", app.machine_id),
                ("machinealias", app.machine_alias),
                ("lang", app.lang),
                ("board", app.board),
                ("hardware_class", app.hardware_class),
                ("delta_okay", app.delta_okay),
            ])
            + " >"
        )
        if app.ping is not None:
            p = app.ping
            lines.append(
                "        <ping" + _attrs([("active", p.active), ("a", p.a), ("r", p.r)])
                + "></ping>"
            )
        if app.update_check is not None:
            lines.append(
                "        <updatecheck"
                + _attrs([("targetversionprefix", app.update_check.target_version_prefix)])
                + "></updatecheck>"
            )
        for ev in app.events:
            lines.append(
                "        <event"
                + _attrs([
                    ("eventtype", ev.event_type),
                    ("eventresult", ev.event_result),
                    ("errorcode", ev.error_code),
                    ("previousversion", ev.previous_version),
                ])
                + "></event>"
            )
        lines.append("    </app>")
    lines.append("</request>")
    return ("\n".join(lines) + "\n").encode()


def encode_response(response: Response) -> bytes:
    """Write a response in Nebraska's shape (2-space indent, explicit close tags)."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>']
    lines.append(
        "<response" + _attrs([("protocol", response.protocol), ("server", response.server)]) + ">"
    )
    if response.daystart_elapsed_seconds is not None:
        lines.append(
            f'  <daystart elapsed_seconds="{response.daystart_elapsed_seconds}"></daystart>'
        )
    for app in response.apps:
        lines.append("  <app" + _attrs([("appid", app.app_id), ("status", app.status)]) + ">")
        if app.ping_status is not None:
            lines.append("    <ping" + _attrs([("status", app.ping_status)]) + "></ping>")
        uc = app.update_check
        if uc is not None:
            open_tag = (
                "    <updatecheck"
                + _attrs([("status", uc.status), ("PollInterval", uc.poll_interval)])
                + ">"
            )
            if not uc.urls and uc.manifest is None:
                lines.append(open_tag + "</updatecheck>")
            else:
                lines.append(open_tag)
                if uc.urls:
                    lines.append("      <urls>")
                    lines.extend(
                        "        <url" + _attrs([("codebase", u)]) + "></url>" for u in uc.urls
                    )
                    lines.append("      </urls>")
                if uc.manifest is not None:
                    m = uc.manifest
                    lines.append("      <manifest" + _attrs([("version", m.version)]) + ">")
                    lines.append("        <packages>")
                    for p in m.packages:
                        lines.append(
                            "          <package"
                            + _attrs([("name", p.name), ("hash", p.hash), ("size", p.size),
                                      ("required", p.required),
                                      ("hash_sha256", p.hash_sha256)])
                            + "></package>"
                        )
                    lines.append("        </packages>")
                    lines.append("        <actions>")
                    for a in m.actions:
                        lines.append(
                            "          <action" + _attrs([("event", a.event), *a.attrs])
                            + "></action>"
                        )
                    lines.append("        </actions>")
                    lines.append("      </manifest>")
                lines.append("    </updatecheck>")
        for status in app.event_statuses:
            lines.append("    <event" + _attrs([("status", status)]) + "></event>")
        lines.append("  </app>")
    lines.append("</response>")
    return ("\n".join(lines) + "\n").encode()
