"""The update server over real HTTP (aiohttp on loopback), with a virtual clock."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from corral.update import omaha
from corral.update.policy import GroupPolicy
from corral.update.server import CORRAL_APP_ID, Store, UpdateServer, bootstrap, make_app

from .conftest import SAMPLES

APP = CORRAL_APP_ID.strip("{}")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _ue_request(name: str, *, app_id: str = CORRAL_APP_ID, version: str = "1.0.0",
                machine: str = "8b2f6e0d4c9a4e6f9b1d3a5c7e9f1a2b") -> bytes:
    """An update_engine sample, retargeted at corral's app."""
    data = (SAMPLES / name).read_bytes()
    return (data.replace(b"{e96281a6-d1af-4bde-9a0a-97b76e56dc57}", app_id.encode())
            .replace(b'version="3510.2.0"', f'version="{version}"'.encode())
            .replace(b"8b2f6e0d4c9a4e6f9b1d3a5c7e9f1a2b", machine.encode()))


def run_server(data_dir: Path, body: Callable[[ClientSession, str, Store, Clock],
                                              Awaitable[None]],
               token: str | None = None) -> None:
    async def main() -> None:
        store = Store(data_dir)
        bootstrap(store, policy=GroupPolicy())
        clock = Clock()
        server = TestServer(make_app(UpdateServer(store, clock), admin_token=token),
                            host="127.0.0.1")
        await server.start_server()
        try:
            async with ClientSession() as session:
                await body(session, str(server.make_url("")), store, clock)
        finally:
            await server.close()
            store.close()

    asyncio.run(main())


async def _post(session: ClientSession, base: str, body: bytes) -> tuple[int, bytes]:
    async with session.post(base + "/v1/update/", data=body,
                            headers={"Content-Type": "text/xml"}) as r:
        return r.status, await r.read()


async def _api(session: ClientSession, method: str, url: str, **kw: Any) -> Any:
    async with session.request(method, url, **kw) as r:
        return r.status, await r.json()


def test_update_flow_and_history(tmp_path: Path, signed_110: bytes) -> None:
    async def body(s: ClientSession, base: str, store: Store, clock: Clock) -> None:
        status, info = await _api(s, "PUT", f"{base}/api/apps/{APP}/packages/1.1.0",
                                  data=signed_110)
        assert status == 201 and info["size"] == len(signed_110)
        # No channel version yet: no update; the 3/2 event is still acked.
        status, out = await _post(s, base, _ue_request("derived_ue_updatecheck_request.xml"))
        resp = omaha.parse_response(out)
        assert status == 200 and resp.apps[0].event_statuses == ("ok",)
        assert resp.apps[0].ping_status == "ok"
        assert isinstance(omaha.interpret_update_check(out), omaha.NoUpdate)
        assert (await _api(s, "PUT", f"{base}/api/apps/{APP}/channels/stable",
                           json={"version": "1.1.0"}))[0] == 200
        # Upper-case app id without braces is the same app.
        req = _ue_request("derived_ue_updatecheck_request.xml", app_id=APP.upper())
        offer = omaha.interpret_update_check((await _post(s, base, req))[1])
        assert isinstance(offer, omaha.UpdateOffer) and offer.version == "1.1.0"
        assert offer.sha256 == store.package(APP, "1.1.0").sha256  # type: ignore[union-attr]
        # Download with and without Range.
        async with s.get(offer.urls[0]) as r:
            whole = await r.read()
        assert hashlib.sha256(whole).digest() == hashlib.sha256(signed_110).digest()
        async with s.get(offer.urls[0], headers={"Range": "bytes=100-"}) as r:
            assert r.status == 206 and await r.read() == signed_110[100:]
        for name in ("derived_ue_event_13_download_started_request.xml",
                     "derived_ue_event_14_download_finished_request.xml",
                     "derived_ue_event_3_1_update_installed_request.xml"):
            status, out = await _post(s, base, _ue_request(name))
            assert omaha.parse_response(out).apps[0].event_statuses == ("ok",)
        after = _ue_request("derived_ue_updatecheck_after_update_request.xml", version="1.1.0")
        after = after.replace(b'previousversion="3493.1.0"', b'previousversion="1.0.0"')
        assert isinstance(omaha.interpret_update_check((await _post(s, base, after))[1]),
                          omaha.NoUpdate)
        status, instances = await _api(s, "GET", f"{base}/api/instances")
        assert [(i["version"], i["status_name"]) for i in instances] == [("1.1.0", "COMPLETE")]
        status, events = await _api(s, "GET", f"{base}/api/events")
        assert [(e["type"], e["result"]) for e in events] == [
            (3, 2), (3, 2), (13, 1), (14, 1), (3, 1), (3, 2)]
        assert events[-1]["previous_version"] == "1.0.0"

    run_server(tmp_path, body)


