"""`corral kv`: etcdctl's v2 verbs, flags, output formats, error lines and exit codes.

Every verb is a thin wrapper over `corral.client.SyncClient`; what is printed, and where,
follows etcdctl 3.4 (`ETCDCTL_API=2`) byte for byte for the same server answers:

* results: `-o simple` prints the value (`PrevNode.Value: v` for a delete), `-o extended`
  the RFC-2822-style block (`Key:`, `Created-Index:` … `Index:`), `-o json` the Go client's
  JSON of the response; any other format prints `Unsupported output format: X` on stderr;
* errors go to stderr as `Error:  <code>: <message> (<cause>) [<index>]`;
* exit codes: 0 ok, 1 bad arguments or "is a directory", 2 the initial endpoint sync could
  not connect, 3 unknown verb, 4 the server (or the cluster, with `--no-sync`) failed,
  5 cluster unhealthy.

Known quirks kept on purpose: `mkdir`/`setdir`/`updatedir` print nothing in the simple
format; `exec-watch` without `--` takes the *last* argument as the key (etcdctl 3.4 drops
the `--` separator before looking for it, so there `exec-watch CMD… KEY` is the form that
works; `corral kv` also accepts `exec-watch KEY -- CMD…`). `backup` copies a stopped
corral member's data dir (`corral.kv.backup`); it cannot read an etcd member's files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import click

from corral.client import (
    ClientError,
    ClusterUnavailable,
    EtcdError,
    KeyResult,
    Node,
    OutcomeUnknown,
    SyncClient,
    Timeouts,
    UsageError,
)
from corral.client.protocol import Request

__all__ = ["cli"]

EXIT_SUCCESS = 0
EXIT_BAD_ARGS = 1
EXIT_BAD_CONNECTION = 2
EXIT_SERVER_ERROR = 4
EXIT_CLUSTER_NOT_HEALTHY = 5

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379,http://127.0.0.1:4001"

# --------------------------------------------------------------------------- formatting


def _go_json(obj: Any) -> str:
    """JSON as Go's encoding/json writes it (compact, HTML-safe escapes)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def node_go_dict(node: Node | None) -> dict[str, Any] | None:
    """A node the way the Go v2 client's `Node` struct marshals it (field order kept)."""
    if node is None:
        return None
    out: dict[str, Any] = {"key": node.key}
    if node.dir:
        out["dir"] = True
    out["value"] = node.value or ""
    out["nodes"] = [node_go_dict(n) for n in node.nodes] if node.nodes else None
    out["createdIndex"] = node.created_index
    out["modifiedIndex"] = node.modified_index
    if node.expiration:
        out["expiration"] = node.expiration
    if node.ttl:
        out["ttl"] = node.ttl
    return out


def format_result(result: KeyResult, fmt: str) -> tuple[str, str]:
    """(stdout text, stderr text) that etcdctl prints for a key response."""
    node = result.node or Node(key="")
    if fmt == "simple":
        if result.action != "delete":
            return f"{node.value or ''}\n", ""
        prev = result.prev_node.value if result.prev_node else ""
        return f"PrevNode.Value: {prev or ''}\n", ""
    if fmt == "extended":
        lines = [f"Key: {node.key}", f"Created-Index: {node.created_index}",
                 f"Modified-Index: {node.modified_index}"]
        if result.prev_node is not None:
            lines.append(f"PrevNode.Value: {result.prev_node.value or ''}")
        lines += [f"TTL: {node.ttl or 0}", f"Index: {result.etcd_index}"]
        if result.action != "delete":
            lines += ["", node.value or ""]
        return "\n".join(lines) + "\n", ""
    if fmt == "json":
        body = {"action": result.action, "node": node_go_dict(result.node),
                "prevNode": node_go_dict(result.prev_node)}
        return _go_json(body) + "\n", ""
    return "", f"Unsupported output format: {fmt}\n"


def _emit(result: KeyResult, fmt: str) -> None:
    out, err = format_result(result, fmt)
    sys.stdout.write(out)
    sys.stderr.write(err)
    sys.stdout.flush()


def _die(code: int, message: str) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.write(message if message.endswith("\n") else message + "\n")
    sys.exit(code)


def _handle_error(code: int, exc: BaseException) -> NoReturn:
    """etcdctl's handleError: `Error:  <err>` (plus the per-endpoint detail) and exit."""
    text = f"Error:  {exc}\n"
    if isinstance(exc, ClusterUnavailable):
        text += exc.detail() + "\n"
    _die(code, text)


