"""Named failpoints on the write path, armed by an environment variable.

`CORRAL_FAILPOINTS="wal_before_fsync=crash"` makes the process die (SIGKILL to itself, as a
power cut would stop it) the first time it reaches `failpoint("wal_before_fsync")`. Actions:
`crash`, `crash@N` (on the N-th hit), `sleep:MS`, `error` (raises `FailpointError`). Unarmed
failpoints cost one dict lookup. Names in use: raft_before_save, wal_before_fsync,
wal_after_fsync, snap_before_rename, snap_after_rename, apply_before_commit_reply.
"""

from __future__ import annotations

import os
import signal
import time

__all__ = ["FailpointError", "arm", "failpoint"]


class FailpointError(Exception):
    pass


_armed: dict[str, str] = {}
_hits: dict[str, int] = {}


def arm(spec: str) -> None:
    """Arm failpoints from a spec like `a=crash,b=sleep:50` (replaces earlier arming)."""
    _armed.clear()
    _hits.clear()
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, action = item.partition("=")
        _armed[name] = action or "crash"


def failpoint(name: str) -> None:
    action = _armed.get(name)
    if action is None:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if action.startswith("crash"):
        _, _, nth = action.partition("@")
        if not nth or _hits[name] >= int(nth):
            os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("sleep:"):
        time.sleep(int(action[6:]) / 1000)
    elif action == "error":
        raise FailpointError(name)


arm(os.environ.get("CORRAL_FAILPOINTS", ""))
