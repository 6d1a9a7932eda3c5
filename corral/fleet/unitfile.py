"""fleet's unit-file model: go-systemd's deserializer, canonical text, SHA-1 unit hash.

fleet never stores the file a user wrote. It parses it with go-systemd's unit lexer
(coreos/go-systemd ``unit/deserialize.go``) into an ordered list of ``(section, name, value)``
options, serializes that list back (``unit/serialize.go``) and names the result by the SHA-1
of the canonical text (coreos/fleet ``unit/unit.go``). The hash is the unit's identity in the
registry (``<prefix>unit/<sha1>``), so every quirk of the lexer below is load-bearing:

* text before the first ``[section]`` is skipped character by character; ``#``/``;`` start a
  comment, and a comment line ending in ``\\`` swallows the next line too;
* a section name runs to the first ``]`` (newlines included); anything but whitespace after it
  on the line is an error;
* ``key = value``: both sides trimmed (Go's ``unicode.IsSpace``); a newline before ``=`` is
  an error;
* a value line ending in ``\\`` continues; the backslash **and** the newline stay in the
  value; an empty line ends the value; ``#`` lines inside a continuation are value text;
* any line of 2048 bytes or more is rejected (``SYSTEMD_LINE_MAX``).

Canonical text: per section in first-seen order ``[Name]\\n`` then ``Key=Value\\n`` for each
option in order, one blank line between sections (sections merge; repeated keys stay).
Names (fleet reference §2.1): ``validate_name`` is ``api.ValidateName`` with its messages,
``UnitNameInfo`` splits template/instance names, ``mangle_name`` is fleetctl's argument rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from corral.fleet.errors import UnitFileError, UnitNameError

__all__ = [
    "LINE_MAX",
    "UNIT_NAME_MAX",
    "UnitFile",
    "UnitNameInfo",
    "UnitOption",
    "deserialize",
    "mangle_name",
    "serialize",
    "short_hash",
    "validate_name",
]

LINE_MAX = 2048
UNIT_NAME_MAX = 256

# Go's unicode.IsSpace: Python's str.isspace also accepts \x1c-\x1f, which Go keeps.
_GO_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_GO_SPACE_STR = "".join(sorted(_GO_SPACE))


def _trim(s: str) -> str:
    return s.strip(_GO_SPACE_STR)


@dataclass(frozen=True, slots=True)
class UnitOption:
    """One ``Name=Value`` line of a unit file, with its section."""

    section: str
    name: str
    value: str


class _Lexer:
    """A character-level port of go-systemd's state machine (see module docstring)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.options: list[UnitOption] = []

    def _check_line_length(self) -> None:
        end = self.pos
        n = len(self.text)
        # Bytes, not characters: the limit is systemd's LINE_MAX.
        while end < n and self.text[end] not in "\r\n":
            end += 1
        if len(self.text[self.pos : end].encode()) >= LINE_MAX:
            raise UnitFileError(f"line too long (max {LINE_MAX} bytes)")

    def _read(self) -> str | None:
        if self.pos >= len(self.text):
            return None
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    def _to_eol(self) -> tuple[str, bool]:
        """Reads to ``\\n`` (consumed); returns (line, hit end of file)."""
        nl = self.text.find("\n", self.pos)
        if nl == -1:
            line, self.pos, eof = self.text[self.pos :], len(self.text), True
        else:
            line, self.pos, eof = self.text[self.pos : nl], nl + 1, False
        # Go trims "\r" before "\n", so a CRLF line keeps its "\r" (trimmed later as space).
        return line.removesuffix("\r"), eof

    def _skip_comment(self) -> None:
        while True:
            line, _ = self._to_eol()
            if not line.rstrip(" ").endswith("\\"):
                return

    def _section_name(self) -> str:
        end = self.text.find("]", self.pos)
        if end == -1:
            raise UnitFileError("unable to find end of section")
        section = self.text[self.pos : end]
        self.pos = end + 1
        garbage, _ = self._to_eol()
        garbage = _trim(garbage)
        if garbage:
            raise UnitFileError(f"found garbage after section name {section}: {garbage!r}")
        return section

    def _option(self, section: str) -> None:
        start = self.pos
        while True:
            ch = self._read()
            if ch is None:
                raise UnitFileError("unexpected end of file while parsing option name")
            if ch in "\r\n":
                raise UnitFileError("unexpected newline encountered while parsing option name")
            if ch == "=":
                break
        name = _trim(self.text[start : self.pos - 1])
        parts: list[str] = []
        while True:
            self._check_line_length()
            line, eof = self._to_eol()
            if not _trim(line):
                break
            parts.append(line)
            if not line.endswith("\\"):
                break
            if not eof:
                parts.append("\n")
        value = "".join(parts)
        value = _trim(value) + "\n" if value.endswith("\n") else _trim(value)
        self.options.append(UnitOption(section, name, value))

    def lex(self) -> list[UnitOption]:
        section: str | None = None
        while True:
            if self.pos == 0 or self.text[self.pos - 1] == "\n":
                self._check_line_length()
            ch = self._read()
            if ch is None:
                return self.options
            if ch == "[":
                section = self._section_name()
            elif ch in "#;":
                self._skip_comment()
            elif section is None or ch in _GO_SPACE:
                continue
            else:
                self.pos -= 1
                self._option(section)