# --------------------------------------------------------------------------- settings


_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go duration (`2s`, `500ms`, `1m30s`) in seconds; a bare number means seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise click.BadParameter(f"invalid duration {text!r} (use e.g. 2s, 500ms)")
    return total


class Settings:
    """The global flags, resolved once per invocation."""

    def __init__(self, endpoints: str, no_sync: bool, output: str, debug: bool,
                 timeout: float, total_timeout: float,
                 auth: tuple[str, str] | None = None) -> None:
        self.auth = auth
        self.endpoints = endpoints
        self.no_sync = no_sync
        self.output = output
        self.debug = debug
        self.timeout = timeout
        self.total_timeout = total_timeout

    def client(self, sync: bool = True) -> SyncClient:
        """etcdctl's mustNewClient: build, then sync endpoints from /v2/members."""
        try:
            connect = min(30.0, self.total_timeout) if self.total_timeout else 30.0
            c = SyncClient(self.endpoints.split(","),
                           Timeouts(connect=connect, request=self.timeout), auth=self.auth)
        except UsageError as exc:
            _die(EXIT_BAD_ARGS, str(exc))
        if self.debug:
            c.on_request = _curl_debug
        if sync and not self.no_sync:
            if self.debug:
                _debug(f"start to sync cluster using endpoints({','.join(c.pool.endpoints)})")
            try:
                c.sync_endpoints()
            except ClusterUnavailable as exc:
                if exc.connection_only:
                    _handle_error(EXIT_BAD_CONNECTION, exc)
            except ClientError:
                pass  # etcdctl goes on with the endpoints it was given
            if self.debug:
                _debug(f"got endpoints({','.join(c.pool.endpoints)}) after sync")
        if self.debug:
            _debug(f"Cluster-Endpoints: {', '.join(c.pool.endpoints)}")
        return c


def _debug(line: str) -> None:
    sys.stderr.write(line + "\n")


def _curl_debug(endpoint: str, request: Request) -> None:
    line = f"cURL Command: curl -X {request.method} {endpoint}{request.target}"
    if request.body is not None:
        line += " -d " + json.dumps(request.body.decode())
    _debug(line)


def _settings() -> Settings:
    obj = click.get_current_context().find_object(Settings)
    assert obj is not None
    return obj


# --------------------------------------------------------------------------- click plumbing


class _BadUsage(click.UsageError):
    exit_code = EXIT_BAD_ARGS


