"""`corral etcd`: a drop-in for the `etcd` binary (v2 API; one member or a Raft cluster).

Arguments are passed through to `corral.kv.flags`, which parses them exactly as etcd 3.4 does
(Go flag syntax, `ETCD_*` variables, `--config-file`), so existing unit files, cloud-config
drop-ins and test helpers that start `etcd` can start `corral etcd` unchanged.

What runs follows etcd's `startEtcdOrProxyV2`: a data dir that holds `member/` restarts the
member and one that holds `proxy/` the proxy (`corral.kv.proxy`); an empty one starts a proxy
with `--proxy on|readonly`, else a member, first joining through `--discovery`
(`corral.kv.discovery`) when it is given, and falling back to a proxy when the discovery
cluster is full and `--discovery-fallback` is `proxy` (the default).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import urllib.parse
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import click

from corral.kv import evloop
from corral.kv.capnslog import log as _log
from corral.kv.cluster import ClusterError, member_id_for
from corral.kv.discovery import Discovery, DiscoveryError, Failure, urls_map_string
from corral.kv.flags import USAGE, EtcdConfig, FlagError, parse, version_text
from corral.kv.proxy import ProxyError
from corral.storage.snap import SnapshotError
from corral.storage.wal import WALError

__all__ = ["cli", "listen_addresses", "run"]

T = TypeVar("T")


def listen_addresses(urls: tuple[str, ...]) -> list[tuple[str, int]]:
    """(host, port) for each http:// listen URL; `localhost` binds 127.0.0.1."""
    out: list[tuple[str, int]] = []
    for u in urls:
        parsed = urllib.parse.urlsplit(u)
        try:
            port = parsed.port
        except ValueError:
            port = None
        if parsed.scheme != "http" or not parsed.hostname or port is None:
            raise FlagError(
                f"etcdmain: error verifying flags, invalid listen URL {u!r} "
                "(want http://HOST:PORT). See 'etcd --help'."
            )
        host = "127.0.0.1" if parsed.hostname == "localhost" else parsed.hostname
        out.append((host, port))
    return out


def _sync_interval(env: dict[str, str] | os._Environ[str]) -> float:
    """The TTL sweep interval in seconds (etcd: 500 ms), from CORRAL_ETCD_SYNC_INTERVAL."""
    raw = env.get("CORRAL_ETCD_SYNC_INTERVAL", "0.5")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.001 <= value <= 3600:
        raise FlagError(
            f"etcdmain: invalid CORRAL_ETCD_SYNC_INTERVAL {raw!r} "
            "(seconds between TTL sweeps, 0.001 to 3600)"
        )
    return value


def _data_dir_kind(data_dir: Path) -> str:
    """etcd's identifyDataDirOrDie: "member", "proxy" or "empty"."""
    try:
        names = set(os.listdir(data_dir))
    except FileNotFoundError:
        return "empty"
    except OSError as exc:
        raise ClusterError(f"error listing data dir: {data_dir} ({exc})") from None
    if {"member", "proxy"} <= names:
        raise ClusterError("invalid datadir. Both member and proxy directories exist.")
    return "member" if "member" in names else "proxy" if "proxy" in names else "empty"


class _JoinFailed(Exception):
    """Joining through the discovery service failed (etcd's DiscoveryError, op "join")."""

    def __init__(self, err: DiscoveryError) -> None:
        super().__init__(f"failed to join discovery cluster ({err})")
        self.err = err


