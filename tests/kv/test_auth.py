"""The pure v2 auth core (`corral.kv.auth`) and its storage in the keyspace's hidden namespace.

Each rule is etcd 3.4's (`v2auth/auth.go`, `v2http/client_auth.go`); the live comparison
with a real etcd is `test_auth_vs_etcd.py`.
"""

from __future__ import annotations

import base64
import json

import pytest

from corral.kv import Keyspace
from corral.kv import auth as a
from corral.kv.auth_http import check_password, hash_password
from corral.kv.commands import InternalChange, decode, encode
from corral.kv.errors import KeyNotFound, NodeExists

H = "$2a$10$hash"  # stands for a bcrypt hash: the core never hashes


def _apply(ks: Keyspace, plan: a.Plan) -> None:
    for w in plan.writes:
        ks.apply(InternalChange(w.key, w.value, w.prev_exist))


def _fresh() -> Keyspace:
    ks = Keyspace()
    for key, value in a.ENSURE_KEYS:
        ks.apply(InternalChange(key, value, False))
    return ks


def _err(fn: object, *args: object) -> a.AuthError:
    with pytest.raises(a.AuthError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value


# --------------------------------------------------------------------------- storage


def test_internal_change_conditions_indexes_and_snapshots() -> None:
    ks = Keyspace()
    ks.watch("/2", True, True, 0, None)  # the user key /2 is not etcd's /2: never fires
    [ev] = ks.apply(InternalChange("/2/users/x", "{}", False, 7))
    assert ev.internal and ev.etcd_index == ks.index == 1 and ks.hub.notify(ev) == []
    with pytest.raises(NodeExists) as exists:
        ks.apply(InternalChange("/2/users/x", "{}", False))
    assert exists.value.cause == "/2/users/x" and ks.index == 1  # a failure takes no index
    with pytest.raises(KeyNotFound):
        ks.apply(InternalChange("/2/users/y", "{}", True))
    with pytest.raises(KeyNotFound):
        ks.apply(InternalChange("/2/users/y", None))
    ks.apply(InternalChange("/2/users/x", "{2}", True))
    assert ks.internal_value("/2/users/x") == "{2}" and ks.index == 2
    copy = Keyspace.restore(ks.snapshot())
    assert copy.internal_items("/2/users/") == [("/2/users/x", "{2}")]
    ks.apply(InternalChange("/2/users/x", None))
    assert ks.internal_value("/2/users/x") is None and ks.index == 3
    assert ks.get("/", recursive=True).node.nodes in ((), None)  # nothing leaks to /v2/keys
    for cmd in (InternalChange("/2/k", None, True, 5), InternalChange("/2/k", "v", None, 0)):
        assert decode(encode(cmd)) == cmd


def test_bcrypt_is_gos_format_and_checks() -> None:
    hashed = hash_password("pw")
    assert hashed.startswith("$2a$10$") and len(hashed) == 60
    assert check_password(hashed, b"pw") and not check_password(hashed, b"pW")
    assert not check_password("not a hash", b"pw")
    long = hash_password("a" * 80)  # Go's bcrypt of that era used the first 72 bytes
    assert check_password(long, b"a" * 72) and check_password(long, b"a" * 100)


# --------------------------------------------------------------------------- Go's JSON


def test_bodies_decode_as_go_decodes_into_etcds_structs() -> None:
    u = a.decode_user(b' {"USER":"bob","Password":"p","zzz":[1],"roles":null} trailing junk')
    assert u == a.User("bob", "p", None)
    assert a.decode_user(b"null") == a.User()
    assert a.decode_user(b'{"user":"b","roles":[]}').roles == ()  # empty, not nil
    assert a.decode_user(b'{"user":"b","roles":["x",null]}').roles == ("x", "")
    for bad in (b"", b"   ", b"[1]", b'"s"', b"{", b'{"user":1}', b'{"roles":"x"}', b"NaN"):
        assert _err(a.decode_user, bad) == a.AuthError(400, "Invalid JSON in request body.")
    r = a.decode_role(
        b'{"role":"r","permissions":{"kv":{"read":["/a"]}},"permissions":{"kv":{"write":["/b"]}},'
        b'"grant":{"kv":{"read":[]}}}'
    )  # a repeated struct member is decoded into the same struct, as Go does
    assert r.permissions == a.Permissions(a.RWPermission(("/a",), ("/b",)))
    assert r.grant == a.Permissions(a.RWPermission((), None)) and r.revoke is None
    assert a.role_doc(r) == {
        "role": "r",
        "permissions": {"kv": {"read": ["/a"], "write": ["/b"]}},
        "grant": {"kv": {"read": [], "write": None}},
    }
    assert a.go_marshal({"message": "<&>"}) == b'{"message":"\\u003c\\u0026\\u003e"}'


def test_basic_auth_header_parsing() -> None:
    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    assert a.parse_basic_auth("Basic " + b64(b"root:p:w")) == ("root", b"p:w")
    assert a.parse_basic_auth("bAsIc " + b64(b"u:")) == ("u", b"")
    for bad in (
        "",
        "Bearer x",
        "Basic " + b64(b"nocolon"),
        "Basic !!",
        "Basic " + b64(b"u:p")[:-1],
    ):
        assert a.parse_basic_auth(bad) is None


# --------------------------------------------------------------------------- users and roles


def test_user_lifecycle_statuses_and_messages() -> None:
    ks = _fresh()
    with pytest.raises(a.AuthError) as empty:
        a.put_user(ks, "bob", b'{"user":"bob"}', None)
    assert empty.value == a.AuthError(400, "auth: Cannot create user bob with an empty password")
    assert _err(a.put_user, ks, "bob", b'{"user":"al"}', None).message == (
        "User JSON name does not match the name in the URL"
    )
    plan = a.put_user(ks, "root", b'{"user":"root","password":"pw"}', H)
    assert plan.status == 201 and plan.body == {"user": "root", "roles": ["root"]}
    stored = json.loads(plan.writes[0].value or "")
    assert stored == {"user": "root", "password": H, "roles": ["root"]}
    _apply(ks, plan)
    # Roles given: etcd's CreateUser, answered 200, roles kept as given (not checked, not sorted).
    plan = a.put_user(ks, "bob", b'{"user":"bob","password":"p","roles":["z","a","z"]}', H)
    assert plan.status == 200 and plan.body == {"user": "bob", "roles": ["z", "a", "z"]}
    _apply(ks, plan)
    assert plan.writes[0].on_exists == a.AuthError(409, "auth: User bob already exists.")
    plan = a.put_user(ks, "bob", b'{"user":"bob","grant":["m"],"revoke":["z"]}', None)
    assert plan.body == {"user": "bob", "roles": ["a", "m"]}
    _apply(ks, plan)
    assert _err(a.put_user, ks, "bob", b'{"user":"bob","grant":["a"]}', None).message == (
        "auth: Granting duplicate role a for user bob"
    )
    assert _err(a.put_user, ks, "bob", b'{"user":"bob","revoke":["q"]}', None).status == 409
    assert _err(a.put_user, ks, "bob", b'{"user":"bob","roles":["a"],"grant":["q"]}', None) == (
        a.AuthError(400, "User JSON contains both roles and grant/revoke")
    )
    assert _err(a.put_user, ks, "bob", b'{"user":"bob"}', None) == a.AuthError(
        400, "auth: User not updated. Use grant/revoke/password to update the user."
    )
    assert _err(a.put_user, ks, "zed", b'{"user":"zed","grant":["a"]}', None) == a.AuthError(
        404, "auth: User zed does not exist."
    )
    # A user stored with roles null is "changed" by an empty update: nil != [] (DeepEqual).
    _apply(ks, a.put_user(ks, "carl", b'{"user":"carl","password":"p"}', H))
    plan = a.put_user(ks, "carl", b'{"user":"carl"}', None)
    assert plan.status == 200 and plan.body == {"user": "carl", "roles": []}
    assert a.all_users(ks) == ["bob", "carl", "root"]
    assert a.delete_user(ks, "nobody").writes[0].on_missing == a.AuthError(
        404, "auth: User nobody does not exist"
    )


def test_role_lifecycle_and_enable() -> None:
    ks = _fresh()
    assert a.all_roles(ks) == ["root"] and a.get_role(ks, "root") == a.ROOT_ROLE
    assert _err(a.enable, ks) == a.AuthError(409, "auth: No root user available, please create one")
    assert _err(a.disable, ks) == a.AuthError(409, "auth: already disabled")
    plan = a.put_role(ks, "ops", b'{"role":"ops"}')
    assert plan.status == 201
    assert plan.body == {"role": "ops", "permissions": {"kv": {"read": None, "write": None}}}
    _apply(ks, plan)
    grant = b'{"role":"ops","grant":{"kv":{"read":["/o/*","/a"],"write":["/o/w"]}}}'
    plan = a.put_role(ks, "ops", grant)
    assert plan.body == {
        "role": "ops",
        "permissions": {"kv": {"read": ["/a", "/o/*"], "write": ["/o/w"]}},
    }
    _apply(ks, plan)
    assert _err(a.put_role, ks, "ops", grant).message == (
        "auth: Granting duplicate read permission /o/*"
    )
    assert _err(a.put_role, ks, "ops", b'{"role":"ops","revoke":{"kv":{"read":["/x"]}}}') == (
        a.AuthError(400, "auth: Role not updated. Use grant/revoke to update the role.")
    )
    both = b'{"role":"ops","permissions":{"kv":{"read":["/x"]}},"revoke":{"kv":{"read":["/a"]}}}'
    assert _err(a.put_role, ks, "ops", both).message == (
        "Role JSON contains both permissions and grant/revoke"
    )
    for bad in (b'{"role":"root"}', b'{"role":"root","grant":{"kv":{"read":["/x"]}}}'):
        assert _err(a.put_role, ks, "root", bad) == a.AuthError(
            403, "auth: Cannot modify role root: is root role."
        )
    assert _err(a.delete_role, "root").status == 403
    assert a.delete_role("x").writes[0].on_missing == a.AuthError(
        404, "auth: Role x doesn't exist."
    )
    _apply(ks, a.put_user(ks, "root", b'{"user":"root","password":"pw"}', H))
    plan = a.enable(ks)
    assert [(w.key, w.value) for w in plan.writes] == [
        ("/2/roles/guest", json.dumps(a.role_doc(a.GUEST_ROLE), separators=(",", ":"))),
        ("/2/enabled", "true"),
    ]
    _apply(ks, plan)
    assert a.auth_enabled(ks) and _err(a.enable, ks).message == "auth: already enabled"
    assert _err(a.delete_user, ks, "root").status == 403
    _apply(ks, a.disable(ks))
    assert not a.auth_enabled(ks)
    assert [w.key for w in a.enable(ks).writes] == ["/2/enabled"]  # guest is there now


def test_permission_decisions() -> None:
    ks = _fresh()
    _apply(
        ks,
        a.put_role(
            ks,
            "r",
            b'{"role":"r","permissions":{"kv":{"read":["/pub/*","/one"],"write":["/pub/w"]}}}',
        ),
    )
    _apply(ks, a.put_user(ks, "u", b'{"user":"u","password":"p","roles":["r","gone"]}', H))
    u = a.get_user(ks, "u")

    def may(key: str, write: bool = False, recursive: bool = False) -> bool:
        return a.has_key_access(ks, u, key, write, recursive)

    assert may("/pub/x") and may("/pub/") and may("/one") and not may("/one/two")
    assert may("/pub/w", write=True) and not may("/pub/x", write=True)
    assert may("/pub", recursive=False) is False  # "/pub/*" needs the slash
    assert may("/pub/d", recursive=True) and not may("/one", recursive=True)  # prefixes only
    assert not a.has_key_access(ks, None, "/x", False, False)  # no guest role yet: refused
    _apply(ks, a.put_role(ks, "guest", b'{"role":"guest","permissions":{"kv":{"read":["/*"]}}}'))
    assert a.has_key_access(ks, None, "/x", False, True)  # guests are never checked recursively
    assert not a.has_key_access(ks, None, "", False, False)  # /v2/keys without the slash
    assert not a.has_key_access(ks, None, "/x", True, False)
    root = a.get_user(ks, "u")
    assert not a.has_root_role(root) and a.has_root_role(a.User("x", roles=("root",)))
    # Names never leave their namespace (etcd would path.Join them into the store).
    assert a.find_user(ks, "../roles/r") is None and a.find_user(ks, "") is None
    assert a.find_user(ks, "x/../u") == u