class _Command(click.Command):
    """Usage errors exit 1, as etcdctl's do."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _BadUsage(exc.message, exc.ctx) from exc


class _Group(click.Group):
    command_class = _Command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _BadUsage(exc.message, exc.ctx) from exc

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            _die(3, f"No help topic for '{name}'")
        return super().resolve_command(ctx, args)


_Group.group_class = _Group


def _run(fn: Callable[[], None]) -> None:
    """Run a verb's body, turning client errors into etcdctl's error lines and exit codes."""
    try:
        fn()
    except EtcdError as exc:
        _handle_error(EXIT_SERVER_ERROR, exc)
    except (ClusterUnavailable, OutcomeUnknown) as exc:
        _handle_error(EXIT_SERVER_ERROR, exc)
    except UsageError as exc:
        _handle_error(EXIT_BAD_ARGS, exc)
    except ClientError as exc:
        _handle_error(EXIT_SERVER_ERROR, exc)


def _arg_or_stdin(args: tuple[str, ...], i: int) -> str | None:
    if i < len(args):
        return args[i]
    if sys.stdin is None or sys.stdin.isatty():
        return None
    data = sys.stdin.read()
    return data or None


def _key(args: tuple[str, ...]) -> str:
    if not args:
        _die(EXIT_BAD_ARGS, "Error:  key required")
    return args[0]


def _value(args: tuple[str, ...]) -> str:
    value = _arg_or_stdin(args, 1)
    if value is None:
        _die(EXIT_BAD_ARGS, "Error:  value required")
    return value


def _ttl(ttl: int) -> int | None:
    # etcdctl sends a TTL only when it is positive.
    return ttl if ttl > 0 else None


# --------------------------------------------------------------------------- the group


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="print the cURL command of every request")
@click.option("--no-sync", is_flag=True,
              help="don't synchronize cluster information before sending request")
@click.option("--output", "-o", default="simple", show_default=True,
              help="output format: simple, extended or json")
@click.option("--endpoints", default="",
              help="comma-separated client URLs [env ETCDCTL_ENDPOINTS; "
                   f"default {DEFAULT_ENDPOINTS}]")
@click.option("--endpoint", default="", hidden=True, help="deprecated: --endpoints")
@click.option("--peers", "-C", default="", hidden=True, help="deprecated: --endpoints")
@click.option("--username", "-u", default="",
              help="user[:password] for v2 auth (prompts for a missing password) "
                   "[env ETCDCTL_USERNAME]")
@click.option("--timeout", default="2s", show_default=True,
              help="per-request timeout (Go duration, e.g. 2s)")
@click.option("--total-timeout", default="5s", show_default=True,
              help="connect timeout bound for the command (Go duration)")
@click.pass_context
def cli(ctx: click.Context, debug: bool, no_sync: bool, output: str, endpoints: str,
        endpoint: str, peers: str, username: str, timeout: str, total_timeout: str) -> None:
    """etcdctl (v2) for corral and etcd: get, set, watch … keys over the v2 API."""
    eps = (endpoints or os.environ.get("ETCDCTL_ENDPOINTS", "") or endpoint
           or os.environ.get("ETCDCTL_ENDPOINT", "") or peers
           or os.environ.get("ETCDCTL_PEERS", "") or DEFAULT_ENDPOINTS)
    user = username or os.environ.get("ETCDCTL_USERNAME", "")
    auth: tuple[str, str] | None = None
    if user:
        name, colon, password = user.partition(":")
        if not colon:
            password = click.prompt("Password", hide_input=True, err=True)
        auth = (name, password)
    ctx.obj = Settings(eps, no_sync, output, debug, parse_duration(timeout),
                       parse_duration(total_timeout), auth)


_ARGS = click.argument("args", nargs=-1)
_TTL = click.option("--ttl", type=int, default=0, help="key time-to-live in seconds")


@cli.command()
@_ARGS
@click.option("--sort", is_flag=True, help="returns result in sorted order")
@click.option("--quorum", "-q", is_flag=True, help="require quorum for get request")
def get(args: tuple[str, ...], sort: bool, quorum: bool) -> None:
    """retrieve the value of a key"""
    s = _settings()
    key = _key(args)

    def body() -> None:
        r = s.client().get(key, sorted=sort, quorum=quorum)
        if r.node is not None and r.node.dir:
            _die(EXIT_BAD_ARGS, f"{r.node.key}: is a directory")
        _emit(r, s.output)

    _run(body)


@cli.command(name="set")
@_ARGS
@_TTL
@click.option("--swap-with-value", default="", help="previous value")
@click.option("--swap-with-index", type=int, default=0, help="previous index")
def set_(args: tuple[str, ...], ttl: int, swap_with_value: str, swap_with_index: int) -> None:
    """set the value of a key"""
    s = _settings()
    key = _key(args)
    value = _value(args)
    _run(lambda: _emit(s.client().set(key, value, ttl=_ttl(ttl),
                                      prev_value=swap_with_value or None,
                                      prev_index=swap_with_index or None), s.output))


@cli.command()
@_ARGS
@click.option("--in-order", is_flag=True, help="create in-order key under directory <key>")
@_TTL
def mk(args: tuple[str, ...], in_order: bool, ttl: int) -> None:
    """make a new key with a given value"""
    s = _settings()
    key = _key(args)
    value = _value(args)

    def body() -> None:
        c = s.client()
        r = c.append(key, value, ttl=_ttl(ttl)) if in_order else c.create(key, value,
                                                                         ttl=_ttl(ttl))
        _emit(r, s.output)

    _run(body)


def _dir_verb(prev_exist: bool | None) -> Callable[[tuple[str, ...], int], None]:
    def verb(args: tuple[str, ...], ttl: int) -> None:
        s = _settings()
        key = _key(args)

        def body() -> None:
            c = s.client()
            if prev_exist is False:
                r = c.mkdir(key, ttl=_ttl(ttl))
            elif prev_exist is True:
                r = c.updatedir(key, ttl=_ttl(ttl))
            else:
                r = c.setdir(key, ttl=_ttl(ttl))
            if s.output != "simple":
                _emit(r, s.output)

        _run(body)

    return verb


cli.command(name="mkdir", help="make a new directory")(_ARGS(_TTL(_dir_verb(False))))
cli.command(name="setdir", help="create a new directory or update an existing directory TTL")(
    _ARGS(_TTL(_dir_verb(None))))
cli.command(name="updatedir", help="update an existing directory")(
    _ARGS(_TTL(_dir_verb(True))))


@cli.command()
@_ARGS
@_TTL
def update(args: tuple[str, ...], ttl: int) -> None:
    """update an existing key with a given value"""
    s = _settings()
    key = _key(args)
    value = _value(args)
    _run(lambda: _emit(s.client().update(key, value, ttl=_ttl(ttl)), s.output))


@cli.command()
@_ARGS
@click.option("--dir", "dir_", is_flag=True,
              help="removes the key if it is an empty directory or a key-value pair")
@click.option("--recursive", "-r", is_flag=True,
              help="removes the key and all child keys(if it is a directory)")
@click.option("--with-value", default="", help="previous value")
@click.option("--with-index", type=int, default=0, help="previous index")
def rm(args: tuple[str, ...], dir_: bool, recursive: bool, with_value: str,
       with_index: int) -> None:
    """remove a key or a directory"""
    s = _settings()
    key = _key(args)

    def body() -> None:
        c = s.client()
        if with_value or with_index:
            r = c.compare_and_delete(key, prev_value=with_value or None,
                                     prev_index=with_index or None)
        else:
            r = c.delete(key, recursive=recursive, dir=dir_)
        if r.node is None or not r.node.dir or s.output != "simple":
            _emit(r, s.output)

    _run(body)


@cli.command()
@_ARGS
def rmdir(args: tuple[str, ...]) -> None:
    """removes the key if it is an empty directory or a key-value pair"""
    s = _settings()
    key = _key(args)

    def body() -> None:
        r = s.client().delete(key, dir=True)
        if r.node is None or not r.node.dir or s.output != "simple":
            _emit(r, s.output)

    _run(body)


@cli.command()
@_ARGS
@click.option("--sort", is_flag=True, help="returns result in sorted order")
@click.option("--recursive", "-r", is_flag=True,
              help="returns all key names recursively for the given path")
@click.option("-p", "slash", is_flag=True, help="append slash (/) to directories")
@click.option("--quorum", "-q", is_flag=True, help="require quorum for get request")
def ls(args: tuple[str, ...], sort: bool, recursive: bool, slash: bool, quorum: bool) -> None:
    """retrieve a directory"""
    s = _settings()
    key = args[0] if args else "/"

    def body() -> None:
        r = s.client().get(key, sorted=sort, recursive=recursive, quorum=quorum)
        if s.output != "simple":
            _emit(r, s.output)
            return
        node = r.node or Node(key="")
        lines = [] if node.dir else [node.key]
        lines += [n.key + ("/" if n.dir and slash else "") for n in node.walk()]
        sys.stdout.write("".join(line + "\n" for line in lines))

    _run(body)


def _watch_loop(s: Settings, key: str, wait_index: int | None, recursive: bool,
                on_event: Callable[[KeyResult], bool]) -> None:
    """etcdctl's watcher: re-watch from modifiedIndex+1 until `on_event` says stop."""
    c = s.client()
    index = wait_index
    while True:
        r = c.watch_once(key, index=index, recursive=recursive)
        if r is None:
            continue  # the server closed the watch: re-watch from the same index
        if r.node is not None:
            index = r.node.modified_index + 1
        if not on_event(r):
            return


