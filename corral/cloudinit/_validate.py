"""`coreos-cloudinit -validate`, rule for rule (coreos-cloudinit v1.13.0 `config/validate/`).

Theory of operation, as in the original:

1. Classify the user data (`Validate`): empty, a `#!` script or an Ignition config give an
   empty report; `#cloud-config` is validated; anything else is
   `line 1: error: must be "#cloud-config" or begin with "#!"`.
2. Parse twice (`parseCloudConfig`). The *weak* parse types every scalar the YAML 1.1 way
   (`off` → false, `0744` → 484); a YAML syntax error becomes one `error` entry at the
   parser's line. The *strong* parse decodes into the schema, where a string field receives
   the scalar's source text. Where the weak leaf and the strong leaf have compatible kinds the
   strong value wins (`coerceNodes`): so `reboot-strategy: off` is the string "off" (valid)
   while `reboot-strategy: false` stays the string "false" (invalid), and `permissions: 0744`
   is "0744" again.
3. Line numbers come from the original's text search, not from the parser: a key's line is
   the first line at or after its parent's line matching `^ *-? ?KEY:`, a list element's the
   next line matching `^ *-`. Keys are normalised `-` → `_` after lines are found.
4. Run the rules in order: discovery URL, encoding, structure, validity, write_files paths,
   write_files under coreos. Within a rule, entries follow document order (Go visits map keys
   in random order; we fix it).

A YAML error leaves the tree empty, and the rules still run on it, so a syntax error is
followed by `line 0: warning: incorrect type for "" (want struct)`, exactly as the original
printed. Where the original panicked (a regex-checked field given null, a list or a map),
validation as a whole fails with the same message Go's recover() produced.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from corral.cloudinit._gofmt import (
    go_base64_decode,
    go_format_value,
    go_gzip_header_ok,
    go_path_dir,
    go_quote,
    go_request_uri_ok,
)
from corral.cloudinit._schema import (
    CLOUD_CONFIG,
    Field,
    Kind,
    SliceOf,
    Struct,
    TypeSpec,
    human_type,
    kind_of,
)
from corral.cloudinit._yaml import YamlSyntaxError, compose, scalar_value
from corral.cloudinit.errors import ValidationFailed

__all__ = ["Entry", "EntryKind", "Node", "Report", "parse_tree", "validate"]


class EntryKind(enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Entry:
    """One report line: `line N: kind: message`."""

    kind: EntryKind
    message: str
    line: int

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind.value}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "line": self.line, "message": self.message}


@dataclass(frozen=True, slots=True)
class Report:
    entries: tuple[Entry, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __str__(self) -> str:
        return "".join(f"{e}\n" for e in self.entries)

    def to_json(self) -> str:
        """The JSON form the original's Report marshalled to (keys sorted, as Go maps are)."""
        return json.dumps([e.to_json() for e in self.entries], sort_keys=True)


@dataclass(slots=True)
class Node:
    """A value of the (coerced) document tree; `kind` INVALID is a null or absent value."""

    name: str = ""
    line: int = 0
    kind: Kind = Kind.INVALID
    value: Any = None
    children: list[Node] = field(default_factory=list)
    text: str = ""  # a scalar's source text: what a Go string field decodes it to

    def child(self, name: str) -> Node:
        for c in self.children:
            if c.name == name:
                return c
        return _ABSENT

    @property
    def valid(self) -> bool:
        return self.kind is not Kind.INVALID

    def go_string(self) -> str:
        """reflect.Value.String(): the string itself, else `<KIND Value>`."""
        if self.kind is Kind.STRING:
            return str(self.value)
        if self.kind is Kind.INVALID:
            return "<invalid Value>"
        go = {Kind.MAP: "map[interface {}]interface {}", Kind.SLICE: "[]interface {}"}
        return f"<{go.get(self.kind, self.kind.value)} Value>"


_ABSENT = Node()


# --- line search (config/validate/context.go, node.go) --------------------------------------

_YAML_KEY = re.compile(r"^ *-? ?(?P<key>.*?):")
_YAML_ELEM = re.compile(r"^ *-")


class _Lines:
    def __init__(self, text: str) -> None:
        self.lines = text.replace("\r", "").split("\n")

    def exhausted(self, i: int) -> bool:
        if i >= len(self.lines):
            return True
        rest = self.lines[i + 1 :]
        return self.lines[i] == "" and (not rest or rest == [""])

    def find(self, i: int, key: str | None) -> tuple[int, bool]:
        while not self.exhausted(i):
            line = self.lines[i]
            if key is None:
                if _YAML_ELEM.match(line):
                    return i, True
            else:
                m = _YAML_KEY.match(line)
                if m and m.group("key") == key:
                    return i, True
            i += 1
        return i, False

    def increment(self, i: int) -> int:
        return i if self.exhausted(i) else i + 1


def _go_key_name(value: Any) -> str:
    # fmt.Sprintf("%s", key) on a non-string key
    if isinstance(value, str):
        return value
    if value is None:
        return "%!s(<nil>)"
    if isinstance(value, bool):
        return f"%!s(bool={go_format_value(value)})"
    if isinstance(value, int):
        return f"%!s(int={value})"
    if isinstance(value, float):
        return f"%!s(float64={go_format_value(value)})"
    return str(value)


