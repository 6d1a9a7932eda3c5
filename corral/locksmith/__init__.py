"""locksmith for corral: reboot one machine at a time, cluster-wide (locksmith v0.6 compatible).

Pure core: `Semaphore` and `cas_step` (the semaphore value and its compare-and-swap protocol),
`Periodic` (reboot windows on a time you pass in), `parse_strategy`/`DaemonSettings`
(strategy, window and group settings), `DeadHolderReaper` (releasing holders whose machine is
gone). Shell: `LockClient` over a `KeysAPI` (`ClientKeys`, over corral.client). See docs/locksmith.md.
"""

from corral.locksmith._agent_link import AgentLink, follow_agent
from corral.locksmith._coordinator import (
    NEED_REBOOT,
    Action,
    CoordinatorState,
    Exit,
    LockOutcome,
    LockRequest,
    Log,
    Reboot,
    RebootCoordinator,
    SetTimer,
    UnlockRequest,
)
from corral.locksmith._daemon import LocksmithDaemon
from corral.locksmith._fleetlock import (
    FleetLockError,
    FleetLockRequest,
)
from corral.locksmith._fleetlock import make_app as make_fleetlock_app
from corral.locksmith._fleetlock import (
    parse_request as parse_fleetlock_request,
)
from corral.locksmith._kv import (
    ClientKeys,
    KeysAPI,
    KVNode,
    LockClient,
    heartbeat,
    reap_dead_holders,
)
from corral.locksmith._reaper import (
    PRESENCE_PREFIX,
    RELEASED_PREFIX,
    DeadHolderReaper,
    Release,
    presence_key,
    released_key,
)
from corral.locksmith._semaphore import (
    KEY_PREFIX,
    SEMAPHORE_KEY,
    CasWrite,
    Lock,
    Op,
    Semaphore,
    SetMax,
    Unlock,
    apply_op,
    cas_step,
    semaphore_key,
)
from corral.locksmith._strategy import (
    DEFAULT_ENDPOINTS,
    DaemonSettings,
    Strategy,
    parse_env_file,
    parse_strategy,
)
from corral.locksmith._window import Period, Periodic, parse_go_duration
from corral.locksmith.errors import (
    CasConflict,
    ConfigError,
    CorruptSemaphore,
    HolderExists,
    HolderNotExist,
    KVError,
    LocksmithError,
    SemaphoreError,
    SemaphoreFull,
)

__all__ = [
    "DEFAULT_ENDPOINTS",
    "KEY_PREFIX",
    "NEED_REBOOT",
    "PRESENCE_PREFIX",
    "RELEASED_PREFIX",
    "SEMAPHORE_KEY",
    "Action",
    "AgentLink",
    "CasConflict",
    "CasWrite",
    "ClientKeys",
    "ConfigError",
    "CoordinatorState",
    "CorruptSemaphore",
    "DaemonSettings",
    "DeadHolderReaper",
    "Exit",
    "FleetLockError",
    "FleetLockRequest",
    "HolderExists",
    "HolderNotExist",
    "KVError",
    "KVNode",
    "KeysAPI",
    "Lock",
    "LockClient",
    "LockOutcome",
    "LockRequest",
    "LocksmithDaemon",
    "LocksmithError",
    "Log",
    "Op",
    "Period",
    "Periodic",
    "Reboot",
    "RebootCoordinator",
    "Release",
    "Semaphore",
    "SemaphoreError",
    "SemaphoreFull",
    "SetMax",
    "SetTimer",
    "Strategy",
    "Unlock",
    "UnlockRequest",
    "apply_op",
    "cas_step",
    "follow_agent",
    "heartbeat",
    "make_fleetlock_app",
    "parse_env_file",
    "parse_fleetlock_request",
    "parse_go_duration",
    "parse_strategy",
    "presence_key",
    "reap_dead_holders",
    "released_key",
    "semaphore_key",
]
