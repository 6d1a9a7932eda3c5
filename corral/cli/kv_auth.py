"""`corral kv user|role|auth`: etcdctl 3.4's v2 auth verbs (`ETCDCTL_API=2`).

What is sent and printed follows etcdctl's `ctlv2/command/{user,role,auth}_commands.go` and
the Go client's `client/auth_{user,role}.go`: the same JSON bodies, the same accepted
statuses, the server's `message` on stderr and exit 1 on any refusal, `user get` printing
roles as etcdctl does (one empty name per role object before the names: the Go client's
failed decode into []string leaves them there), `role grant` refusing a non-canonical path.
Passwords come after a colon (`user add bob:pw`) or are read from standard input after the
prompt `New password: `. Registered on `corral kv` by `corral.cli.kv`.
"""

from __future__ import annotations

import json
import posixpath
import sys
from typing import Any, NoReturn

import click

from corral.cli.kv import _Group, _settings, cli
from corral.client import ClientError, SyncClient
from corral.client.protocol import Parse, Request

__all__ = ["auth", "role", "user"]


def _fail(message: str) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.write(message + "\n")
    sys.exit(1)


def _call(c: SyncClient, method: str, path: str, doc: Any = None) -> tuple[int, bytes]:
    body = None if doc is None else json.dumps(doc, separators=(",", ":")).encode()
    req = Request(
        method,
        path,
        body=body,
        content_type="application/json" if body else None,
        idempotent=method == "GET",
        parse=Parse.JSON,
    )
    try:
        _, answer = c._send(req)
    except ClientError as exc:
        _fail(str(exc))
    return answer.status, answer.body


