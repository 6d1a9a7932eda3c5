"""etcd's v2 auth as a pure core: users, roles, permission decisions, the writes they make.

Everything follows etcd 3.4 (`etcdserver/api/v2auth/auth.go`, `auth_requests.go`,
`etcdserver/api/v2http/client_auth.go`; reference §9.6):

* State lives in the keyspace's hidden namespace exactly where etcd keeps it: the dirs `/2`,
  `/2/users`, `/2/roles`, one JSON value per user (`/2/users/<name>`, bcrypt hash inside) and
  per role (`/2/roles/<name>`), and `/2/enabled` (`true`/`false`). Every change is a
  replicated `InternalChange`, so it takes an etcd index, reaches every member and survives
  restarts and snapshots. The role `root` is built in (never stored) and grants everything.
* Values are Go's: JSON is decoded as `encoding/json` decodes into etcd's structs (field names
  matched case-insensitively, unknown fields ignored, `null` is "unset", trailing bytes after
  the first value ignored) and encoded as Go encodes them (`null` for nil lists, omitempty).
  nil and empty lists are different values (`None` and `()`), as `reflect.DeepEqual` sees
  them: that decides "User not updated" and "Role not updated".
* A permission is a key pattern; a trailing `*` makes it a prefix. A non-recursive request
  needs a pattern matching its key; a recursive one needs a prefix pattern. The guest role
  (created by the first `enable`, read+write on `/*`) is what a request without credentials
  gets; its checks are never recursive ones (etcd's `hasGuestAccess`).

No I/O, clock or randomness here: the shell hashes passwords (bcrypt) and checks them, reads
the state through `AuthState` and proposes the `Write`s a `Plan` lists, in order.

Deliberate difference: etcd joins a user or role name from a credential or a grant into a
store path (`path.Join("/2", "/users/"+name)`), so `../../1/k` would read a user key; here a
name that does not land on `/2/users/<x>` (or `/2/roles/<x>`) is simply not found.
"""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

__all__ = [
    "ENABLED_KEY",
    "ENSURE_KEYS",
    "GUEST",
    "GUEST_ROLE",
    "ROOT",
    "ROOT_ROLE",
    "AuthError",
    "AuthState",
    "Permissions",
    "Plan",
    "RWPermission",
    "Role",
    "User",
    "Write",
    "all_roles",
    "all_users",
    "auth_enabled",
    "decode_role",
    "decode_user",
    "delete_role",
    "delete_user",
    "disable",
    "enable",
    "get_role",
    "get_user",
    "go_marshal",
    "has_key_access",
    "has_root_role",
    "parse_basic_auth",
    "put_role",
    "put_user",
    "role_doc",
    "user_doc",
    "user_with_roles_doc",
]

ROOT = "root"
GUEST = "guest"
PREFIX = "/2"
ENABLED_KEY = "/2/enabled"
USERS_DIR = "/2/users"
ROLES_DIR = "/2/roles"
#: etcd's `ensureAuthDirectories`: created (prevExist=false) before the first auth write of a
#: member's life; a 105 on any of them just means it is there.
ENSURE_KEYS: tuple[tuple[str, str], ...] = (
    (PREFIX, ""),
    (USERS_DIR, ""),
    (ROLES_DIR, ""),
    (ENABLED_KEY, "false"),
)
_DIRS = frozenset({PREFIX, USERS_DIR, ROLES_DIR})

Strs = tuple[str, ...] | None


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class RWPermission:
    read: Strs = None
    write: Strs = None


@dataclass(frozen=True, slots=True)
class Permissions:
    kv: RWPermission = field(default_factory=RWPermission)

    def is_empty(self) -> bool:
        return not self.kv.read and not self.kv.write


@dataclass(frozen=True, slots=True)
class Role:
    role: str = ""
    permissions: Permissions = field(default_factory=Permissions)
    grant: Permissions | None = None
    revoke: Permissions | None = None


@dataclass(frozen=True, slots=True)
class User:
    user: str = ""
    password: str = ""
    roles: Strs = None
    grant: Strs = None
    revoke: Strs = None


ROOT_ROLE = Role(ROOT, Permissions(RWPermission(("/*",), ("/*",))))
GUEST_ROLE = Role(GUEST, Permissions(RWPermission(("/*",), ("/*",))))