def _weak(ynode: yaml.Node, lines: _Lines, ctx: int, out: Node) -> None:
    """toNode() over the weak parse, recording scalars' source text for the strong parse."""
    if isinstance(ynode, yaml.ScalarNode):
        sc = scalar_value(ynode)
        out.value = sc.value
        out.kind = _scalar_kind(sc.value)
        out.text = sc.text
        return
    if isinstance(ynode, yaml.MappingNode):
        out.kind = Kind.MAP
        by_name: dict[str, int] = {}
        for knode, vnode in ynode.value:
            key = scalar_value(knode).value if isinstance(knode, yaml.ScalarNode) else str(knode)
            name = _go_key_name(key)
            child = Node(name=name)
            cctx, ok = lines.find(ctx, name)
            if ok:
                child.line = cctx + 1
            _weak(vnode, lines, cctx, child)
            if name in by_name:  # a repeated key: the last value wins, as in Go maps
                child.line = out.children[by_name[name]].line
                out.children[by_name[name]] = child
            else:
                by_name[name] = len(out.children)
                out.children.append(child)
        return
    if isinstance(ynode, yaml.SequenceNode):
        out.kind = Kind.SLICE
        for i, item in enumerate(ynode.value):
            child = Node(name=f"{out.name}[{i}]")
            ctx, ok = lines.find(ctx, None)
            if ok:
                child.line = ctx + 1
            _weak(item, lines, ctx, child)
            out.children.append(child)
            ctx = lines.increment(ctx)


def _scalar_kind(value: Any) -> Kind:
    if value is None:
        return Kind.INVALID
    if isinstance(value, bool):
        return Kind.BOOL
    if isinstance(value, int):
        return Kind.INT
    if isinstance(value, float):
        return Kind.FLOAT
    return Kind.STRING


def _normalize(node: Node) -> None:
    node.name = node.name.replace("-", "_")
    for c in node.children:
        _normalize(c)


def _is_compatible(n: Kind, g: Kind) -> bool:
    if g is Kind.STRING:
        return n in (Kind.STRING, Kind.INT, Kind.FLOAT, Kind.BOOL)
    if g is Kind.STRUCT:
        return n in (Kind.STRUCT, Kind.MAP)
    if g is Kind.FLOAT:
        return n in (Kind.FLOAT, Kind.INT)
    return n is g


def _coerce(node: Node, spec: TypeSpec | None) -> None:
    """coerceNodes(): a weak leaf takes the strong decoding's value when kinds are compatible."""
    if spec is None:
        return
    if not node.children and node.valid and isinstance(spec, Kind):
        if _is_compatible(node.kind, spec):
            if spec is Kind.STRING:
                node.value, node.kind = node.text, Kind.STRING
            elif spec is Kind.FLOAT:
                node.value, node.kind = float(node.value), Kind.FLOAT
        return
    if isinstance(spec, Struct) and node.kind is Kind.MAP:
        for c in node.children:
            f = spec.field(c.name)
            _coerce(c, f.type if f else None)
    elif isinstance(spec, SliceOf) and node.kind is Kind.SLICE:
        for c in node.children:
            _coerce(c, spec.elem)


def parse_tree(text: str) -> tuple[Node, list[Entry]]:
    """parseCloudConfig(): the coerced tree, or an empty tree and the YAML error entry."""
    try:
        ydoc = compose(text)
    except YamlSyntaxError as err:
        return Node(), [Entry(EntryKind.ERROR, err.message, err.line or 1)]
    root = Node(kind=Kind.MAP)
    if isinstance(ydoc, yaml.MappingNode):
        lines = _Lines(text)
        _weak(ydoc, lines, 0, root)
    _normalize(root)
    _coerce(root, CLOUD_CONFIG)
    return root, []


# --- rules (config/validate/rules.go) --------------------------------------------------------

_Rule = Callable[[Node], Iterator[Entry]]


def _warning(line: int, msg: str) -> Entry:
    return Entry(EntryKind.WARNING, msg, line)


def _error(line: int, msg: str) -> Entry:
    return Entry(EntryKind.ERROR, msg, line)


def check_discovery_url(cfg: Node) -> Iterator[Entry]:
    c = cfg.child("coreos").child("etcd").child("discovery")
    if c.valid and not go_request_uri_ok(c.go_string()):
        yield _warning(c.line, "discovery URL is not valid")


def decode_content(content: bytes, encoding: str) -> bytes:
    """config.DecodeContent: raises ValueError when `content` is not in `encoding`."""
    if encoding == "":
        return content
    if encoding in ("b64", "base64"):
        return go_base64_decode(content)
    if encoding in ("gz", "gzip"):
        return _gunzip(content)
    if encoding in ("gz+base64", "gzip+base64", "gz+b64", "gzip+b64"):
        return _gunzip(go_base64_decode(content))
    raise ValueError(f"Unsupported encoding {go_quote(encoding)}")