def _message(body: bytes) -> str:
    """The Go client's `authError`: the body's `message`."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        return str(exc)
    return str(doc.get("message", "")) if isinstance(doc, dict) else ""


def _expect(status: int, body: bytes, *ok: int) -> Any:
    if status not in ok:
        _fail(_message(body))
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _client() -> SyncClient:
    return _settings().client()


def _one(args: tuple[str, ...], what: str) -> str:
    if len(args) != 1:
        _fail(f"Please provide a {what}")
    return args[0]


def _no_args(args: tuple[str, ...]) -> None:
    if args:
        _fail("No arguments accepted")


def _ask_password() -> str:
    """speakeasy.Ask("New password: "): the prompt on stdout, a line from stdin, a newline."""
    sys.stdout.write("New password: ")
    sys.stdout.flush()
    line = sys.stdin.readline() if sys.stdin is not None else ""
    sys.stdout.write("\n")
    return line.rstrip("\r\n")


_ARGS = click.argument("args", nargs=-1)

# --------------------------------------------------------------------------- auth


@cli.group(cls=_Group)
def auth() -> None:
    """overall auth controls"""


def _switch(args: tuple[str, ...], on: bool) -> None:
    _no_args(args)
    status, body = _call(_client(), "PUT" if on else "DELETE", "/v2/auth/enable")
    _expect(status, body, 200, 201)
    sys.stdout.write("Authentication Enabled\n" if on else "Authentication Disabled\n")


@auth.command(name="enable")
@_ARGS
def auth_enable(args: tuple[str, ...]) -> None:
    """enable auth access controls"""
    _switch(args, True)


@auth.command(name="disable")
@_ARGS
def auth_disable(args: tuple[str, ...]) -> None:
    """disable auth access controls"""
    _switch(args, False)


# --------------------------------------------------------------------------- user


@cli.group(cls=_Group)
def user() -> None:
    """user add, grant and revoke subcommands"""


def _user_path(name: str) -> str:
    return posixpath.join("/v2/auth/users", name)


@user.command(name="list")
@_ARGS
def user_list(args: tuple[str, ...]) -> None:
    """list all current users"""
    _no_args(args)
    doc = _expect(*_call(_client(), "GET", "/v2/auth/users"), 200) or {}
    for u in doc.get("users") or []:
        sys.stdout.write(f"{u.get('user', '')}\n")


@user.command(name="add")
@_ARGS
def user_add(args: tuple[str, ...]) -> None:
    """add a new user for the etcd cluster: add USER[:PASSWORD]"""
    arg = _one(args, "username")
    c = _client()
    name, colon, password = arg.partition(":")
    if not colon:
        password = _ask_password()
    doc = {"user": name, **({"password": password} if password else {}), "roles": None}
    _expect(*_call(c, "PUT", _user_path(name), doc), 200, 201)
    sys.stdout.write(f"User {name} created\n")


@user.command(name="get")
@_ARGS
def user_get(args: tuple[str, ...]) -> None:
    """get details for a user"""
    name = _one(args, "username")
    doc = _expect(*_call(_client(), "GET", _user_path(name)), 200) or {}
    roles = doc.get("roles") or []
    names = [str(r) if isinstance(r, str) else "" for r in roles]
    if any(isinstance(r, dict) for r in roles):
        names = [""] * len(roles) + [str(r.get("role", "")) for r in roles if isinstance(r, dict)]
    sys.stdout.write(f"User: {doc.get('user', '')}\nRoles: {' '.join(names)}\n")


@user.command(name="remove")
@_ARGS
def user_remove(args: tuple[str, ...]) -> None:
    """remove a user for the etcd cluster"""
    name = _one(args, "username")
    _expect(*_call(_client(), "DELETE", _user_path(name)), 200, 201)
    sys.stdout.write(f"User {name} removed\n")


@user.command(name="passwd")
@_ARGS
def user_passwd(args: tuple[str, ...]) -> None:
    """change password for a user"""
    name = _one(args, "username")
    c = _client()
    password = _ask_password()
    doc = {"user": name, **({"password": password} if password else {}), "roles": None}
    _expect(*_call(c, "PUT", _user_path(name), doc), 200)
    sys.stdout.write("Password updated\n")


def _user_grant_revoke(args: tuple[str, ...], roles: tuple[str, ...], grant: bool) -> None:
    if not roles:
        _fail("No roles specified; please use `--roles`")
    name = _one(args, "username")
    doc = {"user": name, "roles": None, ("grant" if grant else "revoke"): list(roles)}
    _expect(*_call(_client(), "PUT", _user_path(name), doc), 200)
    sys.stdout.write(f"User {name} updated\n")


_ROLES = click.option("--roles", multiple=True, help="List of roles to grant or revoke")


@user.command(name="grant")
@_ARGS
@_ROLES
def user_grant(args: tuple[str, ...], roles: tuple[str, ...]) -> None:
    """grant roles to an etcd user"""
    _user_grant_revoke(args, roles, True)


@user.command(name="revoke")
@_ARGS
@_ROLES
def user_revoke(args: tuple[str, ...], roles: tuple[str, ...]) -> None:
    """revoke roles for an etcd user"""
    _user_grant_revoke(args, roles, False)


# --------------------------------------------------------------------------- role


@cli.group(cls=_Group)
def role() -> None:
    """role add, grant and revoke subcommands"""


def _role_path(name: str) -> str:
    return posixpath.join("/v2/auth/roles", name)


_NO_PERMISSIONS = {"kv": {"read": None, "write": None}}


@role.command(name="list")
@_ARGS
def role_list(args: tuple[str, ...]) -> None:
    """list all roles"""
    _no_args(args)
    status, body = _call(_client(), "GET", "/v2/auth/roles")
    if status != 200:
        _fail(f"unexpected status code {status}")
    for r in json.loads(body).get("roles") or []:
        sys.stdout.write(f"{r.get('role', '')}\n")


@role.command(name="add")
@_ARGS
def role_add(args: tuple[str, ...]) -> None:
    """add a new role for the etcd cluster"""
    name = _one(args, "role name")
    c = _client()
    if _call(c, "GET", _role_path(name))[0] == 200:
        _fail(f"Role {name} already exists")
    doc = {"role": name, "permissions": _NO_PERMISSIONS}
    _expect(*_call(c, "PUT", _role_path(name), doc), 200, 201)
    sys.stdout.write(f"Role {name} created\n")


@role.command(name="get")
@_ARGS
def role_get(args: tuple[str, ...]) -> None:
    """get details for a role"""
    name = _one(args, "role name")
    doc = _expect(*_call(_client(), "GET", _role_path(name)), 200) or {}
    kv = (doc.get("permissions") or {}).get("kv") or {}
    out = [f"Role: {doc.get('role', '')}", "KV Read:"]
    out += [f"\t{p}" for p in kv.get("read") or []]
    out.append("KV Write:")
    out += [f"\t{p}" for p in kv.get("write") or []]
    sys.stdout.write("\n".join(out) + "\n")


@role.command(name="remove")
@_ARGS
def role_remove(args: tuple[str, ...]) -> None:
    """remove a role from the etcd cluster"""
    name = _one(args, "role name")
    _expect(*_call(_client(), "DELETE", _role_path(name)), 200, 201)
    sys.stdout.write(f"Role {name} removed\n")


def canonical_url_path(p: str) -> str:
    """etcd's `pathutil.CanonicalURLPath`."""
    if p == "":
        return "/"
    if not p.startswith("/"):
        p = "/" + p
    np = posixpath.normpath(p)
    if np.startswith("//"):
        np = "/" + np.lstrip("/")
    if p.endswith("/") and np != "/":
        np += "/"
    return np


