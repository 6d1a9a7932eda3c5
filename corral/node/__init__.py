"""`corral node`: one machine's init from a #cloud-config.

    node = Node(root, data, python=sys.executable)
    changes = node.prepare()          # validate, plan, write under root; what changed
    await node.run(stop)              # unit runner + KV member, fleetd, update agent, locksmith

`plan_node` (corral.node.plan) is the pure part: what a config makes the machine write and
run. See docs/node.md.
"""

from corral.node.errors import ConfigRefused, HostRootRefused, NodeError, UnsupportedConfig
from corral.node.machine import Node, installed_software, slot_software
from corral.node.plan import (
    NODE_UNITS,
    NodePlan,
    Service,
    Software,
    UnitCommand,
    plan_node,
    substitute,
)

__all__ = [
    "NODE_UNITS",
    "ConfigRefused",
    "HostRootRefused",
    "Node",
    "NodeError",
    "NodePlan",
    "Service",
    "Software",
    "UnitCommand",
    "UnsupportedConfig",
    "installed_software",
    "plan_node",
    "slot_software",
    "substitute",
]
