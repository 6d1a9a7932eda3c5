"""etcd's v2 auth over HTTP (aiohttp): `/v2/auth/*` and the permission checks of the client API.

The shell around `corral.kv.auth` (etcd 3.4 `etcdserver/api/v2http/client_auth.go`):

* `/v2/auth/enable` (GET open to all; PUT/DELETE need the root role once auth is on),
  `/v2/auth/users[/name]`, `/v2/auth/roles[/name]` (GET/PUT/DELETE; root role once auth is
  on). Method check first (405 + `Allow`), then credentials (`401 {"message":"Insufficient
  credentials"}`), then the operation; errors are `{"message":"auth: …"}` with etcd's status.
* `/v2/keys`: with auth on, a request without an `Authorization` header acts as the guest
  role; with one, its basic credentials must name a user and match its bcrypt hash, and one
  of the user's roles must grant the key (`401` errorCode 110 otherwise). etcd sends no
  `WWW-Authenticate` header with either 401, and neither does corral.
* `/v2/members`: GET is open, the other methods need the root role. `/version`, `/health`,
  `/v2/machines`, `/v2/stats/*` and `/metrics` stay open.

Writes are proposed through the member like any other write (`InternalChange`, replicated);
before a member's first auth write it makes etcd's `ensureAuthDirectories` writes. bcrypt
(cost 10, `$2a$`, passwords cut at 72 bytes as Go's bcrypt did) runs in a worker thread; a
verified (hash, password digest) pair is remembered, so a client repeating its credentials
costs one hash per password change rather than one per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import posixpath
from typing import TYPE_CHECKING

import bcrypt
from aiohttp import web

from corral.kv import auth
from corral.kv.commands import InternalChange
from corral.kv.errors import Unauthorized, V2Error

if TYPE_CHECKING:
    from corral.kv.http_api import ClientAPI

__all__ = ["BCRYPT_COST", "AuthAPI", "check_password", "hash_password"]

#: Go's `bcrypt.DefaultCost`.
BCRYPT_COST = 10
_BCRYPT_MAX = 72
_CACHE_LIMIT = 4096
_JSON = "application/json"
_PREFIX = "/v2/auth"


def hash_password(password: str) -> str:
    """Go's `bcrypt.GenerateFromPassword(pw, DefaultCost)`: `$2a$10$…`."""
    salt = bcrypt.gensalt(BCRYPT_COST, prefix=b"2a")
    return bcrypt.hashpw(password.encode()[:_BCRYPT_MAX], salt).decode()


def check_password(hashed: str, password: bytes) -> bool:
    """Go's `bcrypt.CompareHashAndPassword(hash, pw) == nil`."""
    try:
        return bcrypt.checkpw(password[:_BCRYPT_MAX], hashed.encode())
    except ValueError:  # not a bcrypt hash
        return False


class _Refused(Exception):
    """The request lacks the credentials it needs (etcd's writeNoAuth)."""