def deserialize(text: str | bytes) -> list[UnitOption]:
    """Parses unit text the way fleet does; raises :class:`UnitFileError`."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError as exc:
            raise UnitFileError(f"unit file is not valid UTF-8: {exc}") from None
    return _Lexer(text).lex()


def serialize(options: Iterable[UnitOption]) -> str:
    """fleet's canonical unit text for ``options``."""
    by_section: dict[str, list[UnitOption]] = {}
    for opt in options:
        by_section.setdefault(opt.section, []).append(opt)
    blocks = [
        f"[{section}]\n" + "".join(f"{o.name}={o.value}\n" for o in opts)
        for section, opts in by_section.items()
    ]
    return "\n".join(blocks)


def short_hash(hex_hash: str) -> str:
    """The 7-character hash fleetctl prints."""
    return hex_hash[:7]


@dataclass(frozen=True)
class UnitFile:
    """A parsed unit: ordered options plus the derived canonical text and hash."""

    options: tuple[UnitOption, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, text: str | bytes) -> UnitFile:
        return cls(tuple(deserialize(text)))

    @classmethod
    def from_options(cls, options: Sequence[UnitOption]) -> UnitFile:
        return cls(tuple(options))

    @cached_property
    def text(self) -> str:
        """Canonical text (what ``fleetctl cat`` prints and what is hashed)."""
        return serialize(self.options)

    @cached_property
    def hash(self) -> bytes:
        """SHA-1 of the canonical text: 20 bytes."""
        return hashlib.sha1(self.text.encode()).digest()

    @property
    def hash_hex(self) -> str:
        return self.hash.hex()

    @cached_property
    def contents(self) -> Mapping[str, Mapping[str, tuple[str, ...]]]:
        """Section → key → values, in file order (no multi-value splitting)."""
        out: dict[str, dict[str, tuple[str, ...]]] = {}
        for o in self.options:
            sec = out.setdefault(o.section, {})
            sec[o.name] = (*sec.get(o.name, ()), o.value)
        return out

    def values(self, section: str, name: str) -> tuple[str, ...]:
        return tuple(self.contents.get(section, {}).get(name, ()))

    @property
    def description(self) -> str:
        """First ``[Unit] Description=``, or ``""``."""
        vals = self.values("Unit", "Description")
        return vals[0] if vals else ""

    @property
    def has_install_section(self) -> bool:
        return "Install" in self.contents


# --- names -------------------------------------------------------------------------------

_VALID_TYPES = frozenset(
    [
        "automount",
        "busname",
        "device",
        "mount",
        "path",
        "scope",
        "service",
        "slice",
        "snapshot",
        "socket",
        "swap",
        "target",
        "timer",
    ]
)
_VALID_TEMPLATE_TYPES = frozenset(["path", "service", "socket", "target", "timer"])
_VALID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\@")
_FLEETCTL_TYPES = (".service", ".socket", ".timer", ".path", ".device", ".mount", ".automount")


def _go_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _go_quote_rune(ch: str) -> str:
    return "'\\''" if ch == "'" else ("'\\\\'" if ch == "\\" else f"'{ch}'")


def validate_name(name: str) -> None:
    """``api.ValidateName``: raises :class:`UnitNameError` with fleet's message."""
    if not name:
        raise UnitNameError("unit name cannot be empty")
    if len(name.encode()) > UNIT_NAME_MAX:
        raise UnitNameError(f"unit name exceeds maximum length ({UNIT_NAME_MAX})")
    dot = name.rfind(".")
    if dot == -1:
        raise UnitNameError('unit name must contain "."')
    if dot == len(name) - 1:
        raise UnitNameError('unit name cannot end in "."')
    suffix = name[dot + 1 :]
    if suffix not in _VALID_TYPES:
        raise UnitNameError(f"invalid unit type: {_go_quote(suffix)}")
    if "@" in name and suffix not in _VALID_TEMPLATE_TYPES:
        raise UnitNameError(f"invalid unit type for template: {_go_quote(suffix)}")
    for ch in name[:dot]:
        if ch not in _VALID_CHARS:
            raise UnitNameError(f"invalid character {_go_quote_rune(ch)} in unit name")
    if name.startswith("@"):
        raise UnitNameError('unit name cannot start in "@"')


@dataclass(frozen=True, slots=True)
class UnitNameInfo:
    """``foo@bar.service`` → name ``foo@bar``, prefix ``foo``, template ``foo@.service``,
    instance ``bar`` (everything after the first ``@``)."""

    full_name: str
    name: str
    prefix: str
    template: str = ""
    instance: str = ""

    @classmethod
    def of(cls, unit_name: str) -> UnitNameInfo | None:
        dot = unit_name.rfind(".")
        if dot == -1:
            return None
        name, suffix = unit_name[:dot], unit_name[dot:]
        at = name.find("@")
        if at == -1:
            return cls(unit_name, name, name)
        return cls(unit_name, name, name[:at], f"{name[:at]}@{suffix}", name[at + 1 :])

    @property
    def is_instance(self) -> bool:
        return bool(self.instance)

    @property
    def is_template(self) -> bool:
        return bool(self.template) and not self.instance


def mangle_name(arg: str) -> str:
    """fleetctl's rule for a unit argument: basename, ``.service`` added if no known type."""
    base = arg.rstrip("/").rsplit("/", 1)[-1] if "/" in arg else arg
    return base if base.endswith(_FLEETCTL_TYPES) else f"{base}.service"
