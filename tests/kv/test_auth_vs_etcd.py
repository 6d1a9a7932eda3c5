"""v2 auth against the real etcd 3.4: the same requests get the same answers from both.

A scripted session (enable without root, root, enable, users and roles, grants, reads and
writes allowed and refused, guest changes, bad bodies and paths, disable) is sent to a real
etcd and to `corral etcd`; status, body, the set of header names and `X-Etcd-Index` (less
the index each server started at) must be equal. The real etcdctl's user/role/auth verbs
print and exit alike on both. A three-member corral cluster applies auth enabled through one
member on the others, and after a restart.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from corral.client.testkit import run_etcdctl, server_cluster
from corral.testing.servers import ServerProcess, corral_etcd_command, start_cluster

pytestmark = pytest.mark.interop

ROOT = ("root", "pw")
BOB = ("bob", "p2")

# (method, path, body, credentials or a raw Authorization header)
Step = tuple[str, str, object, "tuple[str, str] | str | None"]

SESSION: list[Step] = [
    ("GET", "/v2/auth/enable", None, None),
    ("GET", "/v2/auth/users", None, None),
    ("GET", "/v2/auth/roles", None, None),
    ("GET", "/v2/auth/users/root", None, None),
    ("PUT", "/v2/auth/enable", None, None),
    ("DELETE", "/v2/auth/enable", None, None),
    ("DELETE", "/v2/auth/users/nobody", None, None),
    ("PUT", "/v2/auth/users/root", {"user": "root"}, None),
    ("PUT", "/v2/auth/users/root", {"user": "root", "password": "pw"}, None),
    ("GET", "/v2/keys/a", None, None),  # the auth writes took etcd indexes
    ("PUT", "/v2/auth/users/root", {"user": "root", "password": "pw", "roles": ["x"]}, None),
    ("PUT", "/v2/auth/users/bob", {"user": "bob", "password": "pw", "roles": ["x", "x"]}, None),
    ("PUT", "/v2/auth/roles/r1", {"role": "r1"}, None),
    ("PUT", "/v2/auth/roles/r1", {"role": "r1"}, None),
    ("PUT", "/v2/auth/roles/r2", {"role": "r2", "grant": {"kv": {"read": []}}}, None),
    ("GET", "/v2/auth/roles", None, None),
    ("GET", "/v2/auth/users", None, None),
    ("GET", "/v2/auth/users/bob", None, None),
    ("PUT", "/v2/auth/users/bob", '{"USER":"bob","password":"p2","zzz":1} trailing', None),
    (
        "PUT",
        "/v2/auth/roles/r1",
        {"role": "r1", "grant": {"kv": {"read": ["/pub/*"], "write": ["/pub/w"]}}},
        None,
    ),
    ("PUT", "/v2/auth/roles/r1", {"role": "r1", "grant": {"kv": {"read": ["/pub/*"]}}}, None),
    ("PUT", "/v2/auth/roles/r1", {"role": "r1", "revoke": {"kv": {"read": ["/none"]}}}, None),
    (
        "PUT",
        "/v2/auth/roles/r1",
        {"role": "r1", "permissions": {"kv": {"read": ["/a"]}}, "revoke": {"kv": {"read": ["/a"]}}},
        None,
    ),
    ("PUT", "/v2/auth/roles/root", {"role": "root"}, None),
    ("PUT", "/v2/auth/roles/nope", {"role": "nope", "grant": {"kv": {"read": ["/x"]}}}, None),
    ("PUT", "/v2/auth/users/bob", {"user": "bob", "revoke": ["x"], "grant": ["r1"]}, None),
    ("PUT", "/v2/auth/users/bob", {"user": "bob", "grant": ["r1"]}, None),
    ("PUT", "/v2/auth/users/bob", {"user": "bob", "revoke": ["zz"]}, None),
    ("PUT", "/v2/auth/users/bob", {"user": "bob"}, None),
    ("PUT", "/v2/auth/users/bob", {"user": "bob", "roles": ["a"], "grant": ["a"]}, None),
    ("PUT", "/v2/auth/users/bob", {"user": "eve"}, None),
    ("PUT", "/v2/auth/users/carl", [1], None),
    ("PUT", "/v2/auth/users/carl", "", None),
    (
        "PUT",
        "/v2/auth/users/carl",
        {"user": "carl", "password": "x", "roles": [], "grant": []},
        None,
    ),
    ("PUT", "/v2/auth/users/carl", {"user": "carl"}, None),
    ("PUT", "/v2/auth/enable", None, None),
    ("PUT", "/v2/auth/enable", None, ROOT),
    ("GET", "/v2/auth/enable", None, None),
    ("GET", "/v2/auth/roles/guest", None, ROOT),
    ("PUT", "/v2/keys/pub/x", "value=1", None),  # guest may still do everything
    ("GET", "/v2/auth/users", None, None),
    ("GET", "/v2/auth/users", None, BOB),
    (
        "PUT",
        "/v2/auth/roles/guest",
        {"role": "guest", "revoke": {"kv": {"read": ["/*"], "write": ["/*"]}}},
        ROOT,
    ),
    ("PUT", "/v2/keys/pub/x", "value=2", None),
    ("GET", "/v2/keys/pub/x", None, None),
    ("PUT", "/v2/keys/pub/x", "value=2", BOB),
    ("PUT", "/v2/keys/pub/w", "value=1", BOB),
    ("GET", "/v2/keys/pub/w", None, BOB),
    ("GET", "/v2/keys/pub/w?wait=true&waitIndex=1", None, BOB),
    ("GET", "/v2/keys/pub?recursive=true", None, BOB),
    ("GET", "/v2/keys/pub/w", None, ("bob", "wrong")),
    ("GET", "/v2/keys/pub/w", None, ("nobody", "p2")),
    ("GET", "/v2/keys/pub/w", None, "Basic !!"),
    ("GET", "/v2/keys/pub/w", None, "Basic " + base64.b64encode(b"nocolon").decode()),
    ("GET", "/v2/keys/pub/w?recursive=true", None, ROOT),
    ("PUT", "/v2/keys/pub/w?ttl=abc", "value=1", None),  # parsing errors come first
    ("PUT", "/v2/auth/roles/guest", {"role": "guest", "grant": {"kv": {"read": ["/pub/*"]}}}, ROOT),
    ("GET", "/v2/keys/pub/x", None, None),
    ("GET", "/v2/keys/pub?recursive=true", None, None),  # guests: no recursive check
    ("PUT", "/v2/keys/pub/x", "value=3", None),
    ("POST", "/v2/members", {"peerURLs": ["http://127.0.0.1:1"]}, BOB),
    ("DELETE", "/v2/members/abc", None, None),
    ("GET", "/version", None, None),
    ("GET", "/v2/stats/self", None, None),
    ("DELETE", "/v2/auth/users/root", None, ROOT),
    ("DELETE", "/v2/auth/users/nobody", None, ROOT),
    ("DELETE", "/v2/auth/roles/nobody", None, ROOT),
    ("DELETE", "/v2/auth/roles/root", None, ROOT),
    ("POST", "/v2/auth/roles/root", None, ROOT),
    ("PATCH", "/v2/auth/users", None, ROOT),
    ("PATCH", "/v2/auth/enable", None, ROOT),
    ("POST", "/v2/auth/roles/a/b", None, ROOT),
    ("GET", "/v2/auth/", None, ROOT),
    ("GET", "/v2/auth/enable/", None, ROOT),
    ("GET", "/v2/auth/users/", None, ROOT),
    ("DELETE", "/v2/auth/enable", None, None),
    ("DELETE", "/v2/auth/enable", None, BOB),
    ("DELETE", "/v2/auth/enable", None, ROOT),
    ("DELETE", "/v2/auth/enable", None, ROOT),
    ("DELETE", "/v2/auth/users/bob", None, None),
    ("DELETE", "/v2/auth/roles/r2", None, None),
    ("GET", "/v2/auth/users", None, None),
    ("PUT", "/v2/auth/enable", None, None),  # guest is kept from the first time
    ("GET", "/v2/keys/pub/x", None, None),
    ("DELETE", "/v2/auth/enable", None, ROOT),
    ("GET", "/v2/keys/a", None, None),
]

_FRAMING = {"date", "content-length", "transfer-encoding", "connection"}


def _send(url: str, step: Step) -> tuple[int, str, frozenset[str], int | None]:
    method, path, body, cred = step
    headers: dict[str, str] = {}
    data: bytes | None = None
    if isinstance(body, str) and path.startswith("/v2/keys"):
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        data = body.encode()
    elif isinstance(body, str):
        data = body.encode()
    elif body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    if isinstance(cred, tuple):
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(cred).encode()).decode()
    elif isinstance(cred, str):
        headers["Authorization"] = cred
    host = url.removeprefix("http://")
    conn = http.client.HTTPConnection(host, timeout=30)
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode()
        names = frozenset(k.lower() for k, _ in resp.getheaders()) - _FRAMING
        index = resp.getheader("X-Etcd-Index")
        return resp.status, text, names, None if index is None else int(index)
    finally:
        conn.close()


@pytest.fixture
def both(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with (
        server_cluster("etcd", tmp_path / "etcd") as [etcd],
        server_cluster("corral", tmp_path / "corral") as [corral],
    ):
        yield etcd, corral


def _normalize(text: str, server: ServerProcess) -> str:
    return text.replace(str(server.client_port), "<port>").replace(str(server.peer_port), "<p>")


def test_auth_session_matches_etcd(both: tuple[ServerProcess, ServerProcess]) -> None:
    _compare(both, SESSION)


_NAMES = ["root", "bob", "guest", "r1", "x", "_h", "a b"]
# No empty pattern: etcd indexes its last byte and drops the connection (corral skips it).
_PATTERNS = ["/*", "/a", "/a/*", "/b*", "*", "/a/b", "/"]
_CREDS: list[tuple[str, str] | None] = [
    None,
    ROOT,
    ("bob", "pw"),
    ("bob", "x"),
    ("root", "x"),
    ("nobody", "pw"),
]
_OMIT = object()


def random_steps(seed: int, count: int) -> Iterator[Step]:
    """Seeded random auth and keys requests: users, roles, grants, enable/disable, reads and
    writes with and without credentials (listings sorted: etcd's unsorted order is random)."""
    rnd = random.Random(seed)

    def maybe(v: object) -> object:
        return rnd.choice([v, None, _OMIT])

    def obj(**fields: object) -> dict[str, object]:
        return {k: v for k, v in fields.items() if v is not _OMIT}

    def perm() -> object:
        pick = lambda: maybe(rnd.sample(_PATTERNS, rnd.randint(0, 2)))  # noqa: E731
        return maybe(obj(kv=obj(read=pick(), write=pick())))

    for _ in range(count):
        k, cred, name = rnd.random(), rnd.choice(_CREDS), rnd.choice(_NAMES)
        quoted = name.replace(" ", "%20")
        if k < 0.25:
            roles = lambda: maybe(rnd.sample(_NAMES, rnd.randint(0, 2)))  # noqa: E731
            body = obj(
                user=rnd.choice([name, name, name, "zz"]),
                password=maybe(rnd.choice(["pw", "pw", "x", ""])),
                roles=roles(),
                grant=roles(),
                revoke=roles(),
            )
            yield ("PUT", "/v2/auth/users/" + quoted, body, cred)
        elif k < 0.45:
            body = obj(
                role=rnd.choice([name, name, "zz"]), permissions=perm(), grant=perm(), revoke=perm()
            )
            yield ("PUT", "/v2/auth/roles/" + quoted, body, cred)
        elif k < 0.5:
            yield (
                "DELETE",
                rnd.choice(["/v2/auth/users/", "/v2/auth/roles/"]) + quoted,
                None,
                cred,
            )
        elif k < 0.6:
            yield (rnd.choice(["PUT", "DELETE", "GET"]), "/v2/auth/enable", None, cred)
        elif k < 0.7:
            kind = rnd.choice(["users", "roles"])
            yield ("GET", f"/v2/auth/{kind}" + rnd.choice(["", "/" + quoted]), None, cred)
        else:
            key = rnd.choice(["/a", "/a/b", "/b", "/bx", ""])
            query = rnd.choice(["?sorted=true", "?recursive=true&sorted=true"])
            if rnd.random() < 0.5:
                yield ("GET", "/v2/keys" + key + query, None, cred)
            else:
                method = rnd.choice(["PUT", "DELETE", "POST"])
                yield (method, "/v2/keys" + key + query, "value=1" if key else None, cred)


def _compare(both: tuple[ServerProcess, ServerProcess], steps: Iterable[Step]) -> set[str]:
    """Send each step to both; return the `METHOD area status` outcomes seen (for coverage)."""
    seen: set[str] = set()
    base = {s.name: _send(s.client_url, ("GET", "/v2/keys/a", None, None))[3] for s in both}
    diffs = []
    for step in steps:
        answers = []
        for server in both:
            status, text, names, index = _send(server.client_url, step)
            if step[1] == "/v2/stats/self":
                text = ""  # names, ids and times of each server
            if index is not None and index != 0:
                index -= base[server.name] or 0
            answers.append((status, _normalize(text, server), names, index))
        if answers[0] != answers[1]:
            diffs.append((step, answers[0], answers[1]))
        area = step[1].partition("?")[0].split("/")[-1 if step[1].count("/") < 2 else 2]
        seen.add(f"{step[0]} {area} {answers[0][0]}")
    assert not diffs, "\n".join(f"{s}\n  etcd:   {e}\n  corral: {c}" for s, e, c in diffs[:5])
    return seen


def test_random_auth_requests_match_etcd(both: tuple[ServerProcess, ServerProcess]) -> None:
    seen = _compare(both, random_steps(7, 300))
    # The walk went through the interesting places: users made, auth on, refusals, grants.
    wanted = {"PUT auth 201", "PUT auth 200", "PUT auth 409", "GET keys 200", "GET keys 401"}
    assert wanted <= seen, sorted(seen)


@pytest.mark.slow
def test_many_random_auth_requests_match_etcd(both: tuple[ServerProcess, ServerProcess]) -> None:
    _compare(both, random_steps(11, 3000))


ETCDCTL_SESSION: list[tuple[list[str], str]] = [
    (["user", "add", "dave:pw"], ""),
    (["user", "add", "dave:pw"], ""),
    (["user", "passwd", "dave"], "newpw\n"),
    (["user", "get", "dave"], ""),
    (["user", "get", "nobody"], ""),
    (["role", "add", "ops"], ""),
    (["role", "add", "ops"], ""),
    (["role", "grant", "ops", "--path", "/ops/*", "--rw"], ""),
    (["role", "grant", "ops", "--path", "/ops/*", "--read"], ""),
    (["role", "grant", "ops", "--path", "/ops//x", "--read"], ""),
    (["role", "grant", "ops", "--path", "/ops/x"], ""),
    (["role", "get", "ops"], ""),
    (["role", "list"], ""),
    (["user", "grant", "dave", "--roles", "ops"], ""),
    (["user", "grant", "dave"], ""),
    (["user", "get", "dave"], ""),
    (["user", "list"], ""),
    (["auth", "enable"], ""),
    (["user", "add", "root:pw"], ""),
    (["auth", "enable"], ""),
    (["--username", "root:pw", "auth", "enable"], ""),
    (["user", "list"], ""),
    (["--username", "dave:newpw", "set", "/ops/a", "1"], ""),
    (["--username", "dave:pw", "set", "/ops/a", "1"], ""),
    (["--username", "dave:newpw", "get", "/ops/a"], ""),
    (["--username", "root:pw", "user", "revoke", "dave", "--roles", "ops"], ""),
    (["--username", "root:pw", "role", "revoke", "ops", "--path", "/ops/*", "--write"], ""),
    (["--username", "root:pw", "role", "get", "ops"], ""),
    (["--username", "root:pw", "role", "remove", "ops"], ""),
    (["--username", "root:pw", "role", "remove", "ops"], ""),
    (["--username", "root:pw", "user", "remove", "dave"], ""),
    (["--username", "root:pw", "user", "list"], ""),
    (["--username", "root:pw", "auth", "disable"], ""),
    (["auth", "disable"], ""),
]


def test_etcdctl_user_role_auth_verbs_match_etcd(
    both: tuple[ServerProcess, ServerProcess],
) -> None:
    diffs = []
    for argv, stdin in ETCDCTL_SESSION:
        outs = [run_etcdctl(s.client_url, argv, stdin=stdin) for s in both]
        if outs[0] != outs[1]:
            diffs.append((argv, outs[0], outs[1]))
    assert not diffs, "\n".join(f"{a}\n  etcd:   {e}\n  corral: {c}" for a, e, c in diffs)


def _status(
    url: str, method: str, path: str, body: str | None = None, cred: tuple[str, str] | None = None
) -> int:
    return _send(url, (method, path, body, cred))[0]


def _eventually(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_auth_reaches_every_member_and_survives_a_restart(tmp_path: Path) -> None:
    with start_cluster(corral_etcd_command(), tmp_path / "c", size=3, prefix="a") as members:
        first = members[0].client_url
        _eventually(
            lambda: _status(first, "PUT", "/v2/keys/warm", "value=1") in (200, 201),
            "the cluster never accepted a write",
        )
        root = json.dumps({"user": "root", "password": "pw"})
        assert _status(first, "PUT", "/v2/auth/users/root", root) == 201
        assert _status(first, "PUT", "/v2/auth/enable") == 200
        guest = json.dumps({"role": "guest", "revoke": {"kv": {"read": ["/*"], "write": ["/*"]}}})
        assert _status(first, "PUT", "/v2/auth/roles/guest", guest, ROOT) == 200
        for m in members[1:]:
            _eventually(
                lambda m=m: _status(m.client_url, "PUT", "/v2/keys/k", "value=x") == 401,
                f"{m.name} never refused an anonymous write",
            )
            assert _status(m.client_url, "PUT", "/v2/keys/k", "value=x", ROOT) in (200, 201)
            assert _status(m.client_url, "GET", "/v2/auth/users", None, ROOT) == 200
            assert _status(m.client_url, "GET", "/v2/auth/users") == 401
        # A member's first auth write makes its (already existing) dirs again: no harm done.
        other = members[1].client_url
        alice = json.dumps({"user": "alice", "password": "a"})
        assert _status(other, "PUT", "/v2/auth/users/alice", alice, ROOT) == 201
        restarted = members[2]
        restarted.stop()
        restarted.start()
        restarted.wait_ready()
        url = restarted.client_url
        _eventually(
            lambda: _status(url, "GET", "/v2/keys/k", None, ROOT) == 200,
            "the restarted member never served root",
        )
        assert _status(url, "GET", "/v2/keys/k") == 401
        assert _status(url, "GET", "/v2/keys/k", None, ("alice", "a")) == 401  # no role
        assert _status(url, "GET", "/v2/auth/users/alice", None, ROOT) == 200
        assert _send(url, ("GET", "/v2/auth/enable", None, None))[1] == '{"enabled":true}\n'


def test_corral_kv_auth_verbs_print_what_etcdctl_prints(
    both: tuple[ServerProcess, ServerProcess],
) -> None:
    """`corral kv` against corral answers each step as etcdctl against etcd (stdout, stderr
    and exit code; a password prompt's terminal noise on etcdctl's stderr left aside)."""
    from corral.client.testkit import run_corral_kv

    etcd, corral = both
    diffs = []
    for argv, stdin in ETCDCTL_SESSION:
        want = run_etcdctl(etcd.client_url, argv, stdin=stdin)
        got = run_corral_kv(corral.client_url, argv, stdin=stdin)
        if stdin:
            want = replace(
                want,
                stderr="".join(
                    line
                    for line in want.stderr.splitlines(keepends=True)
                    if not line.startswith("stty:")
                ),
            )
        if want != got:
            diffs.append((argv, want, got))
    assert not diffs, "\n".join(f"{a}\n  etcdctl:   {e}\n  corral kv: {c}" for a, e, c in diffs)