class AuthAPI:
    """Mounted by `ClientAPI`: `handle` serves `/v2/auth/*`; `keys_allowed` and
    `root_access` are its permission checks. Call them only when `enabled()`."""

    def __init__(self, api: ClientAPI) -> None:
        self.api = api
        self._ensured = False
        self._verified: dict[tuple[str, bytes], bool] = {}

    @property
    def _state(self) -> auth.AuthState:
        return self.api.member.keyspace

    def enabled(self) -> bool:
        return auth.auth_enabled(self._state)

    # ------------------------------------------------------------------ credentials

    async def _password_ok(self, hashed: str, password: bytes) -> bool:
        key = (hashed, hashlib.sha256(password).digest())
        ok = self._verified.get(key)
        if ok is None:
            ok = await asyncio.to_thread(check_password, hashed, password)
            if len(self._verified) >= _CACHE_LIMIT:
                self._verified.clear()
            self._verified[key] = ok
        return ok

    async def _basic_user(self, request: web.Request) -> auth.User | None:
        creds = auth.parse_basic_auth(request.headers.get("Authorization", ""))
        if creds is None:
            return None
        user = auth.find_user(self._state, creds[0])
        if user is None or not await self._password_ok(user.password, creds[1]):
            return None
        return user

    async def root_access(self, request: web.Request) -> bool:
        """etcd's `hasRootAccess` (auth on): basic credentials of a user with the root role."""
        return auth.has_root_role(await self._basic_user(request))

    async def keys_allowed(self, request: web.Request, key: str, recursive: bool) -> bool:
        """etcd's `hasKeyPrefixAccess` (auth on) for the URL key after `/v2/keys`."""
        write = request.method not in ("GET", "HEAD")
        if request.headers.get("Authorization", "") == "":
            return auth.has_key_access(self._state, None, key, write, False)
        user = await self._basic_user(request)
        return user is not None and auth.has_key_access(self._state, user, key, write, recursive)

    def no_auth(self) -> web.Response:
        """etcd's `writeNoAuth`: `401 {"message":"Insufficient credentials"}`."""
        return self.api._resp(401, auth.AuthError(401, "Insufficient credentials").body(), _JSON)

    def keys_refused(self) -> web.Response:
        """etcd's `writeKeyNoAuth`: errorCode 110 with index 0."""
        return self.api._key_error(Unauthorized(cause="Insufficient credentials", index=0))

    async def _require_root(self, request: web.Request, writes_only: bool = False) -> None:
        if writes_only and request.method in ("GET", "HEAD"):
            return
        if self.enabled() and not await self.root_access(request):
            raise _Refused

    # ------------------------------------------------------------------ routing

    async def handle(self, request: web.Request, path: str) -> web.StreamResponse:
        """Everything under `/v2/auth/` (Go ServeMux patterns of `handleAuth`)."""
        rest = path[len(_PREFIX) :]
        try:
            if rest in ("/roles", "/users"):
                return await self._base(request, rest[1:])
            if rest.startswith(("/roles/", "/users/")):
                pieces = posixpath.normpath(rest).split("/")
                if len(pieces) == 2:
                    return await self._base(request, pieces[1])
                if len(pieces) != 3:
                    return self._error(auth.bad_request("Invalid path"), False)
                if pieces[1] == "roles":
                    return await self._for_role(request, pieces[2])
                return await self._for_user(request, pieces[2])
            if rest == "/enable":
                return await self._enable_disable(request)
        except _Refused:
            return self.no_auth()
        return self.api._text_error(404, "404 page not found")

    # ------------------------------------------------------------------ answers

    def _headers(self) -> dict[str, str]:
        return {"X-Etcd-Cluster-Id": self.api.cluster_hex}

    def _ok(self, status: int, doc: object | None) -> web.Response:
        body = b"" if doc is None else auth.go_marshal(doc) + b"\n"  # json.Encoder
        return self.api._resp(status, body, _JSON, **self._headers())

    def _error(self, err: auth.AuthError, with_cluster: bool = True) -> web.Response:
        headers = self._headers() if with_cluster else {}
        return self.api._resp(err.status, err.body(), _JSON, **headers)

    def _not_allowed(self, request: web.Request, *methods: str) -> web.Response | None:
        if request.method in methods:
            return None
        return self.api._not_allowed(",".join(methods))

    async def _quorum(self) -> None:
        # etcd reads users and roles with QGET before changing them.
        barrier = getattr(self.api.member, "read_barrier", None)
        if barrier is not None:
            await barrier()

    async def _ensure(self) -> None:
        """etcd's `ensureAuthDirectories`, until it has once succeeded on this member."""
        if self._ensured:
            return
        for key, value in auth.ENSURE_KEYS:
            try:
                await self._propose(InternalChange(key, value, False))
            except V2Error as err:
                if err.code != 105:
                    raise
                if key == auth.ENABLED_KEY:
                    break
        self._ensured = True

    async def _propose(self, cmd: InternalChange) -> None:
        m = self.api.member
        await m.propose(InternalChange(cmd.key, cmd.value, cmd.prev_exist, m.now()))

    async def _run(self, plan: auth.Plan) -> web.Response:
        for w in plan.writes:
            await self._ensure()
            try:
                await self._propose(InternalChange(w.key, w.value, w.prev_exist))
            except V2Error as err:
                if err.code == 105 and w.on_exists is not None:
                    raise w.on_exists from None
                if err.code == 100 and w.on_missing is not None:
                    raise w.on_missing from None
                raise
        return self._ok(plan.status, plan.body)

    async def _answer(self, op: object) -> web.Response:
        """Run an operation (a coroutine giving a response), mapping etcd's errors."""
        try:
            assert asyncio.iscoroutine(op)
            resp: web.Response = await op
            return resp
        except auth.AuthError as err:
            return self._error(err)
        except V2Error as err:
            return self.api._key_error(err)

    # ------------------------------------------------------------------ handlers

    async def _base(self, request: web.Request, kind: str) -> web.Response:
        refused = self._not_allowed(request, "GET")
        if refused is not None:
            return refused
        await self._require_root(request)
        st = self._state
        if kind == "roles":
            return self._ok(
                200, {"roles": [auth.role_doc(auth.get_role(st, r)) for r in auth.all_roles(st)]}
            )
        users = []
        for name in auth.all_users(st):
            u = auth.find_user(st, name)
            if u is None:
                return self._error(auth.AuthError(404, f"auth: User {name} does not exist."))
            roles = [r for r in (auth.find_role(st, n) for n in u.roles or ()) if r is not None]
            users.append(auth.user_with_roles_doc(u.user, roles))
        return self._ok(200, {"users": users or None})

    async def _for_role(self, request: web.Request, name: str) -> web.Response:
        refused = self._not_allowed(request, "GET", "PUT", "DELETE")
        if refused is not None:
            return refused
        await self._require_root(request)
        return await self._answer(self._role_op(request, name))

    async def _role_op(self, request: web.Request, name: str) -> web.Response:
        st = self._state
        if request.method == "GET":
            return self._ok(200, auth.role_doc(auth.get_role(st, name)))
        if request.method == "PUT":
            body = await request.read()
            await self._quorum()
            return await self._run(auth.put_role(st, name, body))
        return await self._run(auth.delete_role(name))

    async def _for_user(self, request: web.Request, name: str) -> web.Response:
        refused = self._not_allowed(request, "GET", "PUT", "DELETE")
        if refused is not None:
            return refused
        await self._require_root(request)
        return await self._answer(self._user_op(request, name))

    async def _user_op(self, request: web.Request, name: str) -> web.Response:
        st = self._state
        if request.method == "GET":
            u = auth.get_user(st, name)
            roles = [auth.get_role(st, r) for r in u.roles or ()]
            return self._ok(200, auth.user_with_roles_doc(u.user, roles))
        if request.method == "PUT":
            body = await request.read()
            given = auth.decode_user(body)
            hashed = None
            if given.password and given.user == name:
                hashed = await asyncio.to_thread(hash_password, given.password)
            await self._quorum()
            return await self._run(auth.put_user(st, name, body, hashed))
        return await self._run(auth.delete_user(st, name))

    async def _enable_disable(self, request: web.Request) -> web.Response:
        refused = self._not_allowed(request, "GET", "PUT", "DELETE")
        if refused is not None:
            return refused
        await self._require_root(request, writes_only=True)
        if request.method == "GET":
            return self._ok(200, {"enabled": self.enabled()})
        return await self._answer(self._switch(request.method == "PUT"))

    async def _switch(self, on: bool) -> web.Response:
        await self._quorum()
        return await self._run(auth.enable(self._state) if on else auth.disable(self._state))
