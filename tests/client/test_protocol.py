"""The sans-IO core: request building, answer parsing, errors, watch cursor, endpoint pool."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

import corral.client as client
from corral.client import errors as E
from corral.client import protocol as p
from corral.client.endpoints import EndpointPool, normalize_endpoint

H = {"X-Etcd-Index": "7", "X-Raft-Index": "12", "X-Raft-Term": "2",
     "X-Etcd-Cluster-Id": "48276a8f75b6a87"}


def test_public_surface_is_sorted_and_complete() -> None:
    assert client.__all__ == sorted(client.__all__)
    for name in client.__all__:
        assert getattr(client, name) is not None


def test_get_request_matches_go_client() -> None:
    r = p.req_get("foo/bar", recursive=True, sorted=True)
    assert (r.method, r.path) == ("GET", "/v2/keys/foo/bar")
    assert r.target == "/v2/keys/foo/bar?quorum=false&recursive=true&sorted=true"
    assert r.idempotent and r.body is None


def test_set_puts_value_in_form_and_conditions_in_query() -> None:
    r = p.req_set("/k", "v 1", ttl=5, prev_value="old", prev_index=3)
    assert r.method == "PUT" and not r.idempotent
    assert r.content_type == "application/x-www-form-urlencoded"
    assert r.body is not None
    assert dict(parse_qsl(r.body.decode())) == {"ttl": "5", "value": "v 1"}
    assert dict(r.query) == {"prevValue": "old", "prevIndex": "3"}


@pytest.mark.parametrize(
    ("kwargs", "query"),
    [
        ({"prev_exist": False}, {"prevExist": "false"}),
        ({"prev_exist": True}, {"prevExist": "true"}),
        ({"dir": True, "prev_exist": False}, {"dir": "true", "prevExist": "false"}),
        ({"prev_index": 0}, {}),  # 0 means "no condition" on the wire too
    ],
)
def test_put_variants(kwargs: dict[str, object], query: dict[str, str]) -> None:
    r = p.req_set("/k", None, **kwargs)  # type: ignore[arg-type]
    assert dict(r.query) == query


def test_delete_and_post_and_watch() -> None:
    d = p.req_delete("/d", recursive=True)
    assert (d.method, dict(d.query), d.idempotent) == ("DELETE", {"recursive": "true"}, False)
    cad = p.req_delete("/d", prev_value="x")
    assert dict(cad.query) == {"prevValue": "x"}
    post = p.req_append("/q", "job", ttl=9)
    assert post.method == "POST" and not post.idempotent
    w = p.req_watch("/w", wait_index=42, recursive=True)
    assert w.watch and w.idempotent
    assert dict(w.query) == {"wait": "true", "waitIndex": "42", "recursive": "true"}


@pytest.mark.parametrize(
    "call",
    [
        lambda: p.req_set("/k", "v", ttl=-1),
        lambda: p.req_set("/k", "v", prev_value=""),
        lambda: p.req_set("/k", "v", dir=True),
        lambda: p.req_set("/k", "v", refresh=True, ttl=3),
        lambda: p.req_set("/k", None, refresh=True),
        lambda: p.req_set("/k", 5),  # type: ignore[arg-type]
        lambda: p.req_delete("/k", prev_index=-2),
        lambda: p.req_remove_member("not-hex"),
        lambda: p.req_stats("bogus"),
    ],
)
def test_bad_input_is_a_usage_error_before_any_io(call: object) -> None:
    with pytest.raises(E.UsageError):
        call()  # type: ignore[operator]


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1))
def test_key_encoding_round_trips(key: str) -> None:
    path = p.keys_path(key)
    assert "?" not in path and "#" not in path
    expected = key if key.startswith("/") else "/" + key
    assert unquote(urlsplit("http://h" + path).path) == "/v2/keys" + expected


def test_parse_success_reads_headers_and_nodes() -> None:
    body = json.dumps({"action": "get", "node": {
        "key": "/d", "dir": True, "modifiedIndex": 4, "createdIndex": 4,
        "nodes": [{"key": "/d/a", "value": "1", "modifiedIndex": 5, "createdIndex": 5,
                   "ttl": 3, "expiration": "2026-11-28T21:14:37.72751464Z"}]}}).encode()
    r = p.parse_keys(200, H, body)
    assert r.action == "get" and r.etcd_index == 7 and r.raft_index == 12
    assert r.cluster_id == "48276a8f75b6a87"
    assert r.node is not None and r.node.dir
    assert [n.key for n in r.node.walk()] == ["/d/a"]
    assert r.node.nodes[0].ttl == 3


@pytest.mark.parametrize(
    ("code", "status", "cls"),
    [
        (100, 404, E.KeyNotFound), (101, 412, E.CompareFailed), (102, 403, E.NotAFile),
        (104, 400, E.NotADirectory), (105, 412, E.NodeExists), (107, 400, E.RootReadOnly),
        (108, 403, E.DirectoryNotEmpty), (110, 401, E.Unauthorized),
        (209, 400, E.InvalidRequest), (300, 500, E.RaftInternalError),
        (401, 400, E.EventIndexCleared), (106, 400, E.EtcdError),
    ],
)
def test_error_codes_map_to_the_tree(code: int, status: int, cls: type[E.EtcdError]) -> None:
    body = json.dumps({"errorCode": code, "message": "m", "cause": "/c", "index": 9}).encode()
    with pytest.raises(cls) as info:
        p.parse_keys(status, {"X-Etcd-Index": "9"}, body)
    assert type(info.value) is cls
    assert (info.value.code, info.value.cause, info.value.index) == (code, "/c", 9)
    assert str(info.value) == f"{code}: m (/c) [9]"


def test_garbage_answers_are_protocol_errors() -> None:
    with pytest.raises(E.ProtocolError):
        p.parse_keys(200, {}, b"not json")
    with pytest.raises(E.ProtocolError):
        p.parse_keys(404, {}, b"404 page not found\n")
    with pytest.raises(E.MembersError) as info:
        p.parse_json(404, {}, b'{"message":"No such member: 12"}')
    assert info.value.message == "No such member: 12"


def test_health_accepts_string_and_bool() -> None:
    assert p.parse_health(200, b'{"health":"true"}')
    assert p.parse_health(200, b'{"health":true}')
    assert not p.parse_health(503, b'{"health":"false"}')
    assert not p.parse_health(200, b"garbage")


def test_retry_rule_never_resends_a_write_that_may_have_arrived() -> None:
    read, write = p.req_get("/k"), p.req_set("/k", "v")
    for failure in p.Failure:
        assert p.may_retry(read, failure)
    assert p.may_retry(write, p.Failure.NOT_SENT)
    assert not p.may_retry(write, p.Failure.SENT)
    assert not p.may_retry(write, p.Failure.SERVER)
    assert not p.may_retry(p.req_append("/q", "x"), p.Failure.SENT)
    assert not p.may_retry(p.req_delete("/k"), p.Failure.SENT)


def _event(index: int) -> p.KeyResult:
    return p.KeyResult("set", p.Node("/w", "v", modified_index=index, created_index=index),
                       etcd_index=index)


def test_watch_cursor_rewatches_after_modified_index() -> None:
    c = p.WatchCursor("/w", recursive=True)
    assert "waitIndex" not in dict(c.request().query)
    c.on_event(_event(10))
    assert dict(c.request().query)["waitIndex"] == "11"


def test_watch_cursor_resyncs_on_index_cleared() -> None:
    c = p.WatchCursor("/w", next_index=3)
    c.on_error(E.EventIndexCleared(401, "cleared", "[1004/3]", 2003))
    req = c.request()
    assert not req.watch and dict(req.query)["quorum"] == "true"
    got = c.resynced(_event(1500))
    assert got.action == "set" and c.next_index == 1501
    assert dict(c.request().query)["waitIndex"] == "1501"
    c.on_error(E.EventIndexCleared(401, "cleared", "", 3000))
    gone = c.resynced(E.KeyNotFound(100, "Key not found", "/w", 3005))
    assert gone.node is None and c.next_index == 3006
    with pytest.raises(E.KeyNotFound):
        c.on_error(E.KeyNotFound(100, "Key not found", "/w", 1))


def test_endpoint_pool_pins_and_rotates() -> None:
    pool = EndpointPool(["http://a:1", "b:2/", "http://a:1"])
    assert pool.endpoints == ["http://a:1", "http://b:2"]
    pool.succeeded("http://b:2")
    assert pool.order() == ["http://b:2", "http://a:1"]
    pool.replace(["http://c:3", "http://b:2"])
    assert pool.order() == ["http://b:2", "http://c:3"]
    with pytest.raises(E.UsageError):
        EndpointPool([])
    with pytest.raises(E.UsageError):
        normalize_endpoint("ftp://x:1")
    with pytest.raises(E.UsageError):
        normalize_endpoint("http://x:notaport")


def test_cluster_unavailable_reads_like_the_go_client() -> None:
    err = E.ClusterUnavailable([("http://127.0.0.1:1", ConnectionRefusedError())])
    assert str(err) == ("client: etcd cluster is unavailable or misconfigured; error #0: "
                        "dial tcp 127.0.0.1:1: connect: connection refused\n")
    assert err.detail() == "error #0: dial tcp 127.0.0.1:1: connect: connection refused\n"
    assert err.connection_only
