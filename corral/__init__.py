"""corral: CoreOS's cluster stack in Python.

An etcd-compatible, Raft-replicated key-value store (v2 API), systemd-style units run by
corral's own supervisor, containers, fleet's scheduler, and whole-system atomic updates with
locksmith-style reboot coordination. See README.md and DESIGN.md for the architecture.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
