"""Parsing a `/v2/keys` request the way etcd 3.4 does (pure: no I/O, no clock).

Theory of operation. etcd's handler (`etcdserver/api/v2http/client.go`, `parseKeyRequest`)
first runs Go's `Request.ParseForm` and then reads each parameter with its first value, in a
fixed order; the first failure is the answer (reference §4). This module reproduces both
layers so that a malformed request gets etcd's exact error code and cause:

1. **Form** (`parse_form`): for PUT/POST/PATCH with `Content-Type:
   application/x-www-form-urlencoded` the body is parsed *before* the query string, so body
   values come first and win. Any other content type leaves the body unread. The first
   escape error (body first) is the answer: 210 with Go's text (`invalid URL escape "%zz"`).
   Like Go, a body over 10 MiB is "http: POST too large". `;` in a pair is Go's
   `invalid semicolon separator in query`.
2. **Fields** (`parse_keys_request`): prevIndex (203), waitIndex (203), the booleans
   recursive, sorted, wait, dir, quorum, stream (209), `wait` off GET (209), empty prevValue
   (201), noValueOnSuccess (209), ttl (202), prevExist (209), refresh (209), then the
   refresh rules (211, 212). Booleans follow Go's `strconv.ParseBool`; numbers Go's
   `strconv.ParseUint(s, 10, 64)`.

Bytes that are not UTF-8 (in the path, names or values) are decoded with one U+FFFD per bad
byte, which is what Go's JSON encoder prints for them.

Paths: `clean_path` is Go's `path.Clean` plus `ServeMux`'s trailing-slash rule; `decode_path`
is Go's path unescaping (`%2F` becomes a separator, `+` stays `+`); `keys_key` turns the part
after `/v2/keys` into the keyspace's cleaned key.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from corral.kv.errors import V2Error, error_for

__all__ = [
    "MAX_FORM_BYTES",
    "EscapeError",
    "Form",
    "KeysRequest",
    "clean_path",
    "decode_path",
    "go_parse_bool",
    "go_parse_uint",
    "keys_key",
    "parse_form",
    "parse_keys_request",
    "parse_query",
]

#: Go's `maxFormSize` for url-encoded bodies.
MAX_FORM_BYTES = 10 << 20

_UINT64_MAX = (1 << 64) - 1
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_HEX = frozenset(b"0123456789abcdefABCDEF")
_FORM_TYPE = "application/x-www-form-urlencoded"


def _one_replacement_per_byte(exc: UnicodeError) -> tuple[str, int]:
    assert isinstance(exc, UnicodeDecodeError)
    return "\ufffd", exc.start + 1


codecs.register_error("corral-go-utf8", _one_replacement_per_byte)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "corral-go-utf8")


class EscapeError(ValueError):
    """A bad percent-escape; `str()` is Go's `url.EscapeError` text."""

    def __init__(self, bad: bytes) -> None:
        super().__init__(f"invalid URL escape {_go_quote(_text(bad))}")


def _go_quote(s: str) -> str:
    """Go's `strconv.Quote` for the short strings that appear in error causes."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\ufffd" or ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x80 else f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _unescape(raw: bytes, query: bool) -> bytes:
    """Go's `url.unescape` in query mode (`+` is a space) or path mode."""
    if b"%" not in raw and not (query and b"+" in raw):
        return raw
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x25:  # '%'
            if i + 2 >= n or raw[i + 1] not in _HEX or raw[i + 2] not in _HEX:
                raise EscapeError(raw[i : i + 3])
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        elif c == 0x2B and query:  # '+'
            out.append(0x20)
            i += 1
        else:
            out.append(c)
            i += 1
    return bytes(out)


def parse_query(raw: bytes) -> tuple[list[tuple[str, str]], str | None]:
    """Go's `url.ParseQuery`: the pairs it keeps, and the first error's text (or None)."""
    pairs: list[tuple[str, str]] = []
    err: str | None = None
    for part in raw.split(b"&"):
        if not part:
            continue
        if b";" in part:
            err = err or "invalid semicolon separator in query"
            continue
        key, _, value = part.partition(b"=")
        try:
            k = _unescape(key, True)
            v = _unescape(value, True)
        except EscapeError as exc:
            err = err or str(exc)
            continue
        pairs.append((_text(k), _text(v)))
    return pairs, err


@dataclass(frozen=True, slots=True)
class Form:
    """Merged parameters (body first, then query) with Go's first-value lookups."""

    pairs: tuple[tuple[str, str], ...]

    def has(self, name: str) -> bool:
        return any(k == name for k, _ in self.pairs)

    def get(self, name: str) -> str:
        """The first value, or "" when absent (Go's `FormValue`)."""
        for k, v in self.pairs:
            if k == name:
                return v
        return ""


def _media_type(content_type: str | None) -> str:
    if not content_type:
        return "application/octet-stream"
    return content_type.split(";", 1)[0].strip().lower()


def parse_form(method: str, raw_query: bytes, body: bytes | None, content_type: str | None) -> Form:
    """Go's `Request.ParseForm` (body before query; only a url-encoded PUT/POST/PATCH body).

    Raises V2Error 210 with Go's error text, like etcd. `body` is None when it was not read;
    a body longer than MAX_FORM_BYTES is refused.
    """
    pairs: list[tuple[str, str]] = []
    err: str | None = None
    if method in ("POST", "PUT", "PATCH") and _media_type(content_type) == _FORM_TYPE:
        if body is not None and len(body) > MAX_FORM_BYTES:
            err = "http: POST too large"
        elif body:
            pairs, err = parse_query(body)
    query_pairs, qerr = parse_query(raw_query)
    pairs.extend(query_pairs)
    err = err or qerr
    if err is not None:
        raise error_for(210, err)
    return Form(tuple(pairs))