@cli.command()
@_ARGS
@click.option("--forever", "-f", is_flag=True, help="forever watch a key until CTRL+C")
@click.option("--after-index", type=int, default=0, help="watch after the given index")
@click.option("--recursive", "-r", is_flag=True,
              help="returns all values for key and child keys")
def watch(args: tuple[str, ...], forever: bool, after_index: int, recursive: bool) -> None:
    """watch a key for changes"""
    s = _settings()
    key = _key(args)

    def on_event(r: KeyResult) -> bool:
        if r.node is not None and r.node.dir:
            return True
        if recursive:
            sys.stdout.write(f"[{r.action}] {r.node.key if r.node else ''}\n")
        _emit(r, s.output)
        return forever

    _run_watch(lambda: _watch_loop(s, key, after_index + 1 if after_index > 0 else None,
                                   recursive, on_event))


def _run_watch(fn: Callable[[], None]) -> None:
    try:
        _run(fn)
    except KeyboardInterrupt:
        sys.exit(EXIT_SUCCESS)


@cli.command(name="exec-watch", context_settings={"ignore_unknown_options": True,
                                                  "allow_interspersed_args": False})
@click.option("--after-index", type=int, default=0, help="watch after the given index")
@click.option("--recursive", "-r", is_flag=True, help="watch all values for key and child keys")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def exec_watch(after_index: int, recursive: bool, args: tuple[str, ...]) -> None:
    """watch a key for changes and exec an executable: exec-watch KEY [--] CMD [ARGS…]"""
    s = _settings()
    argv = list(args)
    if len(argv) < 2:
        _die(EXIT_BAD_ARGS, "Error:  key and command to exec required")
    if argv[1] == "--":
        key, command = argv[0], argv[2:]  # KEY -- CMD…, the documented form
    else:
        key, command = argv[-1], argv[:-1]  # CMD… KEY: what etcdctl 3.4 does without --
    if not command:
        _die(EXIT_BAD_ARGS, "Error:  key and command to exec required")
    index = after_index + 1 if after_index > 0 else None

    def on_event(r: KeyResult) -> bool:
        node = r.node or Node(key="")
        if node.dir:
            sys.stderr.write(f"Ignored dir {node.key} change\n")
            return True
        env = dict(os.environ, ETCD_WATCH_ACTION=r.action,
                   ETCD_WATCH_MODIFIED_INDEX=str(node.modified_index),
                   ETCD_WATCH_KEY=node.key, ETCD_WATCH_VALUE=node.value or "")
        sys.stdout.flush()
        try:
            subprocess.run(command, env=env, check=False)
        except OSError as exc:
            _die(EXIT_BAD_ARGS, str(exc))
        return True

    _run_watch(lambda: _watch_loop(s, key, index, recursive, on_event))


