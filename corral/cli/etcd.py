"""`corral etcd`: a drop-in for the `etcd` binary (v2 API; one member or a Raft cluster).

Arguments are passed through to `corral.kv.flags`, which parses them exactly as etcd 3.4 does
(Go flag syntax, `ETCD_*` variables, `--config-file`), so existing unit files, cloud-config
drop-ins and test helpers that start `etcd` can start `corral etcd` unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import urllib.parse
from datetime import datetime
from pathlib import Path

import click

from corral.kv.cluster import ClusterError
from corral.kv.flags import USAGE, EtcdConfig, FlagError, parse, version_text
from corral.storage.snap import SnapshotError
from corral.storage.wal import WALError

__all__ = ["cli", "listen_addresses", "run"]


def _log(level: str, message: str) -> None:
    # etcd's capnslog line shape: "2026-11-28 23:19:48.585087 W | pkg/flags: ..."
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")
    print(f"{stamp} {level} | {message}", file=sys.stderr, flush=True)


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


async def _serve(config: EtcdConfig) -> None:
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
            initial_cluster=parse_initial_cluster(config.initial_cluster),
            initial_cluster_state=config.initial_cluster_state,
            cluster_token=config.initial_cluster_token,
            heartbeat_ms=int(v.get("heartbeat-interval", 100)),
            election_ms=int(v.get("election-timeout", 1000)),
            snapshot_count=int(v.get("snapshot-count", 10000)),
            max_snapshots=int(v.get("max-snapshots", 5)),
            max_wals=int(v.get("max-wals", 5)),
            sync_interval=_sync_interval(os.environ),
            wal_dir=Path(config.wal_dir) if config.wal_dir else None,
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
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
        asyncio.run(_serve(parsed.config))
    except FlagError as err:
        _log("E", err.message)
        return err.exit_code
    except (ClusterError, WALError, SnapshotError) as err:
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
