"""`corral up`: a local cluster of `corral node` machines on loopback, and its stop.

`plan` is the pure decision (machines, ports, cloud-configs, the state file's format);
`cluster` is the shell that starts, watches and stops the processes.
"""

from .cluster import (
    ClusterState,
    MachineStatus,
    cluster_status,
    kill_machine,
    load_state,
    start_cluster,
    start_machine,
    stop_cluster,
    wait_ready,
)
from .plan import STATE_FILE, ClusterPlan, FleetMode, MachinePlan, UpError, plan_cluster

__all__ = [
    "STATE_FILE",
    "ClusterPlan",
    "ClusterState",
    "FleetMode",
    "MachinePlan",
    "MachineStatus",
    "UpError",
    "cluster_status",
    "kill_machine",
    "load_state",
    "plan_cluster",
    "start_cluster",
    "start_machine",
    "stop_cluster",
    "wait_ready",
]