class AuthError(Exception):
    """An error answered as `{"message": …}` with `status` (etcd's v2auth.Error/HTTPError)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> bytes:
        return go_marshal({"message": self.message})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AuthError):
            return NotImplemented
        return (self.status, self.message) == (other.status, other.message)

    def __hash__(self) -> int:
        return hash((self.status, self.message))

    def __repr__(self) -> str:
        return f"AuthError({self.status}, {self.message!r})"


def _auth_err(status: int, text: str) -> AuthError:
    return AuthError(status, "auth: " + text)


def bad_request(message: str) -> AuthError:
    """httptypes.NewHTTPError(400, message)."""
    return AuthError(400, message)


# --------------------------------------------------------------------------- Go JSON

_GO_HTML = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def go_marshal(doc: Any) -> bytes:
    """Go's `json.Marshal`: compact, HTML-safe (an `Encoder` adds a newline)."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).translate(_GO_HTML).encode()


def _strs(v: Strs) -> list[str] | None:
    return None if v is None else list(v)


def _perm_doc(p: Permissions) -> dict[str, Any]:
    return {"kv": {"read": _strs(p.kv.read), "write": _strs(p.kv.write)}}


def role_doc(r: Role) -> dict[str, Any]:
    """etcd's `Role` JSON (grant/revoke are omitempty pointers: shown when not nil)."""
    doc: dict[str, Any] = {"role": r.role, "permissions": _perm_doc(r.permissions)}
    if r.grant is not None:
        doc["grant"] = _perm_doc(r.grant)
    if r.revoke is not None:
        doc["revoke"] = _perm_doc(r.revoke)
    return doc


def user_doc(u: User) -> dict[str, Any]:
    """etcd's `User` JSON (password, grant, revoke omitempty; roles `null` when nil)."""
    doc: dict[str, Any] = {"user": u.user}
    if u.password:
        doc["password"] = u.password
    doc["roles"] = _strs(u.roles)
    if u.grant:
        doc["grant"] = list(u.grant)
    if u.revoke:
        doc["revoke"] = list(u.revoke)
    return doc


def user_with_roles_doc(name: str, roles: list[Role]) -> dict[str, Any]:
    """client_auth.go's `userWithRoles` (roles omitempty)."""
    doc: dict[str, Any] = {"user": name}
    if roles:
        doc["roles"] = [role_doc(r) for r in roles]
    return doc


class _GoJSONError(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _GoJSONError(f"invalid value {name}")


class _Obj(list[tuple[str, Any]]):
    """A decoded JSON object: its members in order, duplicates kept (Go applies each)."""


def _pairs(pairs: list[tuple[str, Any]]) -> _Obj:
    return _Obj(pairs)


def _first_value(text: str) -> Any:
    """`json.Decoder.Decode`: the first JSON value; what follows it is not read."""
    i = 0
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    if i == len(text):
        raise _GoJSONError("EOF")
    dec = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_no_constant)
    try:
        value, _ = dec.raw_decode(text, i)
    except json.JSONDecodeError as exc:
        raise _GoJSONError(str(exc)) from None
    return value


def _fields(obj: Any, names: Iterable[str]) -> Iterable[tuple[str, Any]]:
    """(field, value) for each member of a JSON object, matched as Go matches struct fields:
    exactly, else case-insensitively; unknown members are skipped. `null` objects give none."""
    if obj is None:
        return []
    if not isinstance(obj, _Obj):
        raise _GoJSONError("cannot unmarshal into struct")
    known = tuple(names)
    out = []
    for key, value in obj:
        name = key if key in known else next((n for n in known if n == key.lower()), None)
        if name is not None:
            out.append((name, value))
    return out


def _go_str(value: Any, current: str) -> str:
    if value is None:
        return current
    if not isinstance(value, str):
        raise _GoJSONError("cannot unmarshal into string")
    return value


def _go_strs(value: Any) -> Strs:
    if value is None:
        return None
    if not isinstance(value, list) or isinstance(value, _Obj):
        raise _GoJSONError("cannot unmarshal into []string")
    return tuple(_go_str(v, "") for v in value)


def _go_rw(obj: Any, cur: RWPermission) -> RWPermission:
    for name, value in _fields(obj, ("read", "write")):
        cur = replace(cur, **{name: _go_strs(value)})
    return cur


def _go_perms(obj: Any, cur: Permissions) -> Permissions:
    for _, value in _fields(obj, ("kv",)):
        cur = Permissions(_go_rw(value, cur.kv))
    return cur


def _decode_role_obj(obj: Any) -> Role:
    role = Role()
    for name, value in _fields(obj, ("role", "permissions", "grant", "revoke")):
        if name == "role":
            role = replace(role, role=_go_str(value, role.role))
        elif name == "permissions":
            role = replace(role, permissions=_go_perms(value, role.permissions))
        else:
            # A pointer: `null` sets nil, an object fills the (new or existing) value.
            cur: Permissions | None = role.grant if name == "grant" else role.revoke
            new = None if value is None else _go_perms(value, cur or Permissions())
            role = replace(role, grant=new) if name == "grant" else replace(role, revoke=new)
    return role


