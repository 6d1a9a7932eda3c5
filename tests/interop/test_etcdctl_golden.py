"""Golden comparison: the real etcdctl (v2) and `corral kv` run the same script.

Each tool gets a fresh member of the same kind (so etcd indexes line up) and the transcripts
(exit code, stdout, stderr of every command) must be equal once run-specific strings (ports,
member ids and names, expiration times) are replaced by placeholders. For the `corral`
server kind the real etcdctl's transcript against corral must also equal its transcript
against a real etcd 3.4: that is "etcdctl works against corral etcd, for every verb".
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.client import SyncClient
from corral.client.testkit import Outcome, normalize, run_corral_kv, run_etcdctl, server_cluster
from corral.testing.ports import free_port
from corral.testing.servers import ServerProcess

pytestmark = pytest.mark.interop

DEAD = "{dead}"

# (argv, stdin). Listings use --sort: unsorted order is a Go map's and differs per call.
SCRIPT: list[tuple[list[str], str]] = [
    (["get", "/foo"], ""),
    (["set", "/foo", "bar"], ""),
    (["get", "/foo"], ""),
    (["-o", "extended", "get", "/foo"], ""),
    (["-o", "json", "get", "/foo"], ""),
    (["set", "/foo", "baz"], ""),
    (["-o", "extended", "set", "/foo", "qq"], ""),
    (["-o", "json", "set", "/foo", "qq2"], ""),
    (["mk", "/foo", "x"], ""),
    (["mk", "/new", "v"], ""),
    (["mk", "--in-order", "/q", "job1"], ""),
    (["-o", "json", "mk", "--in-order", "/q", "job2"], ""),
    (["mk", "--in-order", "/q"], ""),
    (["mkdir", "/d"], ""),
    (["mkdir", "/d"], ""),
    (["-o", "extended", "mkdir", "/d2"], ""),
    (["setdir", "/d"], ""),
    (["-o", "json", "setdir", "/d3"], ""),
    (["update", "/nope", "x"], ""),
    (["update", "/foo", "up"], ""),
    (["-o", "json", "update", "/foo", "up2"], ""),
    (["updatedir", "/d"], ""),
    (["-o", "json", "updatedir", "/d3", "--ttl", "300"], ""),
    (["updatedir", "/nodir"], ""),
    (["set", "/d/a", "1"], ""),
    (["set", "/d/b/c", "2"], ""),
    (["set", "/d/_hidden", "h"], ""),
    (["ls", "--sort"], ""),
    (["ls", "--sort", "/d"], ""),
    (["ls", "--sort", "-r", "/d"], ""),
    (["ls", "--sort", "-p", "/d"], ""),
    (["ls", "--sort", "-r", "-p", "/"], ""),
    (["-o", "extended", "ls", "--sort", "/d"], ""),
    (["-o", "json", "ls", "--sort", "/d"], ""),
    (["ls", "/nope"], ""),
    (["ls", "/foo"], ""),
    (["ls", "-q", "/foo"], ""),
    (["get", "/d"], ""),
    (["get", "--quorum", "/d/a"], ""),
    (["get", "--sort", "/d/b/c"], ""),
    (["rm", "/d"], ""),
    (["rmdir", "/d"], ""),
    (["rm", "--dir", "/d/b"], ""),
    (["rm", "-r", "/d/b"], ""),
    (["rm", "/foo", "--with-value", "zz"], ""),
    (["rm", "/foo", "--with-index", "1"], ""),
    (["set", "/foo", "v", "--swap-with-value", "nope"], ""),
    (["set", "/foo", "v", "--swap-with-value", "up2"], ""),
    (["set", "/foo", "v2", "--swap-with-index", "1"], ""),
    (["-o", "extended", "rm", "/foo", "--with-value", "v"], ""),
    (["-o", "extended", "rm", "/new"], ""),
    (["set", "/w", "1"], ""),
    (["rmdir", "/w"], ""),
    (["-o", "json", "rm", "/d/a"], ""),
    (["-o", "json", "rm", "-r", "/d3"], ""),
    (["set", "/f", "file"], ""),
    (["set", "/f/x", "v"], ""),
    (["get", "/f/x/y"], ""),
    (["set", "--ttl", "100", "/ttl", "x"], ""),
    (["-o", "json", "get", "/ttl"], ""),
    (["-o", "extended", "update", "--ttl", "200", "/ttl", "y"], ""),
    (["get"], ""),
    (["set", "/x"], ""),
    (["set", "/stdin"], "from stdin"),
    (["set", "--", "/neg", "-x"], ""),
    (["get", "/neg"], ""),
    (["get", "/sp ace"], ""),
    (["set", "/sp ace", "v v"], ""),
    (["-o", "json", "get", "/sp ace"], ""),
    (["set", "/uni/ключ", "знач <&>"], ""),
    (["-o", "json", "get", "/uni/ключ"], ""),
    (["watch", "--after-index", "1", "/foo"], ""),
    (["-o", "extended", "watch", "-r", "--after-index", "1", "/d"], ""),
    (["-o", "json", "watch", "--after-index", "1", "/foo"], ""),
    (["watch"], ""),
    (["exec-watch", "/x"], ""),
    (["rm"], ""),
    (["member", "list"], ""),
    (["-o", "json", "member", "list"], ""),
    (["member", "add"], ""),
    (["member", "remove"], ""),
    (["member", "remove", "123"], ""),
    (["member", "update"], ""),
    (["cluster-health"], ""),
    (["--endpoints", DEAD, "get", "/foo"], ""),
    (["--no-sync", "--endpoints", DEAD, "get", "/foo"], ""),
    (["-o", "bogus", "get", "/neg"], ""),
    (["--debug", "get", "/neg"], ""),
    (["--debug", "--no-sync", "set", "--ttl", "5", "/dbg", "z"], ""),
    (["--debug", "--no-sync", "rm", "--with-value", "z", "/dbg"], ""),
    (["nosuchverb"], ""),
]

Runner = Callable[[str, list[str], str], Outcome]


def _replacements(member: ServerProcess, dead: str) -> dict[str, str]:
    with SyncClient(member.client_url) as c:
        ids = [m.id for m in c.members()]
    out = {member.client_url: "<CLIENT>", member.peer_url: "<PEER>",
           dead.removeprefix("http://"): "<DEAD>",
           member.name: "<NAME>"}
    out.update({i: "<ID>" for i in ids})
    return out


def transcript(run: Runner, member: ServerProcess) -> list[tuple[str, int, str, str]]:
    dead = f"http://127.0.0.1:{free_port()}"
    reps = _replacements(member, dead)
    lines = []
    for argv, stdin in SCRIPT:
        argv = [dead if a == DEAD else a for a in argv]
        o = run(member.client_url, argv, stdin)
        lines.append((normalize(" ".join(argv), reps), o.code,
                      normalize(o.stdout, reps), normalize(o.stderr, reps)))
    return lines


def _start(stack: contextlib.ExitStack, kind: str, base: Path) -> ServerProcess:
    try:
        return stack.enter_context(server_cluster(kind, base, size=1))[0]
    except (RuntimeError, TimeoutError) as exc:
        if kind == "corral":
            pytest.xfail(f"corral etcd does not start yet: {str(exc)[-300:]}")
        raise


def _diff(a: list[tuple[str, int, str, str]], b: list[tuple[str, int, str, str]]) -> list[str]:
    return [f"{x[0]!r}:\n  one: {x[1:]!r}\n  two: {y[1:]!r}" for x, y in zip(a, b, strict=True)
            if x != y]


@pytest.mark.parametrize("server_kind", ["etcd", "corral"])
def test_etcdctl_and_corral_kv_print_the_same(server_kind: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        a = _start(stack, server_kind, tmp_path / "a")
        b = _start(stack, server_kind, tmp_path / "b")
        by_etcdctl = transcript(run_etcdctl, a)
        by_kv = transcript(run_corral_kv, b)
        assert _diff(by_etcdctl, by_kv) == []
        if server_kind == "corral":
            ref = _start(stack, "etcd", tmp_path / "ref")
            assert _diff(transcript(run_etcdctl, ref), by_etcdctl) == []
    # The script exercises real answers, not only errors.
    assert any(code == 0 and "compareAndSwap" not in out and out.strip()
               for _, code, out, _ in by_kv)
    assert {code for _, code, _, _ in by_kv} >= {0, 1, 2, 3, 4}
