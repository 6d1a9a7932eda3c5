"""Reboot windows: locksmith v0.6's `pkg/timeutil/periodic.go`, on a time you pass in.

A window is a start (`HH:MM` daily, or `Dow HH:MM` weekly, day names `sun`..`sat` in any
case) and a length (a Go duration such as `1h30m`). The length must be non-negative and
shorter than the period (a day, or a week when a day is given). Each occurrence is the closed
interval [start, start + length]. `in_window(now)` and `next_window(now)` answer from the
calendar of `now`'s own timezone, so DST and zones behave as Go's time.Date does with the
local zone; nothing here reads a clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from corral.locksmith.errors import ConfigError

__all__ = ["Period", "Periodic", "parse_go_duration"]

_WEEKDAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]+)")


def parse_go_duration(text: str) -> timedelta:
    """time.ParseDuration: `[-+]?(<number><unit>)+`, or a bare `0`."""
    s = text
    neg = s.startswith("-")
    if s[:1] in "+-" and s:
        s = s[1:]
    if s == "0":
        return timedelta(0)
    if not s:
        raise ConfigError(f'time: invalid duration "{text}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION.match(s, pos)
        if not m or m.group(1) in ("", "."):
            raise ConfigError(f'time: invalid duration "{text}"')
        unit = m.group(2)
        if unit not in _UNITS:
            raise ConfigError(f'time: unknown unit "{unit}" in duration "{text}"')
        total += float(m.group(1)) * _UNITS[unit]
        pos = m.end()
    return timedelta(seconds=-total if neg else total)


@dataclass(frozen=True, slots=True)
class Period:
    """One occurrence of a window: [start, end]."""

    start: datetime
    end: datetime

    def __contains__(self, when: datetime) -> bool:
        return self.start <= when <= self.end


@dataclass(frozen=True, slots=True)
class Periodic:
    """A repeating window. `day_of_week` is -1 for daily, 0 (Sunday) .. 6 for weekly."""

    day_of_week: int
    hour: int
    minute: int
    length: timedelta

    @classmethod
    def parse(cls, start: str, length: str) -> Periodic:
        """ParsePeriodic(start, length); ConfigError with locksmith's message on bad input."""
        day = -1
        fields = start.split()
        if len(fields) == 2:
            if fields[0].lower() not in _WEEKDAYS:
                raise ConfigError(f'unable to parse start: invalid day of week "{fields[0]}"')
            day = _WEEKDAYS[fields[0].lower()]
            fields = fields[1:]
        elif len(fields) != 1:
            raise ConfigError("unable to parse start: wrong number of fields")
        m = re.fullmatch(r"([-+]?[0-9]+):([-+]?[0-9]+)(.*)", fields[0])
        if not m:
            raise ConfigError(f'unable to parse start: invalid time of day "{fields[0]}"')
        hour, minute = int(m.group(1)), int(m.group(2))
        if not 0 <= hour <= 23:
            raise ConfigError(
                f'unable to parse start: invalid time of day "{fields[0]}": '
                "hour must be >= 0 and <= 23"
            )
        if not 0 <= minute <= 59:
            raise ConfigError(
                f'unable to parse start: invalid time of day "{fields[0]}": '
                "minute must be >= 0 and <= 59"
            )
        try:
            dur = parse_go_duration(length)
        except ConfigError as exc:
            raise ConfigError(f"unable to parse duration: {exc}") from exc
        if dur < timedelta(0):
            raise ConfigError("duration cannot be negative")
        if (day == -1 and dur >= timedelta(days=1)) or dur >= timedelta(days=7):
            raise ConfigError("duration cannot exceed period")
        return cls(day, hour, minute, dur)

    def _at(self, ref: datetime, day_shift: int) -> datetime:
        day = ref.date() + timedelta(days=day_shift)
        return datetime.combine(day, time(self.hour, self.minute), tzinfo=ref.tzinfo)

    @staticmethod
    def _weekday(ref: datetime) -> int:
        return (ref.weekday() + 1) % 7  # Go's Weekday: Sunday = 0

    def previous(self, ref: datetime) -> Period:
        """The latest occurrence starting at or before `ref`."""
        if self.day_of_week >= 0:
            wd = self._weekday(ref)
            this_week = self._at(ref, self.day_of_week - wd)
            start = this_week if ref >= this_week else self._at(ref, -(wd + 7 - self.day_of_week))
        else:
            today = self._at(ref, 0)
            start = today if ref >= today else self._at(ref, -1)
        return Period(start, start + self.length)

    def next(self, ref: datetime) -> Period:
        """The first occurrence starting strictly after `ref`."""
        if self.day_of_week >= 0:
            wd = self._weekday(ref)
            this_week = self._at(ref, self.day_of_week - wd)
            start = this_week if ref < this_week else self._at(ref, 7 - wd + self.day_of_week)
        else:
            today = self._at(ref, 0)
            start = today if ref < today else self._at(ref, 1)
        return Period(start, start + self.length)

    def duration_to_start(self, ref: datetime) -> timedelta:
        """≤ 0 inside a window (how deep into it), else the wait until the next one."""
        prev = self.previous(ref)
        if prev.end >= ref:
            return prev.start - ref
        return self.next(ref).start - ref

    def in_window(self, now: datetime) -> bool:
        return self.duration_to_start(now) <= timedelta(0)

    def next_window(self, now: datetime) -> Period:
        """The window to reboot in: the current one if `now` is inside it, else the next."""
        prev = self.previous(now)
        return prev if now in prev else self.next(now)