def _decode_user_obj(obj: Any) -> User:
    user = User()
    for name, value in _fields(obj, ("user", "password", "roles", "grant", "revoke")):
        if name == "user":
            user = replace(user, user=_go_str(value, user.user))
        elif name == "password":
            user = replace(user, password=_go_str(value, user.password))
        elif name == "roles":
            user = replace(user, roles=_go_strs(value))
        elif name == "grant":
            user = replace(user, grant=_go_strs(value))
        else:
            user = replace(user, revoke=_go_strs(value))
    return user


def _body_text(body: bytes) -> str:
    return body.decode("utf-8", "replace")


def decode_user(body: bytes) -> User:
    """A request body as etcd decodes it into a `User`; AuthError 400 when Go would fail."""
    try:
        return _decode_user_obj(_first_value(_body_text(body)))
    except _GoJSONError:
        raise bad_request("Invalid JSON in request body.") from None


def decode_role(body: bytes) -> Role:
    """A request body as etcd decodes it into a `Role`; AuthError 400 when Go would fail."""
    try:
        return _decode_role_obj(_first_value(_body_text(body)))
    except _GoJSONError:
        raise bad_request("Invalid JSON in request body.") from None


# --------------------------------------------------------------------------- reading the state


class AuthState(Protocol):
    """The replicated hidden namespace (`corral.kv.keyspace.Keyspace` provides it)."""

    def internal_value(self, key: str) -> str | None: ...

    def internal_items(self, prefix: str) -> list[tuple[str, str]]: ...


def auth_enabled(st: AuthState) -> bool:
    """etcd's `detectAuth`: `/2/enabled` holds the JSON `true`. One dict lookup."""
    return st.internal_value(ENABLED_KEY) == "true"


def _resource_key(kind_dir: str, name: str) -> str | None:
    """`path.Join("/2", "/users/"+name)` when it lands on one entry of `kind_dir`, else None."""
    p = posixpath.normpath(kind_dir + "/" + name)
    parent, _, leaf = p.rpartition("/")
    return p if parent == kind_dir and leaf else None


def _load(st: AuthState, kind_dir: str, name: str) -> Any:
    key = _resource_key(kind_dir, name)
    raw = None if key is None else st.internal_value(key)
    if raw is None:
        return None
    try:
        return _first_value(raw)
    except _GoJSONError:
        return None


def find_user(st: AuthState, name: str) -> User | None:
    """etcd's `getUser`, None where it fails; the root user always holds the root role."""
    obj = _load(st, USERS_DIR, name)
    if obj is None:
        return None
    try:
        u = _decode_user_obj(obj)
    except _GoJSONError:
        return None
    return _attach_root_role(u) if u.user == ROOT else u


def get_user(st: AuthState, name: str) -> User:
    u = find_user(st, name)
    if u is None:
        raise _auth_err(404, f"User {name} does not exist.")
    return u


def find_role(st: AuthState, name: str) -> Role | None:
    if name == ROOT:
        return ROOT_ROLE
    obj = _load(st, ROLES_DIR, name)
    if obj is None:
        return None
    try:
        return _decode_role_obj(obj)
    except _GoJSONError:
        return None


def get_role(st: AuthState, name: str) -> Role:
    r = find_role(st, name)
    if r is None:
        raise _auth_err(404, f"Role {name} does not exist.")
    return r


def _names(st: AuthState, kind_dir: str) -> list[str]:
    # A listing of the dir: direct children only, hidden (`_`) names left out, as etcd's Get.
    out = []
    for key, _ in st.internal_items(kind_dir + "/"):
        leaf = key[len(kind_dir) + 1 :]
        if leaf and "/" not in leaf and not leaf.startswith("_"):
            out.append(leaf)
    return out


def all_users(st: AuthState) -> list[str]:
    return sorted(_names(st, USERS_DIR))


def all_roles(st: AuthState) -> list[str]:
    return sorted([ROOT, *_names(st, ROLES_DIR)])


def _attach_root_role(u: User) -> User:
    roles = u.roles or ()
    if ROOT in roles:
        return u
    return replace(u, roles=(*roles, ROOT))


# --------------------------------------------------------------------------- permissions


def _simple_match(pattern: str, key: str) -> bool:
    if pattern.endswith("*"):
        return key.startswith(pattern[:-1])
    return key == pattern


