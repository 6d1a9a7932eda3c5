"""etcd v2 keys adapters and the semaphore lock client.

`KeysAPI` is the narrow seam locksmith needs (get/list/create/compare_and_swap/set/delete).
Its implementation, `ClientKeys`, runs over corral's one etcd client (`corral.client.SyncClient`);
tests may pass an in-memory model instead.

This is the thin shell around `cas_step`: GET the semaphore, compute the conditional write,
PUT it with `prevIndex` (or `prevExist=false` to create), and start over when the write lost a
race (errorCode 101 Compare failed, 105 Key already exists). It speaks only the etcd v2 HTTP
API, so it runs the same against corral's KV store and a real etcd (`--enable-v2`).
Endpoints are tried in order; a connection failure moves to the next one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from corral.client import SyncClient

from corral.locksmith._reaper import (
    PRESENCE_PREFIX,
    DeadHolderReaper,
    Release,
    presence_key,
    released_key,
)
from corral.locksmith._semaphore import (
    CasWrite,
    Lock,
    Op,
    Semaphore,
    Unlock,
    cas_step,
    semaphore_key,
)
from corral.locksmith.errors import CasConflict, HolderExists, HolderNotExist, KVError

__all__ = [
    "OUTCOME_UNKNOWN",
    "ClientKeys",
    "KVNode",
    "KeysAPI",
    "LockClient",
    "heartbeat",
    "reap_dead_holders",
]

log = logging.getLogger("corral.locksmith")

OUTCOME_UNKNOWN = -1  # a write may or may not have been applied
COMPARE_FAILED = 101
KEY_NOT_FOUND = 100
NODE_EXIST = 105


@dataclass(frozen=True, slots=True)
class KVNode:
    key: str
    value: str | None
    modified_index: int
    dir: bool = False


class KeysAPI(Protocol):
    """What locksmith needs from an etcd v2 client; errors are `KVError(code, …)`."""

    def get(self, key: str) -> KVNode | None: ...
    def list(self, directory: str) -> list[KVNode]: ...
    def create(self, key: str, value: str, ttl: int | None = None) -> KVNode: ...
    def compare_and_swap(self, key: str, value: str, prev_index: int) -> KVNode: ...
    def set(self, key: str, value: str, ttl: int | None = None) -> KVNode: ...
    def delete(self, key: str) -> None: ...


class ClientKeys:
    """`KeysAPI` over corral's etcd v2 client."""

    def __init__(self, client: SyncClient) -> None:
        self.client = client

    @classmethod
    def connect(cls, endpoints: Sequence[str], timeout: float = 5.0) -> ClientKeys:
        from corral.client import SyncClient, Timeouts

        return cls(SyncClient(list(endpoints), Timeouts(connect=timeout, request=timeout)))

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from corral.client import ClientError, EtcdError, OutcomeUnknown

        try:
            return fn(*args, **kwargs)
        except EtcdError as err:
            raise KVError(err.code, err.message, err.cause) from err
        except OutcomeUnknown as err:
            raise KVError(OUTCOME_UNKNOWN, f"outcome unknown: {err}") from err
        except ClientError as err:
            raise KVError(0, str(err)) from err

    @staticmethod
    def _node(result: Any) -> KVNode:
        n = result.node
        return KVNode(n.key, n.value, n.modified_index, n.dir)

    def get(self, key: str) -> KVNode | None:
        try:
            return self._node(self._call(self.client.get, "/" + key.lstrip("/")))
        except KVError as err:
            if err.code == KEY_NOT_FOUND:
                return None
            raise

    def list(self, directory: str) -> list[KVNode]:
        try:
            result = self._call(self.client.get, "/" + directory.lstrip("/"))
        except KVError as err:
            if err.code == KEY_NOT_FOUND:
                return []
            raise
        return [KVNode(n.key, n.value, n.modified_index, n.dir) for n in result.node.nodes]

    def create(self, key: str, value: str, ttl: int | None = None) -> KVNode:
        return self._node(self._call(self.client.create, "/" + key.lstrip("/"), value, ttl=ttl))

    def compare_and_swap(self, key: str, value: str, prev_index: int) -> KVNode:
        return self._node(
            self._call(
                self.client.compare_and_swap, "/" + key.lstrip("/"), value, prev_index=prev_index
            )
        )

    def set(self, key: str, value: str, ttl: int | None = None) -> KVNode:
        return self._node(self._call(self.client.set, "/" + key.lstrip("/"), value, ttl=ttl))

    def delete(self, key: str) -> None:
        try:
            self._call(self.client.delete, "/" + key.lstrip("/"))
        except KVError as err:
            if err.code != KEY_NOT_FOUND:
                raise