async def _until_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """`work`'s result, or None when SIGTERM/SIGINT comes first (work is cancelled)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def _serve(config: EtcdConfig) -> None:
    v = config.values
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    which = _data_dir_kind(Path(config.data_dir))
    if which != "empty":
        _log(
            "N",
            f"etcdmain: the server is already initialized as {which} before, "
            f"starting as etcd {which}...",
        )
    if which == "proxy" or (which == "empty" and v.get("proxy", "off") != "off"):
        await _serve_proxy(config, stop)
        return
    durl = str(v.get("discovery", ""))
    initial, token = config.initial_cluster, config.initial_cluster_token
    if durl:
        token = durl  # etcd: with discovery, the cluster token is the discovery URL
        if which == "member":
            _log(
                "W",
                "etcdserver: discovery token ignored since a cluster has already been "
                f"initialized. Valid log found at {config.data_dir}/member",
            )
        else:
            peers = config.initial_advertise_peer_urls
            try:
                async with Discovery(
                    durl, member_id_for(peers, durl), str(v.get("discovery-proxy", ""))
                ) as d:
                    found = await _until_stopped(
                        d.join_cluster(urls_map_string(config.name, peers)), stop
                    )
            except DiscoveryError as err:
                if err.failure is Failure.FULL_CLUSTER and v.get("discovery-fallback") != "exit":
                    _log("N", "etcdmain: discovery cluster full, falling back to proxy")
                    await _serve_proxy(config, stop)
                    return
                raise _JoinFailed(err) from None
            if found is None:
                return
            initial = found
    await _serve_member(config, initial, token, stop)


async def _serve_proxy(config: EtcdConfig, stop: asyncio.Event) -> None:
    from aiohttp import web

    from corral.kv.cluster import parse_initial_cluster
    from corral.kv.go_http import app_runner
    from corral.kv.proxy import Proxy, ProxySettings, read_cluster_file

    v = config.values
    _log("N", "etcdmain: proxy: this proxy supports v2 API only!")
    data_dir = Path(config.data_dir)
    (data_dir / "proxy").mkdir(parents=True, exist_ok=True)
    cluster_file = data_dir / "proxy" / "cluster"
    durl = str(v.get("discovery", ""))
    peers = read_cluster_file(cluster_file)
    if peers is not None:
        if durl:
            _log(
                "W",
                "etcdmain: discovery token ignored since the proxy has already been "
                f'initialized. Valid cluster file found at "{cluster_file}"',
            )
        _log(
            "I",
            f'etcdmain: proxy: using peer urls [{" ".join(peers)}] from cluster file "{cluster_file}"',
        )
    else:
        text = config.initial_cluster
        if durl:
            try:
                async with Discovery(durl, 0, str(v.get("discovery-proxy", ""))) as d:
                    got = await _until_stopped(d.get_cluster(), stop)
            except DiscoveryError as err:
                raise ProxyError(str(err)) from None
            if got is None:
                return
            text = got
        peers = sorted(url for _, url in parse_initial_cluster(text))
        _log("I", f"etcdmain: proxy: using peer urls [{' '.join(peers)}] ")
    proxy = Proxy(
        ProxySettings(
            data_dir=data_dir,
            peer_urls=tuple(peers),
            readonly=v.get("proxy") == "readonly",
            failure_wait_ms=int(v.get("proxy-failure-wait", 5000)),
            refresh_interval_ms=int(v.get("proxy-refresh-interval", 30000)),
            dial_timeout_ms=int(v.get("proxy-dial-timeout", 1000)),
            write_timeout_ms=int(v.get("proxy-write-timeout", 5000)),
            read_timeout_ms=int(v.get("proxy-read-timeout", 0)),
        )
    )
    await proxy.start()
    runner = app_runner(proxy.make_app(), shutdown_timeout=1.0)
    try:
        await runner.setup()
        for url, (host, port) in zip(
            config.listen_client_urls, listen_addresses(config.listen_client_urls), strict=True
        ):
            await web.TCPSite(runner, host, port, reuse_address=True, backlog=1024).start()
            _log("I", f'etcdmain: v2 proxy started listening on client requests on "{url}"')
        await stop.wait()
    finally:
        _log("N", "etcdmain: received terminated signal, shutting down...")
        await runner.cleanup()
        await proxy.stop()


async def _serve_member(
    config: EtcdConfig, initial_cluster: str, token: str, stop: asyncio.Event
) -> None:
    from aiohttp import web

    from corral.kv.cluster import ClusterConfig, RaftMember, parse_initial_cluster
    from corral.kv.http_api import serve

    v = config.values
    member = RaftMember(
        ClusterConfig(
            name=config.name,
            data_dir=Path(config.data_dir),
            client_urls=config.advertise_client_urls,
            peer_urls=config.initial_advertise_peer_urls,
            initial_cluster=parse_initial_cluster(initial_cluster),
            initial_cluster_state=config.initial_cluster_state,
            cluster_token=token,
            heartbeat_ms=int(v.get("heartbeat-interval", 100)),
            election_ms=int(v.get("election-timeout", 1000)),
            snapshot_count=int(v.get("snapshot-count", 10000)),
            max_snapshots=int(v.get("max-snapshots", 5)),
            max_wals=int(v.get("max-wals", 5)),
            sync_interval=_sync_interval(os.environ),
            wal_dir=Path(config.wal_dir) if config.wal_dir else None,
            force_new_cluster=bool(v.get("force-new-cluster", False)),
        )
    )
    await member.start()
    # Peers first: the member publishes itself through Raft, which needs its peer listener;
    # clients only once it has (etcd's ReadyNotify), so the first answer has a settled index.
    peer_app = web.Application()
    peer_app.add_routes(member.peer_routes())
    peer_runner = web.AppRunner(
        peer_app, handle_signals=False, access_log=None, shutdown_timeout=1.0
    )
    await peer_runner.setup()
    for host, port in listen_addresses(config.listen_peer_urls):
        await web.TCPSite(peer_runner, host, port, reuse_address=True).start()
    runner: web.AppRunner | None = None
    try:
        ready = asyncio.ensure_future(member.ready())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            ready.result()
            runner = await serve(member, listen_addresses(config.listen_client_urls))
            _log(
                "I",
                f"etcdserver: corral member {member.id:x} serving client requests on "
                f"{', '.join(config.listen_client_urls)}",
            )
            await stop.wait()
        else:
            ready.cancel()
    finally:
        _log("N", "etcdmain: received terminated signal, shutting down...")
        if runner is not None:
            await runner.cleanup()
        await member.stop()  # closes the peer streams, so the peer listener stops at once
        await peer_runner.cleanup()


def _join_failed(failed: _JoinFailed, config: EtcdConfig) -> None:
    """etcd's explanation of a failed discovery join (etcdmain/etcd.go)."""
    durl = config.values.get("discovery", "")
    if failed.err.failure is Failure.DUPLICATE_ID:
        _log(
            "E",
            f"etcdmain: member {config.name!r} has previously registered with discovery "
            f"service token ({durl}).".replace("'", '"'),
        )
        _log(
            "E",
            "etcdmain: But etcd could not find valid cluster configuration in the given "
            f"data dir ({config.data_dir}).",
        )
        _log(
            "I",
            "etcdmain: Please check the given data dir path if the previous bootstrap succeeded",
        )
        _log("I", "etcdmain: or use a new discovery token if the previous bootstrap failed.")
    elif failed.err.failure is Failure.DUPLICATE_NAME:
        _log(
            "E",
            "etcdmain: member with duplicated name has registered with discovery service "
            f"token({durl}).",
        )
        _log("E", "etcdmain: please check (cURL) the discovery token for more information.")
        _log(
            "E",
            "etcdmain: please do not reuse the discovery token and generate a new one to "
            "bootstrap the cluster.",
        )
    else:
        _log("E", f"etcdmain: {failed}")
        _log(
            "I",
            f"etcdmain: discovery token {durl} was used, but failed to bootstrap the cluster.",
        )
        _log("I", "etcdmain: please generate a new discovery token and try to bootstrap again.")