def _gunzip(content: bytes) -> bytes:
    import zlib

    if not go_gzip_header_ok(content):
        raise ValueError("Unable to decode gzip: invalid header")
    # Go ignores errors after the header; keep whatever inflates.
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        return d.decompress(content)
    except zlib.error:
        return b""


def _raw(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def check_encoding(cfg: Node) -> Iterator[Entry]:
    for f in cfg.child("write_files").children:
        e = f.child("encoding")
        if not e.valid:
            continue
        c = f.child("content")
        try:
            decode_content(_raw(c.go_string()), e.go_string())
        except ValueError:
            yield _error(c.line, f"content cannot be decoded as {go_quote(e.go_string())}")


def check_structure(cfg: Node) -> Iterator[Entry]:
    yield from _structure(cfg, CLOUD_CONFIG)


def _structure(n: Node, g: TypeSpec) -> Iterator[Entry]:
    if not _is_compatible(n.kind, kind_of(g)):
        yield _warning(n.line, f"incorrect type for {go_quote(n.name)} (want {human_type(g)})")
        return
    if isinstance(g, Struct):
        for cn in n.children:
            cg = g.field(cn.name)
            if cg is None:
                yield _warning(cn.line, f"unrecognized key {go_quote(cn.name)}")
                continue
            if cg.deprecated:
                yield _warning(cn.line, f"deprecated key {go_quote(cn.name)} ({cg.deprecated})")
            yield from _structure(cn, cg.type)
    elif isinstance(g, SliceOf):
        for cn in n.children:
            yield from _structure(cn, g.elem)


def check_validity(cfg: Node) -> Iterator[Entry]:
    yield from _validity(cfg, CLOUD_CONFIG, None)


def _validity(n: Node, g: TypeSpec, f: Field | None) -> Iterator[Entry]:
    if f is not None and f.valid:
        if n.kind is Kind.INVALID:
            raise ValidationFailed("reflect: call of reflect.Value.Interface on zero Value")
        if n.kind in (Kind.MAP, Kind.SLICE):
            raise ValidationFailed(
                f"runtime error: comparing uncomparable type {n.go_string()[1:-7]}"
            )
        if n.value not in ("", 0, False):  # zero values are valid (0.0 == 0 here too)
            shown = go_format_value(n.value)
            if not re.search(f.valid, shown):
                yield _error(n.line, f"invalid value {shown}")
    if isinstance(g, Struct):
        for cn in n.children:
            cg = g.field(cn.name)
            if cg is not None:
                yield from _validity(cn, cg.type, cg)
    elif isinstance(g, SliceOf):
        for cn in n.children:
            yield from _validity(cn, g.elem, None)


def check_write_files(cfg: Node) -> Iterator[Entry]:
    for f in cfg.child("write_files").children:
        c = f.child("path")
        if c.valid and go_path_dir(c.go_string()).startswith("/usr"):
            yield _error(c.line, "file cannot be written to a read-only filesystem")


def check_write_files_under_coreos(cfg: Node) -> Iterator[Entry]:
    c = cfg.child("coreos").child("write_files")
    if c.valid:
        yield Entry(EntryKind.INFO, "write_files doesn't belong under coreos", c.line)


def check_corral(cfg: Node) -> Iterator[Entry]:
    """corral's own rules for its `corral:` section (not part of coreos-cloudinit)."""
    corral = cfg.child("corral")
    for p in corral.child("ports").children:
        if p.kind is Kind.INT and not 1 <= int(p.value) <= 65535:
            yield _error(p.line, f"invalid port {p.value} (want 1-65535)")
    v = corral.child("version")
    if v.kind is Kind.INT and v.value != 1:
        yield _error(v.line, f"unsupported corral settings version {v.value} (want 1)")


RULES: tuple[_Rule, ...] = (
    check_discovery_url,
    check_encoding,
    check_structure,
    check_validity,
    check_write_files,
    check_write_files_under_coreos,
    check_corral,
)


def is_script(text: str) -> bool:
    return text.split("\n", 1)[0].startswith("#!")


def is_cloud_config(text: str) -> bool:
    return text.split("\n", 1)[0].rstrip() == "#cloud-config"


def is_ignition_config(text: str) -> bool:
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    if not isinstance(doc, dict):
        return False
    version = doc.get("ignitionVersion")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        return False
    ign = doc.get("ignition")
    if ign is not None and not isinstance(ign, dict):
        return False
    ign_version = ign.get("version") if isinstance(ign, dict) else None
    if ign_version is not None and not isinstance(ign_version, str):
        return False
    return version is not None or ign_version is not None


def validate(data: bytes | str, rules: tuple[_Rule, ...] = RULES) -> Report:
    """Validate user data; raises ValidationFailed where coreos-cloudinit's validator failed."""
    text = data if isinstance(data, str) else data.decode("utf-8", "surrogateescape")
    if text == "" or is_script(text) or is_ignition_config(text):
        return Report()
    if not is_cloud_config(text):
        return Report((_error(1, 'must be "#cloud-config" or begin with "#!"'),))
    tree, entries = parse_tree(text)
    for rule in rules:
        entries.extend(rule(tree))
    return Report(tuple(entries))