class LockClient:
    """locksmith's EtcdLockClient + Lock: the semaphore of one group, changed by CAS."""

    def __init__(self, keys: KeysAPI, group: str = "", max_attempts: int = 1000) -> None:
        self.keys = keys
        self.key = semaphore_key(group)
        self.max_attempts = max_attempts

    def init(self) -> None:
        """Create the fresh semaphore if absent (locksmith does this on every client start)."""
        try:
            self.keys.create(self.key, Semaphore().to_json())
        except KVError as err:
            if err.code != NODE_EXIST:
                raise

    def get(self) -> tuple[Semaphore, int]:
        node = self.keys.get(self.key)
        if node is None or node.value is None:
            raise KVError(KEY_NOT_FOUND, "Key not found", "/" + self.key)
        return Semaphore.from_json(node.value), node.modified_index

    def apply(self, op: Op) -> CasWrite:
        """Run `op` to completion: retries lost races, raises SemaphoreError when refused.

        A write whose outcome is unknown (the connection broke after sending it) is retried
        from a fresh read; if the read shows the write did land (our lock is there, our
        unlock is done) that counts as success. set-max is absolute, so a repeat is harmless.
        """
        uncertain: CasWrite | None = None
        for _ in range(self.max_attempts):
            node = self.keys.get(self.key)
            try:
                write = cas_step(
                    op,
                    None if node is None else node.value,
                    None if node is None else node.modified_index,
                )
            except (HolderExists, HolderNotExist):
                if uncertain is not None and isinstance(op, (Lock, Unlock)):
                    return uncertain
                raise
            try:
                if write.prev_index is None:
                    self.keys.create(self.key, write.value)
                else:
                    self.keys.compare_and_swap(self.key, write.value, write.prev_index)
            except KVError as err:
                if err.code in (COMPARE_FAILED, NODE_EXIST):
                    continue
                if err.code == OUTCOME_UNKNOWN:
                    uncertain = write
                    continue
                raise
            return write
        raise CasConflict(COMPARE_FAILED, f"gave up after {self.max_attempts} lost races", self.key)


def heartbeat(keys: KeysAPI, machine_id: str, ttl: int) -> None:
    """Refresh this machine's presence key (call more often than `ttl` seconds)."""
    keys.set(presence_key(machine_id), "alive", ttl=ttl)


def reap_dead_holders(lock: LockClient, reaper: DeadHolderReaper, now: float) -> list[Release]:
    """One pass of dead-holder release: unlock holders gone for the grace period, record it.

    `now` is the caller's clock (seconds); only the reaper compares times.
    """
    sem, _index = lock.get()
    present = {n.key.rsplit("/", 1)[-1] for n in lock.keys.list(PRESENCE_PREFIX)}
    done: list[Release] = []
    for release in reaper.observe(now, sem.holder_list, present):
        try:
            lock.apply(Unlock(release.holder))
        except HolderNotExist:
            pass  # someone (an operator, another reaper) released it first
        else:
            log.warning(
                "released reboot lock of %s: presence gone for %.0fs",
                release.holder,
                release.released_at - release.missing_since,
            )
            lock.keys.set(released_key(release.holder), release.to_json())
            done.append(release)
        reaper.released(release.holder)
    return done