def reads_body(method: str, content_type: str | None) -> bool:
    """Whether Go would read the body at all (the shell reads it only then)."""
    return method in ("POST", "PUT", "PATCH") and _media_type(content_type) == _FORM_TYPE


def go_parse_bool(s: str) -> bool:
    """Go's `strconv.ParseBool`; ValueError for anything else (the empty string too)."""
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(s)


def go_parse_uint(s: str) -> int:
    """Go's `strconv.ParseUint(s, 10, 64)`: ASCII digits only, no sign, at most 2**64-1."""
    if not s or not s.isascii() or not s.isdigit():
        raise ValueError(s)
    v = int(s)
    if v > _UINT64_MAX:
        raise ValueError(s)
    return v


@dataclass(frozen=True, slots=True)
class KeysRequest:
    """A validated `/v2/keys` request (etcd's `etcdserverpb.Request` plus two flags)."""

    method: str
    key: str
    value: str = ""
    dir: bool = False
    ttl: int | None = None
    prev_exist: bool | None = None
    prev_value: str = ""
    prev_index: int = 0
    recursive: bool = False
    sorted: bool = False
    wait: bool = False
    wait_index: int = 0
    stream: bool = False
    quorum: bool = False
    refresh: bool | None = None
    no_value_on_success: bool = False


def _uint(first: dict[str, str], name: str, code: int, cause: str) -> int:
    value = first.get(name)
    if value is None:
        return 0
    try:
        return go_parse_uint(value)
    except ValueError:
        raise error_for(code, cause) from None


def _bool(first: dict[str, str], name: str, cause: str) -> bool:
    value = first.get(name)
    if value is None:
        return False
    try:
        return go_parse_bool(value)
    except ValueError:
        raise error_for(209, cause) from None


_FLAGS = ("recursive", "sorted", "wait", "dir", "quorum", "stream")
_FLAG_CAUSES = {name: f'invalid value for "{name}"' for name in _FLAGS}


def parse_keys_request(method: str, key: str, form: Form) -> KeysRequest:
    """Validate the parameters in etcd's order (reference §4); raises V2Error (index 0)."""
    first = dict(reversed(form.pairs))  # each name's first value, as Go's FormValue
    if not first or (len(first) == 1 and "value" in first):
        # The common request (a plain set or get) has nothing to validate.
        return KeysRequest(method=method, key=key, value=first.get("value", ""))
    prev_index = _uint(first, "prevIndex", 203, 'invalid value for "prevIndex"')
    wait_index = _uint(first, "waitIndex", 203, 'invalid value for "waitIndex"')
    flags = {name: _bool(first, name, _FLAG_CAUSES[name]) for name in _FLAGS}
    if flags["wait"] and method != "GET":
        raise error_for(209, '"wait" can only be used with GET requests')
    prev_value = first.get("prevValue", "")
    if "prevValue" in first and prev_value == "":
        raise error_for(201, '"prevValue" cannot be empty')
    no_value = _bool(first, "noValueOnSuccess", 'invalid value for "noValueOnSuccess"')
    ttl: int | None = None
    if first.get("ttl"):
        ttl = _uint(first, "ttl", 202, 'invalid value for "ttl"')
    prev_exist: bool | None = None
    if "prevExist" in first:
        prev_exist = _bool(first, "prevExist", "invalid value for prevExist")
    refresh: bool | None = None
    if "refresh" in first:
        refresh = _bool(first, "refresh", "invalid value for refresh")
        if refresh:
            if first.get("value"):
                raise error_for(211, "A value was provided on a refresh")
            if ttl is None:
                raise error_for(212, "No TTL value set")
    return KeysRequest(
        method=method,
        key=key,
        value=first.get("value", ""),
        dir=flags["dir"],
        ttl=ttl,
        prev_exist=prev_exist,
        prev_value=prev_value,
        prev_index=prev_index,
        recursive=flags["recursive"],
        sorted=flags["sorted"],
        wait=flags["wait"],
        wait_index=wait_index,
        stream=flags["stream"],
        quorum=flags["quorum"],
        refresh=refresh,
        no_value_on_success=no_value,
    )


def decode_path(raw_path: bytes) -> str:
    """Go's path unescaping (`%2F` decodes to `/`, `+` stays); raises EscapeError."""
    return _text(_unescape(raw_path, False))


def _go_clean(p: str) -> str:
    """Go's `path.Clean` for a rooted path."""
    if "//" not in p and "/." not in p:  # already clean but for a trailing slash
        return p[:-1] if len(p) > 1 and p[-1] == "/" else p
    out: list[str] = []
    for part in p.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return "/" + "/".join(out)


def clean_path(p: str) -> str:
    """`ServeMux`'s cleanPath: Go's `path.Clean`, keeping one trailing slash."""
    if not p:
        return "/"
    if p[0] != "/":
        p = "/" + p
    np = _go_clean(p)
    if p.endswith("/") and np != "/":
        np += "/"
    return np


def keys_key(rest: str) -> str:
    """The keyspace key for the path after `/v2/keys` (`path.Join("/", rest)`)."""
    return _go_clean(rest if rest.startswith("/") else "/" + rest)


def make_error(code: int, cause: str = "") -> V2Error:
    """Request-validation errors carry index 0 (and X-Etcd-Index: 0)."""
    return error_for(code, cause, 0)
