"""The locksmith daemon's asyncio shell: performs a `RebootCoordinator`'s actions.

Inputs: update-agent statuses (an asyncio.Queue of status strings such as
`UPDATE_STATUS_UPDATED_NEED_REBOOT`), a `healthy` event set when this machine's services run
again, and the clock. Outputs: lock/unlock through a `LockClient` (run in a thread, the KV
client is blocking), a presence heartbeat for dead-holder release, and the `reboot` callback
(on a real host it reboots; under `corral node` it restarts the machine's services from the
new slot). `run()` returns when the coordinator exits (strategy `off`) or after `reboot`
returned — a rebooted machine starts a fresh daemon, which releases the lock once healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from corral.locksmith._coordinator import (
    Action,
    Exit,
    LockOutcome,
    LockRequest,
    Log,
    Reboot,
    RebootCoordinator,
    SetTimer,
    UnlockRequest,
)
from corral.locksmith._kv import LockClient, heartbeat, reap_dead_holders
from corral.locksmith._reaper import DeadHolderReaper
from corral.locksmith._semaphore import Lock, Unlock
from corral.locksmith.errors import (
    HolderExists,
    HolderNotExist,
    LocksmithError,
    SemaphoreError,
    SemaphoreFull,
)

__all__ = ["LocksmithDaemon"]

log = logging.getLogger("corral.locksmith")
_LEVELS = {
    "info": logging.INFO,
    "notice": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LocksmithDaemon:
    def __init__(
        self,
        coordinator: RebootCoordinator,
        lock: LockClient | None,
        machine_id: str,
        reboot: Callable[[], Awaitable[None]],
        *,
        clock: Callable[[], datetime] = _utc_now,
        presence_ttl: int | None = None,
        dead_holder_grace: float | None = None,
        reap_interval: float = 10.0,
    ) -> None:
        self.coordinator = coordinator
        self.lock = lock
        self.machine_id = machine_id
        self.reboot = reboot
        self.clock = clock
        self.presence_ttl = presence_ttl
        self.dead_holder_grace = dead_holder_grace
        self.reap_interval = reap_interval
        self._events: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._timer: asyncio.Task[None] | None = None

    async def run(self, statuses: asyncio.Queue[str], healthy: asyncio.Event) -> int:
        """Run until the coordinator exits or the machine reboots; returns the exit code."""
        background = [
            asyncio.create_task(self._forward_statuses(statuses)),
            asyncio.create_task(self._forward_healthy(healthy)),
        ]
        if self.presence_ttl and self.lock is not None:
            background.append(asyncio.create_task(self._heartbeat(self.presence_ttl)))
        if self.dead_holder_grace is not None and self.lock is not None:
            background.append(asyncio.create_task(self._reap(self.dead_holder_grace)))
        try:
            code = await self._perform(self.coordinator.start(self.clock()))
            while code is None:
                kind, payload = await self._events.get()
                now = self.clock()
                if kind == "status":
                    actions = self.coordinator.status(payload, now)
                elif kind == "healthy":
                    actions = self.coordinator.healthy(now)
                else:
                    actions = self.coordinator.timer(now)
                code = await self._perform(actions)
            return code
        finally:
            for task in [*background, self._timer]:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _perform(self, actions: list[Action]) -> int | None:
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            if isinstance(action, Log):
                log.log(_LEVELS.get(action.level, logging.INFO), action.message)
            elif isinstance(action, SetTimer):
                self._set_timer(action.at)
            elif isinstance(action, UnlockRequest):
                ok = await asyncio.to_thread(self._unlock)
                pending += self.coordinator.unlocked(ok, self.clock())
            elif isinstance(action, LockRequest):
                outcome = await asyncio.to_thread(self._lock)
                pending += self.coordinator.locked(outcome, self.clock())
            elif isinstance(action, Reboot):
                log.info("rebooting")
                await self.reboot()
                return 0
            elif isinstance(action, Exit):
                return action.code
        return None

    def _unlock(self) -> bool:
        if self.lock is None:
            return True
        try:
            self.lock.init()
            self.lock.apply(Unlock(self.machine_id))
        except HolderNotExist:
            return True
        except LocksmithError as exc:
            log.error("unlock failed: %s", exc)
            return False
        return True

    def _lock(self) -> LockOutcome:
        if self.lock is None:
            return LockOutcome.ERROR
        try:
            self.lock.init()
            self.lock.apply(Lock(self.machine_id))
        except HolderExists:
            return LockOutcome.ALREADY_HELD
        except SemaphoreFull:
            # locksmith checks capacity before membership, so a holder asking again on a
            # full semaphore is refused; it holds the lock all the same.
            try:
                held = self.machine_id in self.lock.get()[0].holder_list
            except LocksmithError:
                return LockOutcome.ERROR
            return LockOutcome.ALREADY_HELD if held else LockOutcome.REFUSED
        except SemaphoreError:
            return LockOutcome.REFUSED
        except LocksmithError as exc:
            log.warning("lock failed: %s", exc)
            return LockOutcome.ERROR
        return LockOutcome.ACQUIRED

    def _set_timer(self, at: datetime) -> None:
        if self._timer is not None:
            self._timer.cancel()

        async def fire() -> None:
            delay = (at - self.clock()).total_seconds()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._events.put(("timer", ""))

        self._timer = asyncio.create_task(fire())

    async def _forward_statuses(self, statuses: asyncio.Queue[str]) -> None:
        while True:
            await self._events.put(("status", await statuses.get()))

    async def _forward_healthy(self, healthy: asyncio.Event) -> None:
        await healthy.wait()
        await self._events.put(("healthy", ""))

    async def _reap(self, grace: float) -> None:
        """Release holders whose machine is gone (every daemon may do it: the unlock is a CAS)."""
        assert self.lock is not None
        reaper = DeadHolderReaper(grace)
        while True:
            try:
                await asyncio.to_thread(
                    reap_dead_holders, self.lock, reaper, self.clock().timestamp()
                )
            except LocksmithError as exc:
                log.warning("dead-holder check failed: %s", exc)
            await asyncio.sleep(self.reap_interval)

    async def _heartbeat(self, ttl: int) -> None:
        assert self.lock is not None
        keys = self.lock.keys
        while True:
            try:
                await asyncio.to_thread(heartbeat, keys, self.machine_id, ttl)
            except LocksmithError as exc:
                log.warning("presence heartbeat failed: %s", exc)
            await asyncio.sleep(max(ttl / 3, 0.1))