# --------------------------------------------------------------------------- cluster verbs


@cli.group(cls=_Group)
def member() -> None:
    """member add, remove and list subcommands"""


@member.command(name="list")
@_ARGS
def member_list(args: tuple[str, ...]) -> None:
    """enumerate existing cluster members"""
    if args:
        _die(EXIT_BAD_ARGS, "No arguments accepted")
    c = _settings().client()
    try:
        members = c.members()
    except ClientError as exc:
        _die(EXIT_BAD_ARGS, str(exc))
    try:
        leader = c.leader()
    except ClientError as exc:
        _die(EXIT_BAD_ARGS, f"Failed to get leader:  {exc}")
    for m in members:
        if not m.name:
            sys.stdout.write(f"{m.id}[unstarted]: peerURLs={','.join(m.peer_urls)}\n")
        else:
            is_leader = "true" if m.id == leader.id else "false"
            sys.stdout.write(f"{m.id}: name={m.name} peerURLs={','.join(m.peer_urls)} "
                             f"clientURLs={','.join(m.client_urls)} isLeader={is_leader}\n")


def _go_quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


@member.command(name="add")
@_ARGS
def member_add(args: tuple[str, ...]) -> None:
    """add a new member to the etcd cluster: add NAME PEER_URL"""
    if len(args) != 2:
        _die(EXIT_BAD_ARGS, "Provide a name and a single member peerURL")
    name, url = args
    c = _settings().client()
    try:
        added = c.add_member([url])
        sys.stdout.write(f"Added member named {name} with ID {added.id} to cluster\n")
        members = c.members()
    except ClientError as exc:
        _die(EXIT_BAD_ARGS, str(exc))
    conf = [f"{name if m.id == added.id else m.name}={u}" for m in members for u in m.peer_urls]
    sys.stdout.write(f"\nETCD_NAME={_go_quote(name)}\n"
                     f"ETCD_INITIAL_CLUSTER={_go_quote(','.join(conf))}\n"
                     'ETCD_INITIAL_CLUSTER_STATE="existing"\n')


@member.command(name="remove")
@_ARGS
def member_remove(args: tuple[str, ...]) -> None:
    """remove an existing member from the etcd cluster: remove MEMBER_ID"""
    if len(args) != 1:
        _die(EXIT_BAD_ARGS, "Provide a single member ID")
    mid = args[0]
    c = _settings().client()
    try:
        members = c.members()
    except ClientError as exc:
        _die(EXIT_BAD_ARGS, f"Error while verifying ID against known members: {exc}")
    found = False
    for m in members:
        if m.id == mid:
            found = True
        if m.name == mid:
            sys.stderr.write(f"Found a member named {m.name}; if this is correct, please use "
                             f"its ID, eg:\n\tcorral kv member remove {m.id}\n\n")
    if not found:
        _die(EXIT_BAD_ARGS, f"Couldn't find a member in the cluster with an ID of {mid}.")
    try:
        c.remove_member(mid)
    except ClientError as exc:
        _die(EXIT_BAD_ARGS, f"Received an error trying to remove member {mid}: {exc}")
    sys.stdout.write(f"Removed member {mid} from cluster\n")


