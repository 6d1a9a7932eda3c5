"""Deterministic simulation of a Raft cluster (layer 1 of corral's testing design).

`Simulation` / `run_seed` run the real `corral.raft` core on a `SimNetwork` (drop, duplicate,
delay, reorder, partitions), `SimDisk`s (unsynced writes lost on crash) and virtual time,
with a client workload whose history is checked by `corral.testing.linearizability`, and an
`InvariantChecker` fed after every step. `run_seeds` drives a seed range (`corral sim`).
"""

from corral.testing.sim.cluster import COVERAGE_KINDS, SeedResult, SimOptions, Simulation, run_seed
from corral.testing.sim.disk import SimDisk
from corral.testing.sim.invariants import InvariantChecker
from corral.testing.sim.network import NetworkOptions, SimNetwork
from corral.testing.sim.runner import Summary, parse_seeds, replay_command, run_seeds

__all__ = [
    "COVERAGE_KINDS",
    "InvariantChecker",
    "NetworkOptions",
    "SeedResult",
    "SimDisk",
    "SimNetwork",
    "SimOptions",
    "Simulation",
    "Summary",
    "parse_seeds",
    "replay_command",
    "run_seed",
    "run_seeds",
]
