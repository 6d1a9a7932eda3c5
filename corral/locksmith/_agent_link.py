"""The locksmith daemon beside a machine's update agent, through the agent's control socket.

corral's update agent serves `GET /status` and `POST /reboot` on `<root>/run/update-agent.sock`
(see `corral.update.agent`). `follow_agent` runs one `LocksmithDaemon` generation per boot:
it polls the status document, feeds `CURRENT_OP` changes to the daemon (the agent keeps
`UPDATE_STATUS_UPDATED_NEED_REBOOT` until it reboots, so polling cannot miss it), reboots by
`POST /reboot`, and after that reboot starts a fresh daemon whose "healthy" is the agent
reporting `slot_good` for a *new* `boot_id`. The status document is read only for those
three fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from corral.locksmith._daemon import LocksmithDaemon

__all__ = ["AgentLink", "follow_agent"]

Reboot = Callable[[], Coroutine[Any, Any, None]]


class AgentLink:
    """HTTP over the update agent's Unix socket."""

    def __init__(self, root: Path, timeout: float = 10.0) -> None:
        self.socket = root / "run/update-agent.sock"
        self.timeout = timeout

    async def _call(self, method: str, path: str) -> dict[str, Any] | None:
        import aiohttp

        from corral.update.agent import short_socket_path

        if not self.socket.exists():
            return None
        try:
            with short_socket_path(self.socket) as name:
                async with (
                    aiohttp.ClientSession(
                        connector=aiohttp.UnixConnector(path=name),
                        timeout=aiohttp.ClientTimeout(total=self.timeout),
                    ) as session,
                    session.request(method, f"http://agent{path}") as resp,
                ):
                    doc = json.loads(await resp.read())
                    return doc if resp.status == 200 and isinstance(doc, dict) else None
        except (aiohttp.ClientError, OSError, ValueError, TimeoutError):
            return None

    async def status(self) -> dict[str, Any] | None:
        """The agent's status document, or None while it cannot be reached."""
        return await self._call("GET", "/status")

    async def reboot(self) -> bool:
        return await self._call("POST", "/reboot") is not None


async def follow_agent(
    link: AgentLink, make_daemon: Callable[[Reboot], LocksmithDaemon], *, poll: float = 1.0
) -> int:
    """Run daemon generations against the agent until one exits without rebooting."""
    boot_before: str | None = None
    while True:
        statuses: asyncio.Queue[str] = asyncio.Queue()
        healthy = asyncio.Event()
        rebooted = False
        watched_boot = boot_before

        async def reboot() -> None:
            nonlocal rebooted, boot_before
            doc = await link.status()
            boot_before = None if doc is None else str(doc.get("boot_id", ""))
            while True:  # the agent must take the request
                if await link.reboot():
                    break
                await asyncio.sleep(poll)
            rebooted = True

        async def watch(
            since_boot: str | None, statuses: asyncio.Queue[str], healthy: asyncio.Event
        ) -> None:
            last_op: str | None = None
            while True:
                doc = await link.status()
                # Until the agent has rebooted, its document still describes the old boot
                # (still UPDATED_NEED_REBOOT): it is not news for this generation.
                if doc is not None and (since_boot is None or doc.get("boot_id") != since_boot):
                    op = str(doc.get("CURRENT_OP", ""))
                    if op != last_op:
                        last_op = op
                        await statuses.put(op)
                    if doc.get("slot_good"):
                        healthy.set()
                await asyncio.sleep(poll)

        poller = asyncio.create_task(watch(watched_boot, statuses, healthy))
        try:
            code = await make_daemon(reboot).run(statuses, healthy)
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        if not rebooted:
            return code
