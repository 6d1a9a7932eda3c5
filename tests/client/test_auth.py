"""v2 auth: credentials from the client and from `corral kv -u`, against a real server."""

from __future__ import annotations

import json
import urllib.request

import pytest

from corral.client import SyncClient, Unauthorized
from corral.client.protocol import basic_auth
from corral.client.testkit import run_corral_kv, run_etcdctl
from corral.testing.servers import ServerProcess

pytestmark = pytest.mark.interop


def _auth_api(
    url: str,
    method: str,
    path: str,
    body: object | None = None,
    user: tuple[str, str] | None = None,
) -> None:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(basic_auth(*user) if user else {})}
    req = urllib.request.Request(url + path, data=data, method=method, headers=headers)
    urllib.request.urlopen(req, timeout=10).close()


def test_credentials_are_sent_and_refusals_are_unauthorized(
    kv_server: ServerProcess, server_kind: str
) -> None:
    url = kv_server.client_url
    _auth_api(url, "PUT", "/v2/auth/users/root", {"user": "root", "password": "pw"})
    _auth_api(url, "PUT", "/v2/auth/enable")
    # Enabling auth lets the guest role do everything; take that away.
    _auth_api(
        url,
        "PUT",
        "/v2/auth/roles/guest",
        {"role": "guest", "revoke": {"kv": {"read": ["/*"], "write": ["/*"]}}},
        user=("root", "pw"),
    )
    with SyncClient(url, auth=("root", "pw")) as c:
        assert c.set("/secret", "s").value == "s"
    for auth in (None, ("root", "wrong")):
        with SyncClient(url, auth=auth) as c, pytest.raises(Unauthorized) as info:
            c.get("/secret")
        assert info.value.cause == "Insufficient credentials"
    for argv in (
        ["get", "/secret"],
        ["-u", "root:pw", "get", "/secret"],
        ["-u", "root:wrong", "get", "/secret"],
    ):
        assert run_corral_kv(url, argv) == run_etcdctl(url, argv)
    assert run_corral_kv(url, ["-u", "root:pw", "get", "/secret"]).stdout == "s\n"
