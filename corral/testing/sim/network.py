"""A simulated network: per-message drop, duplication and random delay (hence reordering),
plus partitions as a set of blocked directed links (full, partial and one-way) that heal.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["NetworkOptions", "SimNetwork"]


@dataclass(frozen=True, slots=True)
class NetworkOptions:
    drop: float = 0.02
    duplicate: float = 0.02
    min_delay: int = 1  # virtual ms
    max_delay: int = 12
    slow: float = 0.02  # chance of a long delay (a lagging link)
    slow_delay: int = 120


class SimNetwork:
    def __init__(self, rng: random.Random, options: NetworkOptions) -> None:
        self.rng = rng
        self.opts = options
        self.blocked: set[tuple[int, int]] = set()
        self.reliable = False  # the liveness phase turns faults off
        self.dropped = 0
        self.duplicated = 0

    def deliveries(self, frm: int, to: int) -> list[int]:
        """Delays (virtual ms) at which copies of one message arrive; [] if lost."""
        if (frm, to) in self.blocked:
            self.dropped += 1
            return []
        o = self.opts
        r = self.rng
        if self.reliable:
            return [r.randint(o.min_delay, o.max_delay)]
        if r.random() < o.drop:
            self.dropped += 1
            return []
        delays = [self._delay()]
        if r.random() < o.duplicate:
            self.duplicated += 1
            delays.append(self._delay())
        return delays

    def _delay(self) -> int:
        o = self.opts
        if self.rng.random() < o.slow:
            return self.rng.randint(o.max_delay, o.slow_delay)
        return self.rng.randint(o.min_delay, o.max_delay)

    def isolate(self, node: int, others: Iterable[int]) -> None:
        for o in others:
            if o != node:
                self.blocked.add((node, o))
                self.blocked.add((o, node))

    def split(self, side_a: Iterable[int], side_b: Iterable[int]) -> None:
        b = list(side_b)
        for x in side_a:
            for y in b:
                self.blocked.add((x, y))
                self.blocked.add((y, x))

    def one_way(self, frm: int, to: int) -> None:
        self.blocked.add((frm, to))

    def heal(self) -> None:
        self.blocked.clear()
