"""Event rendering: Go's encoding/json as etcd 3.4.23 writes it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.kv.events import (
    Action,
    Event,
    Node,
    format_expiration,
    render_event,
    ttl_seconds,
)

S = 1_000_000_000


def test_field_order_and_omitempty() -> None:
    ev = Event(
        Action.SET,
        Node("/k", "v", False, None, None, 5, 5),
        Node("/k", "", False, None, None, 4, 4),
        5,
        now=0,
    )
    assert render_event(ev) == (
        b'{"action":"set","node":{"key":"/k","value":"v","modifiedIndex":5,"createdIndex":5},'
        b'"prevNode":{"key":"/k","value":"","modifiedIndex":4,"createdIndex":4}}\n'
    )
    root = Event(Action.GET, Node("/", None, True, None, (), 0, 0), None, 3)
    assert render_event(root, 0) == b'{"action":"get","node":{"dir":true}}\n'
    deleted = Event(Action.DELETE, Node("/d", None, True, None, None, 9, 2), None, 9, now=0)
    assert render_event(deleted) == (
        b'{"action":"delete","node":{"key":"/d","dir":true,"modifiedIndex":9,"createdIndex":2}}\n'
    )
    assert render_event(ev, no_value=True) == b'{"action":"set"}\n'


@pytest.mark.parametrize(
    ("stamp", "text"),
    [
        (1795900477727514640, "2026-11-28T21:14:37.72751464Z"),
        (1795900462726565787, "2026-11-28T21:14:22.726565787Z"),
        (1795900462 * S, "2026-11-28T21:14:22Z"),
        (0, "1970-01-01T00:00:00Z"),
        (951782400 * S + 100, "2000-02-29T00:00:00.0000001Z"),
        (253402300799 * S, "9999-12-31T23:59:59Z"),
        (253402300800 * S, "10000-01-01T00:00:00Z"),
    ],
)
def test_expiration_is_rfc3339_nano_utc(stamp: int, text: str) -> None:
    assert format_expiration(stamp) == text


@pytest.mark.parametrize(
    ("left", "ttl"),
    [(5 * S, 5), (5 * S - 1, 5), (4 * S + 1, 5), (1, 1), (0, 0), (-1, 0), (-S + 1, 0),
     (-S, -1), (-(3 * S) // 2, -1)],
)  # fmt: skip
def test_ttl_is_go_ceiling_then_truncation(left: int, ttl: int) -> None:
    assert ttl_seconds(1000 * S + left, 1000 * S) == ttl


def test_ttl_rendered_with_apply_time_clock_and_cached() -> None:
    node = Node("/t", "v", False, 10 * S, None, 7, 7)
    applied = Event(Action.SET, node, None, 7, now=5 * S)
    first = render_event(applied, now=9 * S)  # the event's own clock wins
    assert b'"ttl":5' in first
    assert render_event(applied, now=99 * S) is first  # rendered once, shared
    got = Event(Action.GET, node, None, 7)
    assert b'"ttl":1' in render_event(got, now=9 * S)
    assert b'"ttl"' not in render_event(got, now=10 * S)
    assert b'"ttl":-2' in render_event(got, now=12 * S)
    with pytest.raises(ValueError, match="needs `now`"):
        render_event(got)


def test_strings_escaped_like_go() -> None:
    ev = Event(Action.SET, Node("/e<b>&", "\x08\x0c\u2028\u2029\x7f\x01\n\t\"\\é✓", False,
                                None, None, 10, 10), None, 10, now=0)  # fmt: skip
    body = render_event(ev)
    assert body == (
        '{"action":"set","node":{"key":"/e\\u003cb\\u003e\\u0026","value":'
        '"\\u0008\\u000c\\u2028\\u2029\x7f\\u0001\\n\\t\\"\\\\é✓",'
        '"modifiedIndex":10,"createdIndex":10}}\n'
    ).encode()
    assert json.loads(body)["node"]["value"] == "\x08\x0c\u2028\u2029\x7f\x01\n\t\"\\é✓"
    # A literal backslash-u in a value with specials stays a literal.
    tricky = Event(Action.SET, Node("/k", "\\u003c<", False, None, None, 1, 1), None, 1, now=0)
    assert json.loads(render_event(tricky))["node"]["value"] == "\\u003c<"
    # Undecodable bytes (lone surrogates from surrogateescape) become U+FFFD, as in Go.
    bad = Event(Action.SET, Node("/k\udcff", "v", False, None, None, 1, 1), None, 1, now=0)
    assert json.loads(render_event(bad))["node"]["key"] == "/k\ufffd"


def test_deep_tree_renders_without_recursion() -> None:
    depth = 5000
    node = Node("/leaf", "v", False, None, None, 1, 1)
    for i in range(depth):
        node = Node(f"/d{i}", None, True, None, (node,), 1, 1)
    body = render_event(Event(Action.GET, node, None, 1), 0)
    assert body.count(b'"nodes":[') == depth
    assert body.endswith(b"}\n")


def test_nested_listing_order() -> None:
    kids = (
        Node("/s/a", "1", False, None, None, 2, 2),
        Node("/s/c", None, True, None, (Node("/s/c/z", "1", False, None, None, 4, 4),), 3, 3),
        Node("/s/e", None, True, None, (), 5, 5),
    )
    ev = Event(Action.GET, Node("/s", None, True, None, kids, 1, 1), None, 5)
    assert render_event(ev, 0) == (
        b'{"action":"get","node":{"key":"/s","dir":true,"nodes":[{"key":"/s/a","value":"1",'
        b'"modifiedIndex":2,"createdIndex":2},{"key":"/s/c","dir":true,"nodes":[{"key":"/s/c/z",'
        b'"value":"1","modifiedIndex":4,"createdIndex":4}],"modifiedIndex":3,"createdIndex":3},'
        b'{"key":"/s/e","dir":true,"modifiedIndex":5,"createdIndex":5}],"modifiedIndex":1,'
        b'"createdIndex":1}}\n'
    )


@given(key=st.text(max_size=30), value=st.text(max_size=30))
def test_any_string_renders_to_json_that_reads_back(key: str, value: str) -> None:
    ev = Event(Action.SET, Node("/k" + key, value, False, None, None, 1, 1), None, 1, now=0)
    body = render_event(ev)
    assert body.endswith(b"}\n") and b"\n" not in body[:-1]
    node = json.loads(body)["node"]

    def go(s: str) -> str:  # what Go sends for a string that is not valid UTF-8
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in s)

    assert node["key"] == go("/k" + key) and node["value"] == go(value)
    assert not any(c in body for c in b"<>&")
