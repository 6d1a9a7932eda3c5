"""A closed-loop HTTP load generator for the etcd v2 keys API.

Clients are spread over several worker processes (so the generator is not limited by one
Python core); each client owns one keep-alive connection and sends its next request as soon as
the previous answer arrives. Latencies are measured per request with a monotonic clock. The
clock starts once every worker process is up (on a busy machine starting one can take
seconds), and the workers run on uvloop where it is installed.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from corral.kv import evloop

__all__ = ["LoadResult", "Workload", "run_load"]


@dataclass(frozen=True)
class Workload:
    """What to send: `op` is put, get (local read) or qget (quorum read)."""

    op: str
    clients: int
    duration: float = 5.0
    value_size: int = 256
    key_space: int = 1000
    warmup: float = 1.0

    @property
    def label(self) -> str:
        name = {"put": "v2 PUT", "get": "v2 GET", "qget": "quorum GET"}[self.op]
        return f"{name}, {self.clients} client{'s' if self.clients != 1 else ''}"


@dataclass(frozen=True)
class LoadResult:
    ops: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def throughput(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0


async def _client_loop(
    session: aiohttp.ClientSession,
    urls: list[str],
    w: Workload,
    rng: random.Random,
    start_at: float,
    stop_at: float,
    lat: list[float],
    counts: list[int],
) -> None:
    value = "x" * w.value_size
    base = rng.choice(urls)
    while True:
        key = f"{base}/v2/keys/bench/k{rng.randrange(w.key_space)}"
        t0 = time.monotonic()
        if t0 >= stop_at:
            return
        try:
            if w.op == "put":
                resp_cm = session.put(key, data={"value": value})
            elif w.op == "qget":
                resp_cm = session.get(key, params={"quorum": "true"})
            else:
                resp_cm = session.get(key)
            async with resp_cm as resp:
                await resp.read()
                ok = resp.status < 500
        except aiohttp.ClientError:
            ok = False
        t1 = time.monotonic()
        if t0 >= start_at:
            if ok:
                lat.append(t1 - t0)
            else:
                counts[0] += 1


async def _worker(
    urls: list[str], w: Workload, clients: int, seed: int, t_start: float
) -> tuple[list[float], int]:
    lat: list[float] = []
    counts = [0]
    rng = random.Random(seed)
    start_at = t_start + w.warmup
    stop_at = start_at + w.duration
    conn = aiohttp.TCPConnector(limit=clients, limit_per_host=clients)
    async with aiohttp.ClientSession(connector=conn) as session:
        await asyncio.gather(
            *(
                _client_loop(
                    session, urls, w, random.Random(rng.random()), start_at, stop_at, lat, counts
                )
                for _ in range(clients)
            )
        )
    return lat, counts[0]


def _worker_main(
    urls: list[str],
    w: Workload,
    clients: int,
    seed: int,
    ready: Any,
    start: Any,
    out: mp.Queue,
) -> None:
    # Starting a process that imports aiohttp can take seconds on a busy machine: the clock
    # starts only once every worker is up (else a late worker measures nothing at all).
    ready.wait()
    start_event, start_time = start
    start_event.wait()
    out.put(evloop.run(_worker(urls, w, clients, seed, start_time.value)))


def _seed_keys(urls: list[str], w: Workload) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as s:
            sem = asyncio.Semaphore(16)

            async def put(i: int) -> None:
                async with (
                    sem,
                    s.put(f"{urls[0]}/v2/keys/bench/k{i}", data={"value": "x" * w.value_size}) as r,
                ):
                    await r.read()

            await asyncio.gather(*(put(i) for i in range(w.key_space)))

    asyncio.run(go())


def run_load(urls: list[str], w: Workload, procs: int = 2, seed: int = 1) -> LoadResult:
    """Run workload `w` against `urls` from `procs` processes; return merged statistics."""
    if w.op in ("get", "qget"):
        _seed_keys(urls, w)
    procs = max(1, min(procs, w.clients))
    share = [w.clients // procs + (1 if i < w.clients % procs else 0) for i in range(procs)]
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    ready = ctx.Barrier(procs + 1)
    start = (ctx.Event(), ctx.Value("d", 0.0))
    workers = [
        ctx.Process(target=_worker_main, args=(urls, w, n, seed * 1000 + i, ready, start, out))
        for i, n in enumerate(share)
    ]
    for p in workers:
        p.start()
    ready.wait(timeout=120)
    start[1].value = time.monotonic() + 0.1  # CLOCK_MONOTONIC is shared by the processes
    start[0].set()
    lat: list[float] = []
    errors = 0
    for _ in workers:
        part, err = out.get(timeout=w.warmup + w.duration + 120)
        lat.extend(part)
        errors += err
    for p in workers:
        p.join(timeout=30)
    lat.sort()
    if not lat:
        return LoadResult(0, errors, w.duration, 0.0, 0.0)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return LoadResult(len(lat), errors, w.duration, statistics.median(lat) * 1e3, p99 * 1e3)
