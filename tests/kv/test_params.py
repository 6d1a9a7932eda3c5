"""Request parsing as etcd 3.4 does it: Go's ParseForm, then etcd's validation order (§4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.kv.errors import V2Error
from corral.kv.params import (
    MAX_FORM_BYTES,
    EscapeError,
    KeysRequest,
    clean_path,
    decode_path,
    go_parse_bool,
    go_parse_uint,
    keys_key,
    parse_form,
    parse_keys_request,
)

FORM = "application/x-www-form-urlencoded"


def req(
    method: str, query: str = "", body: str | None = None, ctype: str | None = FORM
) -> KeysRequest:
    form = parse_form(method, query.encode(), None if body is None else body.encode(), ctype)
    return parse_keys_request(method, "/k", form)


def err(
    method: str, query: str = "", body: str | None = None, ctype: str | None = FORM
) -> tuple[int, str, int]:
    with pytest.raises(V2Error) as exc:
        req(method, query, body, ctype)
    return exc.value.code, exc.value.cause, exc.value.index


def test_body_beats_query_only_for_form_put_post() -> None:
    assert req("PUT", "value=fromquery", "value=frombody").value == "frombody"
    assert req("PUT", "value=fromquery").value == "fromquery"
    assert req("PUT", "value=q", "value=b", "application/json").value == "q"
    assert req("PUT", "", "value=b", None).value == ""
    assert req("DELETE", "", "prevValue=x").prev_value == ""  # DELETE bodies are ignored
    assert req("POST", "", "value=b", FORM + "; charset=utf-8").value == "b"


def test_validation_order_matches_etcd() -> None:
    assert err("PUT", "prevIndex=abc&waitIndex=abc") == (203, 'invalid value for "prevIndex"', 0)
    assert err("GET", "waitIndex=x&recursive=maybe")[1] == 'invalid value for "waitIndex"'
    assert err("GET", "sorted=2&recursive=yes")[1] == 'invalid value for "recursive"'
    assert err("GET", "stream=abc&quorum=abc")[1] == 'invalid value for "quorum"'
    assert err("PUT", "wait=true&prevValue=") == (
        209,
        '"wait" can only be used with GET requests',
        0,
    )
    assert err("HEAD", "wait=true")[1] == '"wait" can only be used with GET requests'
    assert err("PUT", "prevValue=&noValueOnSuccess=x")[:2] == (201, '"prevValue" cannot be empty')
    assert err("PUT", "noValueOnSuccess=x&ttl=abc")[1] == 'invalid value for "noValueOnSuccess"'
    assert err("PUT", "ttl=abc&prevExist=maybe")[:2] == (202, 'invalid value for "ttl"')
    assert err("PUT", "prevExist=maybe&refresh=maybe")[1] == "invalid value for prevExist"
    assert err("PUT", "refresh=maybe")[1] == "invalid value for refresh"
    assert err("PUT", "refresh=true&value=x&ttl=5")[:2] == (
        211,
        "A value was provided on a refresh",
    )
    assert err("PUT", "refresh=true")[:2] == (212, "No TTL value set")
    assert err("PUT", "refresh=true&value=")[:2] == (212, "No TTL value set")


def test_form_errors_are_210_with_go_text() -> None:
    assert err("PUT", "value=%zz") == (210, 'invalid URL escape "%zz"', 0)
    assert err("PUT", "value=%") == (210, 'invalid URL escape "%"', 0)
    assert err("PUT", "a=1;b=2") == (210, "invalid semicolon separator in query", 0)
    assert err("PUT", "value=%zz", "value=%G")[1] == 'invalid URL escape "%G"'  # body first
    big = "value=" + "x" * MAX_FORM_BYTES
    assert err("PUT", "", big)[:2] == (210, "http: POST too large")


def test_ttl_and_indexes() -> None:
    assert req("PUT", "ttl=").ttl is None  # empty ttl: permanent
    assert req("PUT", "ttl=0").ttl == 0
    assert req("PUT", "ttl=18446744073709551615").ttl == 2**64 - 1
    for bad in ("-1", "1.5", "+1", " 1", "18446744073709551616", "1e3"):
        assert err("PUT", f"ttl={bad}")[0] == 202, bad
    assert err("PUT", "prevIndex=")[0] == 203  # present but empty is not a number
    assert req("PUT", "prevIndex=0").prev_index == 0


def test_nullable_booleans() -> None:
    r = req("PUT")
    assert r.prev_exist is None and r.refresh is None
    assert req("PUT", "prevExist=False").prev_exist is False
    assert req("PUT", "prevExist=T").prev_exist is True


def test_go_parse_bool_exact_set() -> None:
    for s in ("1", "t", "T", "TRUE", "true", "True"):
        assert go_parse_bool(s) is True
    for s in ("0", "f", "F", "FALSE", "false", "False"):
        assert go_parse_bool(s) is False
    for s in ("", "yes", "tRUE", "2", " true"):
        with pytest.raises(ValueError):
            go_parse_bool(s)


@given(st.text(max_size=30))
def test_go_parse_uint_accepts_only_decimal_digits(s: str) -> None:
    try:
        v = go_parse_uint(s)
    except ValueError:
        assert not (s.isascii() and s.isdigit() and int(s) < 2**64)
    else:
        assert str(v) == s.lstrip("0") or (v == 0 and set(s) == {"0"})


@given(st.binary(max_size=40))
def test_parse_form_never_crashes(raw: bytes) -> None:
    try:
        parse_form("PUT", raw, raw, FORM)
    except V2Error as exc:
        assert exc.code == 210


def test_paths_like_go() -> None:
    assert clean_path("/v2/keys//a") == "/v2/keys/a"
    assert clean_path("/v2/keys/a/") == "/v2/keys/a/"
    assert clean_path("/v2/keys/x/../a") == "/v2/keys/a"
    assert clean_path("//") == "/"
    assert decode_path(b"/v2/keys/a%2Fb+c%20d") == "/v2/keys/a/b+c d"
    assert decode_path(b"/k/\xff") == "/k/\ufffd"
    with pytest.raises(EscapeError, match='invalid URL escape "%"'):
        decode_path(b"/v2/keys/%")
    assert keys_key("") == "/"
    assert keys_key("/") == "/"
    assert keys_key("/a/b/") == "/a/b"


def test_invalid_utf8_is_one_replacement_per_byte() -> None:
    r = req("PUT", "value=%FF%FEok")
    assert r.value == "\ufffd\ufffdok"
