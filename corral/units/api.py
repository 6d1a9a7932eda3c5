"""The runner's local control API: newline-delimited JSON over a unix stream socket.

Wire format (version 1). Each request is one JSON object on one line:
`{"v": 1, "op": "<verb>", ...arguments}`; each answer is one line:
`{"v": 1, "ok": true, "result": ...}` or
`{"v": 1, "ok": false, "error": {"code": "<UnitError.code>", "message": "..."}}`.
`subscribe` answers `{"ok": true}` and then streams one `{"event": {...}}` line per state
change until the client disconnects. Requests of a newer version are refused with a clear
error; a malformed line gets an error answer, never a dropped connection or a crash.

Verbs: ping, load, daemon-reload, start, stop, restart, reload, reset-failed, enable, disable,
unload, status, list, cat, files, show, journal, subscribe. This is what `corral units` and fleet's
agent use; both only need the machine root to find the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from corral.units.errors import ControlError, UnitError, error_from_code
from corral.units.supervisor import Layout, UnitRunner

__all__ = ["API_VERSION", "AsyncUnitsClient", "ControlServer", "UnitsClient", "socket_path"]

API_VERSION = 1
_MAX_LINE = 4 << 20


def socket_path(root: Path | str) -> Path:
    return Layout(Path(root)).socket


class _ShortPath:
    """A path usable with bind()/connect() even when longer than sun_path (108 bytes).

    Long paths go through /proc/self/fd/<dirfd>/<name>, which the kernel resolves.
    """

    def __init__(self, path: Path) -> None:
        self.fd = -1
        if len(os.fsencode(str(path))) < 100:
            self.path = str(path)
        else:
            self.fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
            self.path = f"/proc/self/fd/{self.fd}/{path.name}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ControlServer:
    def __init__(self, runner: UnitRunner) -> None:
        self.runner = runner
        self.path = runner.layout.socket
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        short = _ShortPath(self.path)
        try:
            self._server = await asyncio.start_unix_server(self._serve, short.path, limit=_MAX_LINE)
        finally:
            short.close()
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._conns):
                t.cancel()
            await self._server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._send(
                        writer,
                        {
                            "ok": False,
                            "error": {"code": "control", "message": "request line too long"},
                        },
                    )
                    return
                if not line:
                    return
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError("request must be a JSON object")
                except ValueError as err:
                    await self._send(
                        writer,
                        {
                            "ok": False,
                            "error": {"code": "control", "message": f"malformed request: {err}"},
                        },
                    )
                    continue
                if req.get("op") == "subscribe":
                    await self._subscribe(writer)
                    return
                await self._send(writer, await self._dispatch(req))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._conns.discard(task)
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
        msg.setdefault("v", API_VERSION)
        writer.write(json.dumps(msg).encode() + b"\n")
        await writer.drain()

    async def _subscribe(self, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        cancel = self.runner.subscribe(queue.put_nowait)
        try:
            await self._send(writer, {"ok": True, "result": None})
            while True:
                note = await queue.get()
                await self._send(writer, {"event": note})
        finally:
            cancel()

    async def _dispatch(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            version = req.get("v", API_VERSION)
            if not isinstance(version, int) or version > API_VERSION:
                raise ControlError(
                    f"unsupported API version {version!r} (this runner speaks {API_VERSION})"
                )
            return {"ok": True, "result": await self._call(str(req.get("op")), req)}
        except UnitError as err:
            return {"ok": False, "error": {"code": err.code, "message": str(err)}}
        except (KeyError, TypeError, ValueError) as err:
            return {"ok": False, "error": {"code": "control", "message": f"bad request: {err!r}"}}

    async def _call(self, op: str, req: dict[str, Any]) -> Any:
        r = self.runner
        unit = req.get("unit")
        wait = bool(req.get("wait", True))
        if op not in ("ping", "daemon-reload", "list", "reset-failed", "files") and not isinstance(
            unit, str
        ):
            raise ControlError(f"{op}: missing 'unit'")
        assert unit is None or isinstance(unit, str)
        if unit and op != "load" and unit.endswith(".container"):
            unit = unit.removesuffix(".container") + ".service"  # addressed as Quadlet does
        match op:
            case "ping":
                return {
                    "version": API_VERSION,
                    "machine_id": r.machine.machine_id,
                    "boot_id": r.machine.boot_id,
                    "hostname": r.machine.hostname,
                    "pid": os.getpid(),
                }
            case "load":
                return r.load_unit(
                    unit or "", str(req["text"]), bool(req.get("runtime", True))
                ).to_json()
            case "daemon-reload":
                r.daemon_reload()
                return None
            case "start":
                return await r.start_unit(unit or "", wait)
            case "stop":
                return await r.stop_unit(unit or "", wait)
            case "restart":
                return await r.restart_unit(unit or "", wait)
            case "reload":
                return await r.reload_unit(unit or "", wait)
            case "reset-failed":
                r.reset_failed(unit)
                return None
            case "enable":
                return r.enable(unit or "", bool(req.get("runtime", False)))
            case "disable":
                return r.disable(unit or "")
            case "unload":
                await r.unload(unit or "")
                return None
            case "status" | "show":
                st = r.status(unit or "").to_json()
                st["journal"] = r.journal.tail(unit or "", int(req.get("lines", 10)))
                return st
            case "list":
                return [s.to_json() for s in r.list_units(req.get("pattern"))]
            case "cat":
                return r.cat(unit or "")
            case "files":
                return r.unit_files()
            case "journal":
                n = req.get("lines")
                return r.journal.tail(unit or "", None if n is None else int(n))
        raise ControlError(f"unknown operation {op!r}")


def _check(answer: dict[str, Any]) -> Any:
    if answer.get("ok"):
        return answer.get("result")
    err = answer.get("error") or {}
    raise error_from_code(str(err.get("code", "unit-error")), str(err.get("message", "error")))


class UnitsClient:
    """Blocking client for one machine's runner (what the CLI uses)."""

    def __init__(self, root: Path | str, timeout: float | None = 120.0) -> None:
        self.path = socket_path(root)
        self.timeout = timeout

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        short = _ShortPath(self.path) if self.path.parent.exists() else None
        try:
            sock.connect(short.path if short else str(self.path))
        except OSError as err:
            sock.close()
            raise ControlError(
                f"cannot reach the unit runner at {self.path} ({err.strerror or err}); "
                "is `corral units daemon` running for this root?"
            ) from None
        finally:
            if short:
                short.close()
        return sock

    def call(self, op: str, **args: Any) -> Any:
        with self._connect() as sock:
            try:
                sock.sendall(json.dumps({"v": API_VERSION, "op": op, **args}).encode() + b"\n")
                line = sock.makefile("rb").readline()
            except TimeoutError:
                raise ControlError(
                    f"no answer from the unit runner within {self.timeout:g}s ({op} continues "
                    "there; check with `corral units status`)"
                ) from None
            except OSError as err:
                raise ControlError(f"lost the connection to the unit runner: {err}") from None
            if not line:
                raise ControlError("the unit runner closed the connection")
            try:
                answer = json.loads(line)
            except ValueError:
                raise ControlError("the unit runner sent a malformed answer") from None
            return _check(answer)

    def events(self) -> Iterator[dict[str, Any]]:
        sock = self._connect()
        sock.settimeout(None)
        with sock:
            sock.sendall(json.dumps({"v": API_VERSION, "op": "subscribe"}).encode() + b"\n")
            f = sock.makefile("rb")
            _check(json.loads(f.readline() or b"{}"))
            for line in f:
                yield json.loads(line)["event"]


class AsyncUnitsClient:
    """asyncio client (for fleet's agent)."""

    def __init__(self, root: Path | str) -> None:
        self.path = socket_path(root)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        short = _ShortPath(self.path)
        try:
            return await asyncio.open_unix_connection(short.path, limit=_MAX_LINE)
        except OSError as err:
            raise ControlError(f"cannot reach the unit runner at {self.path}: {err}") from None
        finally:
            short.close()

    async def call(self, op: str, **args: Any) -> Any:
        reader, writer = await self._open()
        try:
            writer.write(json.dumps({"v": API_VERSION, "op": op, **args}).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
            if not line:
                raise ControlError("the unit runner closed the connection")
            return _check(json.loads(line))
        finally:
            writer.close()

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        reader, writer = await self._open()
        try:
            writer.write(json.dumps({"v": API_VERSION, "op": "subscribe"}).encode() + b"\n")
            await writer.drain()
            _check(json.loads(await reader.readline() or b"{}"))
            while line := await reader.readline():
                yield json.loads(line)["event"]
        finally:
            writer.close()
