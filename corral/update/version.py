"""Semantic versions (semver.org 2.0.0 §2, §9–§11), as Omaha servers compare releases.

Nebraska orders packages and instances with blang/semver: `2247.99.0 > 2247.2.0`, a
pre-release sorts below its release (`1.0.0-rc.1 < 1.0.0`), numeric pre-release fields
compare numerically and below alphanumeric ones, build metadata (`+…`) is ignored for
ordering. Anything else (`ForcedUpdate`, four-part Google versions) is not semver and is
refused with `VersionError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from corral.update.errors import VersionError

__all__ = ["Version", "is_semver", "parse_version"]

_NUM = r"0|[1-9]\d*"
_IDENT = r"[0-9A-Za-z-]+"
_SEMVER = re.compile(
    rf"^(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})"
    rf"(?:-(?P<pre>{_IDENT}(?:\.{_IDENT})*))?(?:\+(?P<build>{_IDENT}(?:\.{_IDENT})*))?$"
)


@total_ordering
@dataclass(frozen=True, slots=True, eq=False)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: str = ""

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        # A release (no pre-release) sorts after every pre-release of the same triple (§11.3).
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __lt__(self, other: Version) -> bool:
        return self._key() < other._key()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + self.build
        return text


def parse_version(text: str) -> Version:
    """Parse a semver string; raise `VersionError` (with the offending text) otherwise."""
    m = _SEMVER.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise VersionError(f"not a semantic version: {text!r}")
    pre = m.group("pre")
    prerelease = tuple(pre.split(".")) if pre else ()
    for field in prerelease:
        if field.isdigit() and len(field) > 1 and field.startswith("0"):
            raise VersionError(f"not a semantic version (leading zero): {text!r}")
    return Version(
        int(m.group("major")), int(m.group("minor")), int(m.group("patch")),
        prerelease, m.group("build") or "",
    )


def is_semver(text: str) -> bool:
    try:
        parse_version(text)
    except VersionError:
        return False
    return True
