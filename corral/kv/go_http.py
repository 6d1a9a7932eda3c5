"""What Go's net/http server does that etcd's clients can see, shared by the member's client
API and the proxy: no `Server` header, a bare 400 for a path that does not decode, request lines
and headers up to 1 MiB (DefaultMaxHeaderBytes)."""

from __future__ import annotations

from aiohttp import web

TEXT_PLAIN = "text/plain; charset=utf-8"


async def no_server_header(_: web.Request, resp: web.StreamResponse) -> None:
    resp.headers.popall("Server", None)


def bad_request_path() -> web.Response:
    """Go's answer to a request path it cannot unescape: 400 and the connection closed."""
    resp = web.Response(status=400, body=b"400 Bad Request")
    resp.headers["Content-Type"] = TEXT_PLAIN
    resp.force_close()
    return resp


def app_runner(app: web.Application, shutdown_timeout: float) -> web.AppRunner:
    return web.AppRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,
        access_log=None,
        max_line_size=1 << 20,
        max_field_size=1 << 20,
        shutdown_timeout=shutdown_timeout,
    )
