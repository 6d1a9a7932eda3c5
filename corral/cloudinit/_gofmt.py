"""Small re-creations of Go standard-library behaviour that cloud-config messages depend on.

coreos-cloudinit's messages and rendered files are produced by Go's `fmt` (`%v`, `%q`),
`path.Clean`/`path.Dir`, `net/url.ParseRequestURI`, `encoding/base64` and `compress/gzip`
header checks; byte-exact compatibility needs the same rules, so they live here, pure.
"""

from __future__ import annotations

import binascii
import decimal
import re

__all__ = [
    "go_base64_decode",
    "go_format_value",
    "go_gzip_header_ok",
    "go_path_clean",
    "go_path_dir",
    "go_quote",
    "go_request_uri_ok",
]


def go_quote(s: str) -> str:
    """Go's `%q` (strconv.Quote) for the printable strings messages carry."""
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xDC80 <= code <= 0xDCFF:  # a raw byte kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _go_float(f: float) -> str:
    # strconv.FormatFloat(f, 'g', -1, 64): shortest digits, exponent form when exp < -4 or >= 6
    # for %v (fmt switches %v on floats to %g with the shortest representation).
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if str(f).startswith("-") else "0"
    d = decimal.Decimal(repr(f))
    sign, digits, exponent = d.normalize().as_tuple()
    assert isinstance(exponent, int)
    ds = "".join(map(str, digits))
    exp10 = len(ds) - 1 + exponent
    neg = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        esign = "+" if exp10 >= 0 else "-"
        return f"{neg}{mant}e{esign}{abs(exp10):02d}"
    if exponent >= 0:
        return neg + ds + "0" * exponent
    point = len(ds) + exponent
    if point > 0:
        return neg + ds[:point] + "." + ds[point:]
    return neg + "0." + "0" * (-point) + ds


def go_format_value(value: object) -> str:
    """Go's `%v` for the scalar kinds YAML produces (string, int, float64, bool)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    return str(value)


def go_path_clean(p: str) -> str:
    """Go's path.Clean (lexical, slash-separated)."""
    if p == "":
        return "."
    rooted = p.startswith("/")
    parts: list[str] = []
    for part in p.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    out = "/".join(parts)
    if rooted:
        return "/" + out
    return out or "."


def go_path_dir(p: str) -> str:
    """Go's path.Dir: everything but the last element, cleaned."""
    head = p[: p.rfind("/") + 1]
    return go_path_clean(head)


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
_HOST_OK = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:\[\]%]*$")


def go_request_uri_ok(raw: str) -> bool:
    """Whether Go's url.ParseRequestURI accepts `raw` (absolute URI or absolute path)."""
    if raw == "" or any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        return False
    scheme = ""
    rest = raw
    for i, ch in enumerate(raw):
        if ch == ":":
            if i == 0:
                return False  # "missing protocol scheme"
            scheme, rest = raw[:i], raw[i + 1 :]
            break
        if not (ch.isascii() and (ch.isalnum() or (i > 0 and ch in "+-."))):
            break
    if scheme and not _SCHEME.match(scheme):
        return False
    if "?" in rest:
        rest = rest.split("?", 1)[0]
    if not rest.startswith("/"):
        return False
    if rest.startswith("//"):
        authority = rest[2:].split("/", 1)[0]
        host = authority.rsplit("@", 1)[-1]
        if not _HOST_OK.match(host):
            return False
    return True


def go_base64_decode(content: bytes) -> bytes:
    """encoding/base64 StdEncoding.DecodeString: strict padding, CR and LF ignored."""
    cleaned = content.replace(b"\r", b"").replace(b"\n", b"")
    try:
        return binascii.a2b_base64(cleaned, strict_mode=True)
    except binascii.Error as exc:
        raise ValueError(f"illegal base64 data: {exc}") from exc


def go_gzip_header_ok(content: bytes) -> bool:
    """Whether gzip.NewReader accepts the header (the body is not checked, as in Go)."""
    if len(content) < 10 or content[0] != 0x1F or content[1] != 0x8B or content[2] != 8:
        return False
    flags = content[3]
    pos = 10
    if flags & 0x04:  # FEXTRA
        if len(content) < pos + 2:
            return False
        pos += 2 + int.from_bytes(content[pos : pos + 2], "little")
    for bit in (0x08, 0x10):  # FNAME, FCOMMENT: NUL-terminated
        if flags & bit:
            end = content.find(b"\x00", pos)
            if end < 0:
                return False
            pos = end + 1
    if flags & 0x02:  # FHCRC
        pos += 2
    return pos <= len(content)
