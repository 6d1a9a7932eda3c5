"""Run corral and the real etcd side by side and write docs/benchmarks.md.

For each workload the two servers are measured in alternating rounds (etcd, corral, etcd,
corral, …) on fresh clusters, so both see the same machine noise; medians over the rounds and
the corral/etcd ratio are reported. Usage: `python -m benchmarks.run [--members 3] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.loadgen import LoadResult, Workload, run_load
from corral.testing.servers import corral_etcd_command, real_etcd_command, start_cluster

KEEP_MARKER = "<!-- benchmarks.run keeps everything below this line -->"

WORKLOADS = [
    Workload("put", 1),
    Workload("put", 16),
    Workload("put", 64),
    Workload("qget", 64),
    Workload("get", 64),
]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (proc(5), fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(kind: str, members: int, w: Workload, procs: int) -> tuple[LoadResult, float]:
    """One round on a fresh cluster: the load's result and the members' CPU ms per answer.

    CPU per answer (all members together, load generator excluded) is steadier than latency
    on a shared machine: it does not include time spent waiting for a core."""
    command = real_etcd_command() if kind == "etcd" else corral_etcd_command()
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp,
        start_cluster(command, Path(tmp), size=members, prefix=kind) as cluster,
    ):
        pids = [m.proc.pid for m in cluster if m.proc is not None]
        before = sum(cpu_seconds(p) for p in pids)
        result = run_load([m.client_url for m in cluster], w, procs=procs)
        used = sum(cpu_seconds(p) for p in pids) - before
        return result, used * 1000 / result.ops if result.ops else 0.0


def median_result(results: list[LoadResult]) -> tuple[float, float, float]:
    return (
        statistics.median(r.throughput for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--procs", type=int, default=2, help="load generator processes")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated workload labels to run, e.g. 'put/1,qget/64' (default: all)",
    )
    args = ap.parse_args(argv)
    wanted = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = wanted - {f"{w.op}/{w.clients}" for w in WORKLOADS}
    if unknown:
        ap.error(
            f"unknown workload(s) {', '.join(sorted(unknown))}; known: "
            + ", ".join(f"{w.op}/{w.clients}" for w in WORKLOADS)
        )

    rows: list[str] = []
    notes: list[str] = []
    for base in WORKLOADS:
        if wanted and f"{base.op}/{base.clients}" not in wanted:
            continue
        w = Workload(base.op, base.clients, duration=args.duration)
        res: dict[str, list[LoadResult]] = {"etcd": [], "corral": []}
        cpu: dict[str, list[float]] = {"etcd": [], "corral": []}
        for _ in range(args.rounds):
            for kind in ("etcd", "corral"):
                try:
                    r, cpu_ms = measure(kind, args.members, w, args.procs)
                except Exception as exc:  # a server that cannot run this workload is reported
                    notes.append(f"{w.label}: {kind} failed: {exc!s:.300}")
                    break
                if r.ops == 0:  # a round without one answer says nothing about speed
                    notes.append(f"{w.label}: {kind} answered nothing ({r.errors} errors)")
                    continue
                res[kind].append(r)
                cpu[kind].append(cpu_ms)
        if not res["etcd"] or not res["corral"]:
            rows.append(f"| {w.label} | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        e, c = median_result(res["etcd"]), median_result(res["corral"])
        errs = sum(r.errors for r in res["corral"])
        ecpu, ccpu = statistics.median(cpu["etcd"]), statistics.median(cpu["corral"])
        rows.append(
            f"| {w.label} | {e[0]:.0f} | {c[0]:.0f} | {c[0] / e[0]:.2f}× | {e[1]:.2f} / {e[2]:.2f} "
            f"| {c[1]:.2f} / {c[2]:.2f} | {c[1] / e[1]:.2f}× / {c[2] / e[2]:.2f}× "
            f"| {ecpu:.2f} / {ccpu:.2f} | {errs} |"
        )
        print(rows[-1], flush=True)

    cmd = "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
    text = [
        "# Benchmarks: corral vs etcd 3.4 on the same machine",
        "",
        f"Run on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{args.members}-member clusters on loopback, {args.rounds} alternating rounds of "
        f"{args.duration:.0f} s per workload (medians), closed-loop clients over keep-alive "
        f"connections from {args.procs} generator processes, 256-byte values, 1000 keys.",
        "",
        f"Command: `{cmd.strip()}` (what `make bench` runs).",
        "",
        "| workload | etcd ops/s | corral ops/s | ratio | etcd p50 / p99 ms | corral p50 / p99 ms "
        "| latency ratio p50 / p99 | CPU ms per op etcd / corral | corral errors |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "CPU ms per op: user + system CPU of all members together per answered request "
        "(medians; the load generator is not counted).",
        "",
    ]
    if notes:
        text += ["Notes:", "", *(f"- {n}" for n in notes), ""]
    load = os.getloadavg()
    text += [
        f"Load average at the end of the run (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} on {os.cpu_count()} cores.",
        "",
    ]
    # The history of the performance work below the marker is written by hand: keep it.
    kept = args.out.read_text() if args.out.exists() else ""
    if KEEP_MARKER in kept:
        text += [KEEP_MARKER + kept.split(KEEP_MARKER, 1)[1].rstrip("\n"), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
