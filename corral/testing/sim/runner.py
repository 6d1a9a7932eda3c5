"""Run a range of seeds and summarise them in one line (what `corral sim` prints)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from corral.raft import Mutation
from corral.testing.sim.cluster import COVERAGE_KINDS, SeedResult, run_seed

__all__ = ["Summary", "parse_seeds", "replay_command", "run_seeds"]

_FAULT_KINDS = ("crash", "crash_lost_unsynced", "partition", "transfer", "membership_change")


@dataclass(slots=True)
class Summary:
    seeds: int = 0
    steps: int = 0
    ops_checked: int = 0
    #: per kind: how many seeds saw it at least once
    seeds_with: Counter[str] = field(default_factory=Counter)
    totals: Counter[str] = field(default_factory=Counter)
    failures: list[SeedResult] = field(default_factory=list)

    def add(self, r: SeedResult) -> None:
        self.seeds += 1
        self.steps += r.steps
        self.ops_checked += r.ops_checked
        self.totals.update(r.stats)
        self.seeds_with.update(k for k, v in r.stats.items() if v)
        if not r.ok:
            self.failures.append(r)

    def line(self, first: int, last: int) -> str:
        faults = " ".join(f"{k}={self.totals[k]}" for k in _FAULT_KINDS)
        cover = " ".join(f"{k}={self.seeds_with[k]}" for k in COVERAGE_KINDS)
        return (
            f"seeds {first}-{last} ({self.seeds}): steps={self.steps} "
            f"faults[{faults} dropped={self.totals['dropped']} "
            f"duplicated={self.totals['duplicated']}] "
            f"seeds-with[{cover}] ops-checked={self.ops_checked} "
            f"violations={len(self.failures)}"
        )


def parse_seeds(text: str) -> tuple[int, int]:
    """`"A-B"` or `"A"` → (A, B); raises ValueError with a readable message."""
    parts = text.split("-")
    try:
        if len(parts) == 1:
            a = b = int(parts[0])
        elif len(parts) == 2:
            a, b = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"seeds must look like A-B (e.g. 1-500), got {text!r}") from None
    if a < 0 or b < a:
        raise ValueError(f"seed range {text!r} is empty or negative")
    return a, b


def replay_command(seed: int, mutations: Iterable[Mutation] = ()) -> str:
    extra = "".join(f" --mutation {m.value}" for m in sorted(mutations, key=lambda m: m.value))
    return f"corral sim --seeds {seed}-{seed} --verbose{extra}"


def run_seeds(
    first: int,
    last: int,
    mutations: frozenset[Mutation] = frozenset(),
    stop_on_failure: bool = False,
    progress: Callable[[SeedResult], None] | None = None,
) -> Summary:
    summary = Summary()
    for seed in range(first, last + 1):
        r = run_seed(seed, mutations)
        summary.add(r)
        if progress is not None:
            progress(r)
        if stop_on_failure and not r.ok:
            break
    return summary
