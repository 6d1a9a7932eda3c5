"""When the update agent checks next: update_engine's `UpdateCheckScheduler`, pure.

Rules (reference §2.3), with every interval configurable:

* `FuzzInt(v, r)` is uniform in `[v - r/2, v + r - r/2]`.
* The first check comes `initial ± initial_fuzz/2` after start (7 min ± 5 min).
* Then every `interval ± fuzz/2` (45 min ± 5 min).
* A server `PollInterval` (seconds) replaces the interval for the next check only.
* A failed check (HTTP 500/503, network) doubles the interval, up to `max_backoff`
  (4 h), fuzzed by ± half of it; a success resets the backoff.

The random generator is passed in (seeded in tests), so schedules are reproducible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["CheckScheduler", "fuzz"]


def fuzz(value: float, spread: float, rng: random.Random) -> float:
    return max(0.0, rng.uniform(value - spread / 2, value + spread / 2))


@dataclass
class CheckScheduler:
    rng: random.Random
    initial: float = 7 * 60.0
    initial_fuzz: float = 10 * 60.0
    interval: float = 45 * 60.0
    interval_fuzz: float = 10 * 60.0
    max_backoff: float = 4 * 3600.0
    _backoff: float = 0.0

    def first_delay(self) -> float:
        return fuzz(self.initial, self.initial_fuzz, self.rng)

    def next_delay(self, *, failed: bool = False, poll_interval: float | None = None) -> float:
        """Delay until the next check, given how the last one went."""
        if failed:
            base = self._backoff or self.interval
            self._backoff = min(base * 2, self.max_backoff)
            return fuzz(self._backoff, self._backoff, self.rng)
        self._backoff = 0.0
        if poll_interval is not None and poll_interval > 0:
            return fuzz(poll_interval, self.interval_fuzz, self.rng)
        return fuzz(self.interval, self.interval_fuzz, self.rng)
