"""YAML reading with the type rules of the Go YAML library coreos-cloudinit used.

coreos-cloudinit decoded user data with a fork of go-yaml (YAML 1.1 flavour). Its implicit
typing differs from PyYAML's defaults: booleans include `y`/`n`, there are no timestamps and
no base-60 numbers, octal is `0744`. We compose the document with PyYAML (keeping each scalar's
source text, which the validator needs to undo YAML 1.1 coercions such as `off` → false) and
resolve plain scalars with go-yaml's table. Syntax errors are reported with libyaml's wording,
which is what go-yaml (a libyaml port) printed.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.resolver import BaseResolver

__all__ = ["Scalar", "YamlSyntaxError", "compose", "scalar_value"]

BOOL_TAG = "tag:yaml.org,2002:bool"
INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"
NULL_TAG = "tag:yaml.org,2002:null"
STR_TAG = "tag:yaml.org,2002:str"
BINARY_TAG = "tag:yaml.org,2002:binary"

_TRUE = {"y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE"}
_FALSE = {"n", "N", "no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE"}


class _GoResolver(BaseResolver):
    """Implicit resolution of plain scalars, after go-yaml's resolve table."""


_GoResolver.add_implicit_resolver(
    BOOL_TAG, re.compile("^(?:" + "|".join(sorted(_TRUE | _FALSE)) + ")$"), list("yYnNoOtTfF")
)
_GoResolver.add_implicit_resolver(
    INT_TAG,
    re.compile(r"^[-+]?(?:0b[01_]+|0x[0-9a-fA-F_]+|0[0-7_]*|[1-9][0-9_]*)$"),
    list("-+0123456789"),
)
_GoResolver.add_implicit_resolver(
    FLOAT_TAG,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
        r"|[-+]?0[0-9_]+"  # "08": not octal, so Go falls back to ParseFloat
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_GoResolver.add_implicit_resolver(
    NULL_TAG, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)


class _Loader(
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    yaml.composer.Composer,
    _GoResolver,
):
    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _GoResolver.__init__(self)


class YamlSyntaxError(Exception):
    """The document is not YAML; `line` is 1-based, 0 when the parser gave no position."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


def _libyaml_wording(err: yaml.MarkedYAMLError) -> str:
    problem = err.problem or str(err)
    context = err.context or ""
    if problem.startswith("found character") and "cannot start any token" in problem:
        return "found character that cannot start any token"
    if problem.startswith("expected <block end>"):
        if "collection" in context or "sequence" in context:
            return "did not find expected '-' indicator"
        return "did not find expected key"
    m = re.match(r"expected '(.)' or '(.)', but got", problem)
    if m:
        return f"did not find expected '{m.group(1)}' or '{m.group(2)}'"
    m = re.match(r"found undefined alias '(.*)'", problem)
    if m:
        return f"unknown anchor '{m.group(1)}' referenced"
    if problem.startswith("expected '<document start>'"):
        return "did not find expected <document start>"
    return problem


def compose(text: str) -> yaml.Node | None:
    """Compose the first document of `text` (later ones are not read, as in go-yaml)."""
    loader = _Loader(text)
    try:
        return loader.get_node() if loader.check_node() else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        return _raise(mark.line + 1 if mark is not None else 0, _libyaml_wording(err))
    except yaml.YAMLError as err:
        return _raise(0, str(err))
    finally:
        loader.dispose()


def _raise(line: int, message: str) -> yaml.Node | None:
    raise YamlSyntaxError(line, message)


@dataclass(frozen=True, slots=True)
class Scalar:
    """A scalar's Go-weak value and its source text (what a Go string field would get)."""

    value: Any  # str | int | float | bool | None
    text: str


def _parse_int(text: str) -> int:
    plain = text.replace("_", "")
    sign = -1 if plain.startswith("-") else 1
    plain = plain.lstrip("+-")
    if plain.startswith("0b"):
        return sign * int(plain[2:], 2)
    if plain.startswith("0x"):
        return sign * int(plain[2:], 16)
    if plain.startswith("0") and len(plain) > 1:
        return sign * int(plain[1:], 8)
    return sign * int(plain, 10)


def _parse_float(text: str) -> float:
    plain = text.replace("_", "")
    low = plain.lower()
    if low.endswith(".inf"):
        return float("-inf") if low.startswith("-") else float("inf")
    if low == ".nan":
        return float("nan")
    if low.endswith(".") or low.startswith(("+.", "-.")):
        plain = plain.replace(".", ".0", 1) if low.endswith(".") else plain
    return float(plain)


def scalar_value(node: yaml.ScalarNode) -> Scalar:
    """The weakly-typed value go-yaml gives a scalar decoded into `interface{}`."""
    text = str(node.value)
    tag = node.tag
    try:
        if tag == BINARY_TAG:
            raw = base64.decodebytes(text.encode("ascii", "surrogateescape"))
            decoded = raw.decode("utf-8", "surrogateescape")
            return Scalar(decoded, decoded)
        if tag == BOOL_TAG:
            return Scalar(text in _TRUE or text.lower() == "true", text)
        if tag == INT_TAG:
            return Scalar(_parse_int(text), text)
        if tag == FLOAT_TAG:
            return Scalar(_parse_float(text), text)
        if tag == NULL_TAG:
            return Scalar(None, text)
    except (ValueError, binascii.Error, UnicodeError):
        pass
    return Scalar(text, text)
