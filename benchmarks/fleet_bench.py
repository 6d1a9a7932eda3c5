"""fleet scheduling at scale: N units over M machines, corral and etcd in the same run.

Each store is a fresh 3-member cluster (``corral etcd`` and a real etcd 3.4 with
``--enable-v2``) started through :func:`corral.testing.servers.start_cluster`. The machines are
in-process :class:`~corral.fleet.machine.FleetMachine` objects (heart, leader-elected engine,
agent, publisher, watch) with the in-memory **fake runner** (no processes: a unit is "running"
from start to stop), so the measurement is fleet's scheduling and KV traffic, not process
start-up. Reported per store: seconds from the first submission until every unit runs on some
machine, and KV requests fleet issued (counted in the registry layer: every get/set/delete
plus every watch event). Results go to stdout and replace the section in
``docs/benchmarks-fleet.md``.

Usage: ``python -m benchmarks.fleet_bench [--machines 100] [--units 1000] [--members 3]
[--in-flight 32] [--lag-limit 0] [--stores corral,etcd]``.
Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import tempfile
from pathlib import Path

from corral.client import ClientError
from corral.fleet.bench import BenchResult, run_bench
from corral.testing.servers import corral_etcd_command, real_etcd_command, start_cluster

MARK = "<!-- fleet_bench -->"


def measure(kind: str, members: int, args: argparse.Namespace) -> BenchResult:
    command = real_etcd_command() if kind == "etcd" else corral_etcd_command()
    with (
        tempfile.TemporaryDirectory(prefix=f"fleet-bench-{kind}-") as tmp,
        start_cluster(command, Path(tmp), size=members, prefix=kind) as cluster,
    ):
        urls = [m.client_url for m in cluster]
        return asyncio.run(
            run_bench(
                urls,
                machines=args.machines,
                units=args.units,
                limit=args.limit,
                in_flight=args.in_flight,
                lag_limit=args.lag_limit,
                progress=lambda line: print(f"{kind}: {line}", flush=True),
            )
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--machines", type=int, default=100)
    ap.add_argument("--units", type=int, default=1000)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--limit", type=float, default=1800.0, help="give up after this many s")
    ap.add_argument("--in-flight", type=int, default=32, help="concurrent submissions")
    ap.add_argument(
        "--lag-limit", type=int, default=0, help="watch lag that triggers a re-read (0: never)"
    )
    ap.add_argument("--stores", default="corral,etcd", help="comma-separated: corral,etcd")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks-fleet.md"))
    args = ap.parse_args(argv)
    if args.machines < 1 or args.units < 1 or args.members < 1 or args.in_flight < 1:
        ap.error("--machines, --units, --members and --in-flight must be positive")
    stores = [k.strip() for k in args.stores.split(",") if k.strip()]
    if not stores or any(k not in ("corral", "etcd") for k in stores):
        ap.error("--stores takes corral and/or etcd")

    rows = []
    for kind in stores:
        try:
            r = measure(kind, args.members, args)
        except (TimeoutError, OSError, RuntimeError, ClientError) as exc:
            print(f"{kind}: failed: {exc}")
            rows.append(f"| {kind} | {args.members} | failed: {exc} | - | - | - | - | - |")
            continue
        print(
            f"{kind}: {r.units} units over {r.machines} machines submitted in "
            f"{r.seconds_to_submit:.1f} s, placed in {r.seconds_to_placed:.1f} s, "
            f"{r.kv_requests} KV requests ({r.watch_events} watch events, "
            f"{r.rereads} re-reads)",
            flush=True,
        )
        rows.append(
            f"| {kind} | {args.members} | {r.seconds_to_submit:.1f} | "
            f"{r.seconds_to_placed:.1f} | {r.kv_requests} | {r.kv_requests / r.units:.1f} | "
            f"{r.watch_events} | {r.rereads} |"
        )
    section = "\n".join(
        [
            MARK,
            f"## {args.units} units over {args.machines} machines",
            "",
            f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}. In-process fleet "
            "machines with the fake (in-memory) runner; each store a fresh cluster on this "
            "host. Compare the rows with each other, not with other hosts.",
            "",
            f"Command: `python -m benchmarks.fleet_bench --machines {args.machines} "
            f"--units {args.units} --members {args.members} --in-flight {args.in_flight} "
            f"--lag-limit {args.lag_limit}`",
            "",
            "| store | members | s to all submitted | s to all placed | KV requests "
            "| requests/unit | of which watch events | tree re-reads |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            MARK,
        ]
    )
    old = args.out.read_text() if args.out.exists() else "# fleet benchmarks\n\n"
    if old.count(MARK) >= 2:
        head, _, rest = old.partition(MARK)
        _, _, tail = rest.partition(MARK)
        text = head + section + tail
    else:
        text = old.rstrip("\n") + "\n\n" + section + "\n"
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