def _client_role(doc: Any) -> Any:
    """The Go client's `Role` struct of an answer (what etcdctl compares)."""
    if not isinstance(doc, dict):
        return None
    return {k: doc.get(k) for k in ("role", "permissions", "grant", "revoke")}


def _role_grant_revoke(
    args: tuple[str, ...], path: str, read: bool, write: bool, rw: bool, grant: bool
) -> None:
    if path == "":
        _fail("No path specified; please use `--path`")
    if canonical_url_path(path) != path:
        _fail(f"Not canonical path; please use `--path={canonical_url_path(path)}`")
    if [read, write, rw].count(True) != 1:
        _fail("Please specify exactly one of --read, --write or --readwrite")
    name = _one(args, "role name")
    c = _client()
    current = _expect(*_call(c, "GET", _role_path(name)), 200)
    change = {"read": [path] if read or rw else None, "write": [path] if write or rw else None}
    doc = {
        "role": name,
        "permissions": _NO_PERMISSIONS,
        ("grant" if grant else "revoke"): {"kv": change},
    }
    new = _expect(*_call(c, "PUT", _role_path(name), doc), 200)
    if _client_role(new) == _client_role(current):
        sys.stdout.write(
            "Role unchanged; already granted" if grant else "Role unchanged; already revoked"
        )
    sys.stdout.write(f"Role {name} updated\n")


def _perm_options(verb: str) -> Any:
    def wrap(fn: Any) -> Any:
        # Applied last to first, so --help lists them in etcdctl's order.
        fn = click.option("--readwrite", "--rw", "rw", is_flag=True, help="read-write access")(fn)
        fn = click.option("--write", is_flag=True, help="write access")(fn)
        fn = click.option("--read", is_flag=True, help="read access")(fn)
        return click.option("--path", default="", help=f"Path {verb} for the role to access")(fn)

    return wrap


@role.command(name="grant")
@_ARGS
@_perm_options("granted")
def role_grant(args: tuple[str, ...], path: str, read: bool, write: bool, rw: bool) -> None:
    """grant path matches to an etcd role"""
    _role_grant_revoke(args, path, read, write, rw, True)


@role.command(name="revoke")
@_ARGS
@_perm_options("revoked")
def role_revoke(args: tuple[str, ...], path: str, read: bool, write: bool, rw: bool) -> None:
    """revoke path matches for an etcd role"""
    _role_grant_revoke(args, path, read, write, rw, False)
