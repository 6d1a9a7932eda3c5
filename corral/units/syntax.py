"""Unit-file syntax: lines, quoting, time spans, booleans (systemd.syntax(7), systemd.time(7)).

Theory of operation. `parse_unit_text` turns the text of one file into an ordered tuple of
`Entry(section, key, value, path, line)`; it keeps every assignment, including repeated keys
and empty assignments, because their meaning (accumulate, reset, last wins) depends on the
key and is decided later by `corral.units.config`. A unit with drop-ins is simply the
concatenation of the main file's entries and each drop-in's entries in lexical order
(systemd.unit(5) "drop-in"), so an `ExecStart=` reset in a drop-in works unchanged.

Rules implemented (systemd.syntax(7)):

1. Leading whitespace and whitespace around `=` are ignored; there are no inline comments.
2. Lines starting with `#` or `;` are comments, also inside a continuation.
3. A line ending in an odd number of backslashes continues on the next line; the backslash
   becomes a space.
4. Unknown sections warn unless they start with `X-`; a line without `=` warns and is
   skipped; a broken section header is an error. Every message names the line.

`split_words` implements the quoting used by Exec*, Environment= and friends: quotes only at
the start of a word, C escapes, `\\;` and friends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from corral.units.errors import BadSettingError, UnitSyntaxError

__all__ = [
    "KNOWN_SECTIONS",
    "LINE_MAX",
    "Diagnostic",
    "Entry",
    "ParsedUnit",
    "c_unescape",
    "merge",
    "parse_bool",
    "parse_timespan",
    "parse_unit_text",
    "split_words",
]

LINE_MAX = 1024 * 1024  # systemd's LONG_LINE_MAX
KNOWN_SECTIONS = frozenset(
    {
        "Unit",
        "Service",
        "Install",
        "Socket",
        "Timer",
        "Path",
        "Mount",
        "Automount",
        "Swap",
        "Target",
        "Slice",
        "Scope",
        "Container",
        "Pod",
        "Volume",
        "Network",
        "Kube",
        "Image",
    }
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One `Key=Value` assignment, with where it came from."""

    section: str
    key: str
    value: str
    path: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A warning about a unit file; the file is still usable."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<unit>'}:{self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class ParsedUnit:
    entries: tuple[Entry, ...]
    warnings: tuple[Diagnostic, ...] = ()
    sections: tuple[str, ...] = ()

    def get(self, section: str, key: str) -> list[Entry]:
        return [e for e in self.entries if e.section == section and e.key == key]

    def has_section(self, section: str) -> bool:
        return section in self.sections


def _ends_in_continuation(line: str) -> bool:
    n = len(line) - len(line.rstrip("\\"))
    return n % 2 == 1


def parse_unit_text(text: str, path: str = "") -> ParsedUnit:
    """Parse one unit file (or drop-in). Raises `UnitSyntaxError` with the line number."""
    entries: list[Entry] = []
    warnings: list[Diagnostic] = []
    sections: list[str] = []
    section: str | None = None
    pending: str | None = None  # continuation buffer
    pending_line = 0
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        if len(raw) > LINE_MAX:
            raise UnitSyntaxError("line too long", path, number)
        if "\x00" in raw:
            raise UnitSyntaxError("NUL byte in unit file", path, number)
        line = raw.rstrip("\r")
        stripped = line.lstrip()
        if pending is not None and stripped[:1] in ("#", ";"):
            continue  # comment lines inside a continuation are dropped
        if pending is None:
            if not stripped or stripped[0] in "#;":
                continue
            pending_line = number
            body = stripped
        else:
            body = pending + line
        if _ends_in_continuation(body):
            pending = body[:-1] + " "
            continue
        pending = None
        section = _take_line(body.strip(), section, path, pending_line, entries, warnings, sections)
    if pending is not None:
        section = _take_line(
            pending.strip(), section, path, pending_line, entries, warnings, sections
        )
    return ParsedUnit(tuple(entries), tuple(warnings), tuple(sections))


def _take_line(
    body: str,
    section: str | None,
    path: str,
    number: int,
    entries: list[Entry],
    warnings: list[Diagnostic],
    sections: list[str],
) -> str | None:
    if body.startswith("["):
        if not body.endswith("]") or len(body) < 3:
            raise UnitSyntaxError(f"invalid section header {body!r}", path, number)
        name = body[1:-1]
        if any(c in name for c in "[]") or name.strip() != name:
            raise UnitSyntaxError(f"invalid section header {body!r}", path, number)
        if name not in KNOWN_SECTIONS and not name.startswith("X-"):
            warnings.append(Diagnostic(path, number, f"unknown section [{name}], ignoring"))
        if name not in sections:
            sections.append(name)
        return name
    if section is None:
        warnings.append(Diagnostic(path, number, "assignment outside of section, ignoring"))
        return section
    key, sep, value = body.partition("=")
    key = key.strip()
    if not sep or not key:
        warnings.append(Diagnostic(path, number, f"missing '=', ignoring line {body!r}"))
        return section
    entries.append(Entry(section, key, value.strip(), path, number))
    return section