@member.command(name="update")
@_ARGS
def member_update(args: tuple[str, ...]) -> None:
    """update an existing member: update MEMBER_ID PEER_URL[,PEER_URL…]"""
    if len(args) != 2:
        _die(EXIT_BAD_ARGS, "Provide an ID and a list of comma separated peerURL "
                            "(0xabcd http://example.com,http://example1.com)")
    mid, urls = args
    try:
        _settings().client().update_member(mid, urls.split(","))
    except ClientError as exc:
        _die(EXIT_BAD_ARGS, str(exc))
    sys.stdout.write(f"Updated member with ID {mid} in cluster\n")


@cli.command(name="cluster-health")
@click.option("--forever", "-f", is_flag=True,
              help="forever check the health every 10 second until CTRL+C")
@click.option("--interval", type=float, default=10.0, hidden=True,
              help="seconds between checks with --forever")
def cluster_health(forever: bool, interval: float) -> None:
    """check the health of the etcd cluster"""
    c = _settings().client(sync=False)
    try:
        members = c.members()
    except ClientError as exc:
        sys.stdout.write("cluster may be unhealthy: failed to list members\n")
        _handle_error(EXIT_SERVER_ERROR, exc)
    while True:
        healthy = False
        for m in members:
            if not m.client_urls:
                sys.stdout.write(f"member {m.id} is unreachable: "
                                 "no available published client urls\n")
                continue
            checked = False
            for url in m.client_urls:
                ok = _health_of(c, url)
                if ok is None:
                    sys.stdout.write(f"failed to check the health of member {m.id} on {url}\n")
                    continue
                checked = True
                if ok:
                    healthy = True
                    sys.stdout.write(f"member {m.id} is healthy: got healthy result from {url}\n")
                else:
                    sys.stdout.write(
                        f"member {m.id} is unhealthy: got unhealthy result from {url}\n")
                break
            if not checked:
                sys.stdout.write(f"member {m.id} is unreachable: "
                                 f"[{' '.join(m.client_urls)}] are all unreachable\n")
        sys.stdout.write("cluster is healthy\n" if healthy else "cluster is unhealthy\n")
        if not forever:
            sys.exit(EXIT_SUCCESS if healthy else EXIT_CLUSTER_NOT_HEALTHY)
        sys.stdout.write("\nnext check after 10 second...\n\n")
        sys.stdout.flush()
        time.sleep(interval)


def _health_of(c: SyncClient, url: str) -> bool | None:
    """True/False from the member's /health; None if it could not be asked."""
    try:
        return c.probe_health(url)
    except UsageError:
        return None


@cli.command()
@click.option("--data-dir", default="", help="Path to the etcd data dir")
@click.option("--wal-dir", default="", help="Path to the etcd wal dir")
@click.option("--backup-dir", default="", help="Path to the backup dir")
@click.option("--backup-wal-dir", default="", help="Path to the backup wal dir")
@click.option("--with-v3", is_flag=True, help="Backup v3 backend data")
def backup(
    data_dir: str, wal_dir: str, backup_dir: str, backup_wal_dir: str, with_v3: bool
) -> None:
    """backup an etcd directory"""
    from datetime import datetime
    from pathlib import Path

    from corral.kv.backup import BackupError
    from corral.kv.backup import backup as make_backup

    def log(line: str) -> None:
        # etcdctl's log lines: "2019-12-04 10:25:16.113237 I | ignoring EntryConfChange …"
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")
        sys.stderr.write(f"{stamp} I | {line}\n")

    if not data_dir or not backup_dir:
        _die(EXIT_BAD_ARGS, "Error:  backup needs --data-dir and --backup-dir")
    if with_v3:
        log("corral members keep no v3 backend: --with-v3 has nothing more to copy")
    try:
        make_backup(
            Path(data_dir),
            Path(backup_dir),
            wal_dir=Path(wal_dir) if wal_dir else None,
            backup_wal_dir=Path(backup_wal_dir) if backup_wal_dir else None,
            now_ms=time.time_ns() // 1_000_000,
            log=log,
        )
    except BackupError as exc:
        _die(EXIT_BAD_ARGS, f"Error:  {exc}")
    except OSError as exc:
        _die(EXIT_BAD_ARGS, f"Error:  {exc.filename or ''}: {exc.strerror}")


from corral.cli import kv_auth as _kv_auth  # noqa: E402, F401 - adds the user, role and auth verbs