def _prefix_match(pattern: str, key: str) -> bool:
    return pattern.endswith("*") and key.startswith(pattern[:-1])


def role_allows(role: Role, key: str, write: bool, recursive: bool) -> bool:
    """etcd's `HasKeyAccess` / `HasRecursiveAccess` (an empty pattern matches nothing)."""
    if role.role == ROOT:
        return True
    patterns = (role.permissions.kv.write if write else role.permissions.kv.read) or ()
    match = _prefix_match if recursive else _simple_match
    return any(p and match(p, key) for p in patterns)


def has_key_access(
    st: AuthState, user: User | None, key: str, write: bool, recursive: bool
) -> bool:
    """May `user` (None: no credentials, the guest role) touch `key`? (`hasKeyPrefixAccess`)"""
    if user is None:
        guest = find_role(st, GUEST)
        return guest is not None and role_allows(guest, key, write, False)
    for name in user.roles or ():
        role = find_role(st, name)
        if role is not None and role_allows(role, key, write, recursive):
            return True
    return False


def has_root_role(user: User | None) -> bool:
    return user is not None and ROOT in (user.roles or ())


def parse_basic_auth(header: str) -> tuple[str, bytes] | None:
    """Go's `Request.BasicAuth`: ("Basic " any case) base64(user:password), else None."""
    if len(header) < 6 or header[:6].lower() != "basic ":
        return None
    try:
        raw = base64.b64decode(header[6:].encode("latin-1"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    user, colon, password = raw.partition(b":")
    if not colon:
        return None
    return user.decode("utf-8", "replace"), password


# --------------------------------------------------------------------------- changes


@dataclass(frozen=True, slots=True)
class Write:
    """One store write an auth operation makes (proposed as an `InternalChange`).

    `on_exists`/`on_missing`: the answer when it fails with etcd's 105/100 (None: the raw
    v2 error, as etcd's `writeError` passes it through)."""

    key: str
    value: str | None
    prev_exist: bool | None
    on_exists: AuthError | None = None
    on_missing: AuthError | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What an operation answers once its writes (in order) have succeeded.

    `body` is None for etcd's empty 200s; otherwise the document to encode."""

    writes: tuple[Write, ...]
    status: int = 200
    body: dict[str, Any] | None = None


def _store_user(u: User) -> str:
    return go_marshal(user_doc(u)).decode()


def _store_role(r: Role) -> str:
    return go_marshal(role_doc(r)).decode()


def _public_user(u: User) -> dict[str, Any]:
    return user_doc(replace(u, password=""))


def _merge_user(old: User, new: User, hashed: str | None) -> User:
    """etcd's `User.merge`: new password (if given), roles ∪ grant − revoke, sorted."""
    roles = list(dict.fromkeys(old.roles or ()))
    for g in new.grant or ():
        if g in roles:
            raise _auth_err(409, f"Granting duplicate role {g} for user {new.user}")
        roles.append(g)
    for r in new.revoke or ():
        if r not in roles:
            raise _auth_err(409, f"Revoking ungranted role {r} for user {new.user}")
        roles.remove(r)
    password = hashed if new.password else old.password
    return User(old.user, password or "", tuple(sorted(roles)))


def _grant(p: Permissions, n: Permissions | None) -> Permissions:
    if n is None:
        return p
    read = list(dict.fromkeys(p.kv.read or ()))
    for r in n.kv.read or ():
        if r in read:
            raise _auth_err(409, f"Granting duplicate read permission {r}")
        read.append(r)
    write = list(dict.fromkeys(p.kv.write or ()))
    for w in n.kv.write or ():
        if w in write:
            raise _auth_err(409, f"Granting duplicate write permission {w}")
        write.append(w)
    return Permissions(RWPermission(tuple(sorted(read)), tuple(sorted(write))))


def _revoke(p: Permissions, n: Permissions | None) -> Permissions:
    if n is None:
        return p
    gone_r, gone_w = set(n.kv.read or ()), set(n.kv.write or ())
    read = sorted(r for r in dict.fromkeys(p.kv.read or ()) if r not in gone_r)
    write = sorted(w for w in dict.fromkeys(p.kv.write or ()) if w not in gone_w)
    return Permissions(RWPermission(tuple(read), tuple(write)))


def _create_user(user: User, hashed: str | None) -> tuple[User, Write]:
    """etcd's `CreateUser`: the root user gets the root role; an empty password is refused."""
    if user.user == ROOT:
        user = _attach_root_role(user)
    if user.password == "":
        raise _auth_err(400, f"Cannot create user {user.user} with an empty password")
    assert hashed is not None, "the shell hashes every non-empty password"
    stored = replace(user, password=hashed)
    key = f"{USERS_DIR}/{user.user}"
    exists = _auth_err(409, f"User {user.user} already exists.")
    return stored, Write(key, _store_user(stored), False, on_exists=exists)


def _update_user(st: AuthState, user: User, hashed: str | None) -> tuple[User, Write]:
    old = get_user(st, user.user)
    new = _merge_user(old, user, hashed)
    if new == old:
        raise _auth_err(400, "User not updated. Use grant/revoke/password to update the user.")
    return new, Write(f"{USERS_DIR}/{user.user}", _store_user(new), True)


def put_user(st: AuthState, name: str, body: bytes, hashed: str | None) -> Plan:
    """PUT /v2/auth/users/<name> (client_auth.go `forUser`). `hashed`: the bcrypt hash of
    the body's password (the shell makes it; None when the body has none)."""
    u = decode_user(body)
    if u.user != name:
        raise bad_request("User JSON name does not match the name in the URL")
    if not u.grant and not u.revoke:
        if u.roles:
            out, w = _create_user(u, hashed)
            return Plan((w,), 200, _public_user(out))
        if find_user(st, u.user) is not None:  # CreateOrUpdateUser
            out, w = _update_user(st, u, hashed)
            return Plan((w,), 200, _public_user(out))
        out, w = _create_user(u, hashed)
        return Plan((w,), 201, _public_user(out))
    if u.roles:
        raise bad_request("User JSON contains both roles and grant/revoke")
    out, w = _update_user(st, u, hashed)
    return Plan((w,), 200, _public_user(out))


def delete_user(st: AuthState, name: str) -> Plan:
    if auth_enabled(st) and name == ROOT:
        raise _auth_err(403, "Cannot delete root user while auth is enabled.")
    missing = _auth_err(404, f"User {name} does not exist")
    return Plan((Write(f"{USERS_DIR}/{name}", None, True, on_missing=missing),))


def _create_role(role: Role) -> Write:
    if role.role == ROOT:
        raise _auth_err(403, f"Cannot modify role {role.role}: is root role.")
    exists = _auth_err(409, f"Role {role.role} already exists.")
    return Write(f"{ROLES_DIR}/{role.role}", _store_role(role), False, on_exists=exists)


def put_role(st: AuthState, name: str, body: bytes) -> Plan:
    """PUT /v2/auth/roles/<name> (client_auth.go `forRole`)."""
    r = decode_role(body)
    if r.role != name:
        raise bad_request("Role JSON name does not match the name in the URL")
    no_grant = r.grant is None or r.grant.is_empty()
    no_revoke = r.revoke is None or r.revoke.is_empty()
    if no_grant and no_revoke:
        return Plan((_create_role(r),), 201, role_doc(r))
    if not r.permissions.is_empty():
        raise bad_request("Role JSON contains both permissions and grant/revoke")
    if r.role == ROOT:
        raise _auth_err(403, f"Cannot modify role {r.role}: is root role.")
    old = get_role(st, r.role)
    new = Role(old.role, _revoke(_grant(old.permissions, r.grant), r.revoke))
    if new == old:
        raise _auth_err(400, "Role not updated. Use grant/revoke to update the role.")
    return Plan((Write(f"{ROLES_DIR}/{r.role}", _store_role(new), True),), 200, role_doc(new))


def delete_role(name: str) -> Plan:
    if name == ROOT:
        raise _auth_err(403, f"Cannot modify role {name}: is root role.")
    missing = _auth_err(404, f"Role {name} doesn't exist.")
    return Plan((Write(f"{ROLES_DIR}/{name}", None, True, on_missing=missing),))


def enable(st: AuthState) -> Plan:
    """etcd's `EnableAuth`: needs the root user; creates the guest role the first time."""
    if auth_enabled(st):
        raise _auth_err(409, "already enabled")
    if find_user(st, ROOT) is None:
        raise _auth_err(409, "No root user available, please create one")
    writes: list[Write] = []
    if find_role(st, GUEST) is None:
        writes.append(_create_role(GUEST_ROLE))
    writes.append(Write(ENABLED_KEY, "true", True))
    return Plan(tuple(writes))


def disable(st: AuthState) -> Plan:
    if not auth_enabled(st):
        raise _auth_err(409, "already disabled")
    return Plan((Write(ENABLED_KEY, "false", True),))


def is_dir_key(key: str) -> bool:
    return key in _DIRS