def test_hostile_and_unknown_requests(tmp_path: Path) -> None:
    async def body(s: ClientSession, base: str, store: Store, clock: Clock) -> None:
        big = (SAMPLES / "nebraska_test_big_omaha_request_TEMPLATE.xml").read_bytes()
        assert await _post(s, base, big) == (400, b"")
        assert await _post(s, base, b"invalid xml>") == (200, b"")
        bomb = b'<!DOCTYPE x [<!ENTITY a "aaaa">]><request protocol="3.0"/>'
        assert await _post(s, base, bomb) == (200, b"")
        status, out = await _post(s, base, _ue_request(
            "derived_ue_updatecheck_request.xml", app_id="{00000000-0000-0000-0000-000000000000}"))
        app = omaha.parse_response(out).apps[0]
        assert app.status == "error-unknownApplicationOrGroup"
        assert app.update_check is not None and app.update_check.status == "error-internal"
        assert app.event_statuses == ("ok",)
        # The Google-style request (two apps, no machine id) is answered, not crashed on.
        status, out = await _post(s, base, (SAMPLES / "go-omaha_fixtures_request.xml").read_bytes())
        assert status == 200 and len(omaha.parse_response(out).apps) == 2
        async with s.get(f"{base}/packages/{APP}/9.9.9/x.payload") as r:
            assert r.status == 404

    run_server(tmp_path, body)


def test_admin_api_validates_and_requires_the_token(tmp_path: Path, unsigned_110: bytes) -> None:
    async def body(s: ClientSession, base: str, store: Store, clock: Clock) -> None:
        assert (await _api(s, "GET", f"{base}/api/apps"))[0] == 401
        h = {"Authorization": "Bearer sekrit"}
        status, doc = await _api(s, "PUT", f"{base}/api/apps/{APP}/packages/1.2.0",
                                 data=unsigned_110, headers=h)
        assert status == 400 and "not 1.2.0" in doc["error"]
        status, doc = await _api(s, "PUT", f"{base}/api/apps/{APP}/packages/1.1.0",
                                 data=b"not a payload", headers=h)
        assert status == 400 and "not a corral release payload" in doc["error"]
        status, doc = await _api(s, "PUT", f"{base}/api/apps/{APP}/channels/stable",
                                 json={"version": "7.0.0"}, headers=h)
        assert status == 404
        status, doc = await _api(s, "PUT", f"{base}/api/apps/{APP}/groups/g",
                                 json={"max_updates_per_period": -1}, headers=h)
        assert status == 400
        status, doc = await _api(s, "PUT", f"{base}/api/apps/{APP}/groups/g",
                                 json={"bogus": 1}, headers=h)
        assert status == 400 and "bogus" in doc["error"]
        status, doc = await _api(s, "GET", f"{base}/api/apps/nope/groups", headers=h)
        assert status == 404

    run_server(tmp_path, body, token="sekrit")


def test_state_survives_a_restart(tmp_path: Path, signed_110: bytes) -> None:
    async def first(s: ClientSession, base: str, store: Store, clock: Clock) -> None:
        await _api(s, "PUT", f"{base}/api/apps/{APP}/packages/1.1.0", data=signed_110)
        await _api(s, "PUT", f"{base}/api/apps/{APP}/groups/stable",
                   json={"channel": "stable", "safe_mode": True})
        await _api(s, "PUT", f"{base}/api/apps/{APP}/channels/stable", json={"version": "1.1.0"})
        out = (await _post(s, base, _ue_request("derived_ue_updatecheck_request.xml")))[1]
        assert isinstance(omaha.interpret_update_check(out), omaha.UpdateOffer)
        err = _ue_request("derived_ue_event_3_0_error_custom_server_request.xml")
        await _post(s, base, err)

    async def second(s: ClientSession, base: str, store: Store, clock: Clock) -> None:
        _, groups = await _api(s, "GET", f"{base}/api/apps/{APP}/groups")
        assert groups[0]["halted"] and groups[0]["policy"]["safe_mode"]
        _status, instances = await _api(s, "GET", f"{base}/api/instances")
        assert instances[0]["status_name"] == "ERROR"
        assert instances[0]["failed_versions"] == ["1.1.0"]
        out = (await _post(s, base, _ue_request("derived_ue_updatecheck_request.xml",
                                                machine="another")))[1]
        assert isinstance(omaha.interpret_update_check(out), omaha.NoUpdate)
        _, events = await _api(s, "GET", f"{base}/api/events")
        assert events[1]["error_code"] == 268435465

    run_server(tmp_path, first)
    run_server(tmp_path, second)
