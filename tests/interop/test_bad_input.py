"""Bad input against corral and real etcd side by side: never a 500 or a traceback where etcd
does not give one, and the same answer as etcd (status, error code, message, cause).

Both servers are fresh and get the same requests in the same order, so their indexes agree.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.testing.servers import ServerProcess, corral_etcd_command, start_cluster

pytestmark = pytest.mark.interop

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
DEEP = "/".join(["d"] * 2000)

# (method, target, body, headers)
CASES: list[tuple[str, str, bytes | None, dict[str, str]]] = [
    ("PUT", "/v2/keys/p?ttl=%zz", b"value=1", FORM),
    ("PUT", "/v2/keys/p", b"value=%", FORM),
    ("PUT", "/v2/keys/p?a=1;b=2", b"value=1", FORM),
    ("PUT", "/v2/keys/p", b"value=1&ttl=1e9", FORM),
    ("PUT", "/v2/keys/p", b"prevIndex=-1&value=1", FORM),
    ("GET", "/v2/keys/p?wait=true&waitIndex=18446744073709551616", None, {}),
    ("GET", "/v2/keys/p?recursive=&sorted=", None, {}),
    ("PUT", "/v2/keys/p?refresh=true", b"ttl=", FORM),
    ("PUT", "/v2/keys/utf8/%FF%FE", b"value=%C3%28%A0", FORM),
    ("GET", "/v2/keys/utf8?recursive=true", None, {}),
    ("PUT", "/v2/keys/nul%00key", b"value=a%00b", FORM),
    ("GET", "/v2/keys/nul%00key", None, {}),
    ("PUT", "/v2/keys/html", b"value=%3Cscript%3E%26%E2%80%A8", FORM),
    ("GET", "/v2/keys/html", None, {}),
    # Go's int64 arithmetic wraps these: 2**64-1 s is -1 s (expires at the next sweep); the
    # others land before 2000, which etcd's store treats as permanent.
    ("PUT", "/v2/keys/huge1?ttl=18446744073709551615", b"value=x", FORM),
    ("GONE", "/v2/keys/huge1", None, {}),
    ("PUT", "/v2/keys/huge2?ttl=9223372036", b"value=x", FORM),
    ("PUT", "/v2/keys/huge5?ttl=15000000000", b"value=x", FORM),
    ("PUT", "/v2/keys/huge3?ttl=4294967296", b"value=x", FORM),
    ("GET", "/v2/keys/huge3", None, {}),
    ("PUT", "/v2/keys/huge4?ttl=18446744073709551616", b"value=x", FORM),
    ("PUT", "/v2/keys/big", b"value=" + b"x" * (10 << 20), FORM),
    ("PUT", "/v2/keys/bigjson", b"x" * (3 << 20), {"Content-Type": "application/json"}),
    ("PUT", "/v2/keys/mid", b"value=" + b"y" * 200_000, FORM),
    ("GET", "/v2/keys/mid", None, {}),
    (
        "PUT",
        "/v2/keys/ct",
        b"value=1",
        {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    ),
    ("PUT", "/v2/keys/ct2", b"value=1", {"Content-Type": "text/plain"}),
    ("PUT", f"/v2/keys/{DEEP}", b"value=deep", FORM),
    ("GET", "/v2/keys/d?recursive=true", None, {}),
    ("GET", f"/v2/keys/{DEEP}/x", None, {}),
    ("DELETE", "/v2/keys/d?recursive=true", None, {}),
    ("GET", "/v2/keys/%", None, {}),
    ("GET", "/v2/keys/a%2", None, {}),
    ("GET", "/v2/keys/%2e%2e/x", None, {}),
    ("POST", "/v2/keys/q?ttl=abc", b"value=1", FORM),
    ("DELETE", "/v2/keys/p?prevIndex=abc", None, {}),
]


def _send(
    port: int, method: str, target: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _shape(status: int, body: bytes) -> object:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # the 2000-deep listing is too deep for json.loads
        return status, body
    if isinstance(doc, dict):
        doc.pop("getsSuccess", None)  # stats: gets are counted per member
        doc.pop("getsFail", None)
        for node in (doc.get("node"), doc.get("prevNode")):
            if isinstance(node, dict):
                node.pop("expiration", None)
                node.pop("ttl", None)
    return status, doc


@pytest.fixture
def pair(real_etcd: ServerProcess, tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with start_cluster(corral_etcd_command(), tmp_path / "c", prefix="b") as (member,):
        yield real_etcd, member


def test_bad_input_like_etcd(pair: tuple[ServerProcess, ServerProcess]) -> None:
    etcd, corral = pair
    diffs = []
    for method, target, body, headers in CASES:
        if method == "GONE":
            for srv in (etcd, corral):
                deadline = time.monotonic() + 10
                while _send(srv.client_port, "GET", target, None, {})[0] != 404:
                    assert time.monotonic() < deadline, f"{target} never expired"
                    time.sleep(0.05)
            continue
        e = _send(etcd.client_port, method, target, body, headers)
        c = _send(corral.client_port, method, target, body, headers)
        assert c[0] != 500 or e[0] == 500, (method, target[:80], c)
        assert b"Traceback" not in c[1]
        if _shape(*e) != _shape(*c):
            diffs.append(
                f"{method} {target[:80]}\n  etcd:   {e[0]} {e[1][:300]!r}\n  corral: {c[0]} {c[1][:300]!r}"
            )
    assert not diffs, "\n".join(diffs)
    assert corral.proc is not None and corral.proc.poll() is None  # still serving