def run(argv: list[str], env: dict[str, str]) -> int:
    """The whole command; returns the exit code."""
    try:
        parsed = parse(argv, env)
    except FlagError as err:
        if err.usage:
            print(err.message, file=sys.stderr)
            print(USAGE, file=sys.stderr, end="")
        else:
            _log("C" if "conflicting" in err.message else "E", err.message)
        return err.exit_code
    for warning in parsed.warnings:
        _log("W", warning)
    if parsed.action == "version":
        print(version_text(), end="")
        return 0
    if parsed.action == "help":
        print(USAGE, end="")
        return 0
    try:
        listen_addresses(parsed.config.listen_client_urls)
        _sync_interval(env)
        evloop.run(_serve(parsed.config))
    except FlagError as err:
        _log("E", err.message)
        return err.exit_code
    except _JoinFailed as err:
        _join_failed(err, parsed.config)
        return 1
    except (ClusterError, WALError, SnapshotError, ProxyError, DiscoveryError) as err:
        _log("C", f"etcdmain: {err}")
        return 1
    except OSError as err:
        _log("C", f"etcdmain: listen failed: {err}")
        return 1
    return 0


@click.command(
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "help_option_names": [],
    },
    add_help_option=False,
)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """An etcd 3.4 drop-in (v2 API). Takes etcd's own flags: see `corral etcd --help`."""
    with contextlib.suppress(BrokenPipeError):
        code = run(list(ctx.args), dict(os.environ))
    ctx.exit(code)
