"""Unit names, templates, escaping and specifiers (systemd.unit(5) "Specifiers").

A unit name is `prefix[@instance].type`. A template `prefix@.type` provides the file for any
instance without a file of its own; `%i` is the text between the first `@` and the type.

Specifiers are resolved per machine: a `Machine` value (machine id, boot id, hostname, the
machine's root folder) is passed in, never read from this host, so several machines sharing
one host each see their own `%m` and `%H`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from corral.units.errors import SpecifierError, UnitNameError

__all__ = [
    "UNIT_TYPES",
    "Machine",
    "SpecifierContext",
    "UnitName",
    "expand_specifiers",
    "unit_escape",
    "unit_unescape",
]

UNIT_TYPES = frozenset(
    {
        "service",
        "socket",
        "target",
        "timer",
        "path",
        "mount",
        "automount",
        "swap",
        "slice",
        "scope",
        "device",
        "container",
    }
)
_NAME_CHARS = re.compile(r"[A-Za-z0-9:_.\\@-]+")
NAME_MAX = 256


@dataclass(frozen=True, slots=True)
class UnitName:
    """A parsed unit name. `instance` is None for non-instances, "" for templates."""

    prefix: str
    instance: str | None
    type: str

    @classmethod
    def parse(cls, name: str) -> UnitName:
        if not name or len(name) > NAME_MAX:
            raise UnitNameError(f"invalid unit name {name!r}: length must be 1..{NAME_MAX}")
        if not _NAME_CHARS.fullmatch(name):
            raise UnitNameError(f"invalid unit name {name!r}: bad characters")
        stem, dot, utype = name.rpartition(".")
        if not dot or not stem:
            raise UnitNameError(f"invalid unit name {name!r}: missing type suffix")
        if utype not in UNIT_TYPES:
            raise UnitNameError(f"invalid unit name {name!r}: unknown type .{utype}")
        prefix, at, instance = stem.partition("@")
        if not prefix:
            raise UnitNameError(f"invalid unit name {name!r}: empty prefix")
        return cls(prefix, instance if at else None, utype)

    @property
    def name(self) -> str:
        if self.instance is None:
            return f"{self.prefix}.{self.type}"
        return f"{self.prefix}@{self.instance}.{self.type}"

    @property
    def is_template(self) -> bool:
        return self.instance == ""

    @property
    def is_instance(self) -> bool:
        return bool(self.instance)

    def template(self) -> UnitName:
        return UnitName(self.prefix, "", self.type)

    def __str__(self) -> str:
        return self.name


def unit_escape(text: str) -> str:
    """`systemd-escape`: `/` → `-`, other unsafe bytes → `\\xHH` (a leading `.` too)."""
    out: list[str] = []
    for i, ch in enumerate(text.encode()):
        c = chr(ch)
        if c == "/":
            out.append("-")
        elif (c.isascii() and c.isalnum()) or c in ":_" or (c == "." and i > 0):
            out.append(c)
        else:
            out.append(f"\\x{ch:02x}")
    return "".join(out)


def unit_unescape(text: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(text):
        if text.startswith("\\x", i) and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2 : i + 4]):
            raw.append(int(text[i + 2 : i + 4], 16))
            i += 4
            continue
        raw.extend(b"/" if text[i] == "-" else text[i].encode())
        i += 1
    return raw.decode(errors="replace")


@dataclass(frozen=True, slots=True)
class Machine:
    """What specifiers need to know about the machine a unit runs on."""

    machine_id: str = "0" * 32
    boot_id: str = "0" * 32
    hostname: str = "localhost"
    root: str = "/"
    kernel_release: str = ""
    architecture: str = "x86-64"


@dataclass(frozen=True, slots=True)
class SpecifierContext:
    unit: UnitName
    machine: Machine
    fragment_path: str = ""


def _specifier_table(ctx: SpecifierContext) -> dict[str, str]:
    u, m = ctx.unit, ctx.machine
    prefix_name = u.prefix
    instance = u.instance or ""
    root = m.root.rstrip("/")
    short_prefix = prefix_name.rpartition("-")[2] if "-" in prefix_name else prefix_name
    unescaped = unit_unescape(instance) if u.instance else unit_unescape(prefix_name)
    return {
        "n": u.name,
        "N": u.name.rpartition(".")[0],
        "p": prefix_name,
        "P": unit_unescape(prefix_name),
        "i": instance,
        "I": unit_unescape(instance),
        "j": short_prefix,
        "J": unit_unescape(short_prefix),
        "f": "/" + unescaped.lstrip("/"),
        "H": m.hostname,
        "l": m.hostname.partition(".")[0],
        "q": m.hostname,
        "m": m.machine_id,
        "b": m.boot_id,
        "u": "root",
        "U": "0",
        "g": "root",
        "G": "0",
        "h": "/root",
        "s": "/bin/sh",
        "t": f"{root}/run",
        "S": f"{root}/var/lib",
        "C": f"{root}/var/cache",
        "L": f"{root}/var/log",
        "E": f"{root}/etc",
        "T": "/tmp",
        "V": "/var/tmp",
        "v": m.kernel_release,
        "a": m.architecture,
        "y": ctx.fragment_path,
        "Y": ctx.fragment_path.rpartition("/")[0],
        "%": "%",
    }


def expand_specifiers(text: str, ctx: SpecifierContext) -> str:
    """Replace `%x` specifiers; an unknown one raises `SpecifierError`."""
    if "%" not in text:
        return text
    table = _specifier_table(ctx)
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(text):
            raise SpecifierError(f"lone '%' at end of {text!r}")
        spec = text[i + 1]
        if spec not in table:
            raise SpecifierError(f"unknown specifier %{spec} in {text!r}")
        out.append(table[spec])
        i += 2
    return "".join(out)