def merge(main: ParsedUnit, *dropins: ParsedUnit) -> ParsedUnit:
    """The unit as systemd sees it: the main file, then each drop-in in the given order."""
    entries = list(main.entries)
    warnings = list(main.warnings)
    sections = list(main.sections)
    for d in dropins:
        entries.extend(d.entries)
        warnings.extend(d.warnings)
        sections.extend(s for s in d.sections if s not in sections)
    return ParsedUnit(tuple(entries), tuple(warnings), tuple(sections))


_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "s": " ",
}


def _escape(s: str, i: int) -> tuple[str, int]:
    """Decode the escape starting at s[i] == '\\'; returns (text, next index)."""
    if i + 1 >= len(s):
        raise BadSettingError("trailing backslash")
    c = s[i + 1]
    if c in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[c], i + 2
    for lead, width, base in (("x", 2, 16), ("u", 4, 16), ("U", 8, 16)):
        if c == lead:
            digits = s[i + 2 : i + 2 + width]
            if len(digits) != width or not re.fullmatch(r"[0-9a-fA-F]+", digits):
                raise BadSettingError(f"bad escape \\{lead}{digits}")
            return chr(int(digits, base)), i + 2 + width
    if c in "01234567":
        digits = s[i + 1 : i + 4]
        if len(digits) != 3 or not re.fullmatch(r"[0-7]{3}", digits):
            raise BadSettingError(f"bad octal escape \\{digits}")
        return chr(int(digits, 8)), i + 4
    raise BadSettingError(f"unknown escape \\{c}")


def c_unescape(s: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(s):
        if s[i] == "\\":
            text, i = _escape(s, i)
            out.append(text)
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def split_words(value: str, *, unescape: bool = True) -> list[str]:
    """Split a setting into words, honouring quotes at word starts and C escapes.

    A backslash before `;` is kept (as `\\;`) so Exec* parsing can tell a literal `;` from the
    command separator. Raises `BadSettingError` for unbalanced quotes or bad escapes.
    """
    words: list[str] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i] in " \t\n\r":
            i += 1
        if i >= n:
            return words
        word: list[str] = []
        quote = ""
        if value[i] in "\"'":
            quote = value[i]
            i += 1
        while True:
            if i >= n:
                if quote:
                    raise BadSettingError(f"unbalanced quoting in {value!r}")
                break
            c = value[i]
            if quote and c == quote:
                i += 1
                if i < n and value[i] not in " \t\n\r":
                    raise BadSettingError(f"quote must end a word in {value!r}")
                break
            if not quote and c in " \t\n\r":
                break
            if c == "\\" and unescape:
                if i + 1 < n and value[i + 1] == ";" and not quote:
                    word.append("\\;")
                    i += 2
                    continue
                text, i = _escape(value, i)
                word.append(text)
                continue
            word.append(c)
            i += 1
        words.append("".join(word))


_TRUE = {"1", "yes", "y", "true", "t", "on"}
_FALSE = {"0", "no", "n", "false", "f", "off"}


def parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise BadSettingError(f"not a boolean: {value!r}")


_TIME_UNITS: dict[str, float] = {}
for _names, _secs in (
    (("us", "usec", "µs", "μs"), 1e-6),
    (("ms", "msec"), 1e-3),
    (("s", "sec", "second", "seconds"), 1.0),
    (("m", "min", "minute", "minutes"), 60.0),
    (("h", "hr", "hour", "hours"), 3600.0),
    (("d", "day", "days"), 86400.0),
    (("w", "week", "weeks"), 7 * 86400.0),
    (("M", "month", "months"), 30.44 * 86400.0),
    (("y", "year", "years"), 365.25 * 86400.0),
):
    for _n in _names:
        _TIME_UNITS[_n] = _secs
_SPAN_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Zµμ]*)")


def parse_timespan(value: str, default_unit: float = 1.0) -> float | None:
    """Seconds in a systemd time span; `None` means infinity. Raises `BadSettingError`."""
    v = value.strip()
    if v == "infinity":
        return None
    if not v:
        raise BadSettingError("empty time span")
    total, pos = 0.0, 0
    while pos < len(v):
        m = _SPAN_PART.match(v, pos)
        if not m or m.end() == pos:
            raise BadSettingError(f"bad time span {value!r}")
        number, unit = m.groups()
        if unit and unit not in _TIME_UNITS:
            raise BadSettingError(f"unknown time unit {unit!r} in {value!r}")
        total += float(number) * (_TIME_UNITS[unit] if unit else default_unit)
        pos = m.end()
        while pos < len(v) and v[pos] == " ":
            pos += 1
    return total
