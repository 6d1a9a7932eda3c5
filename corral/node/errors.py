"""Errors of `corral node`, one hierarchy; the CLI prints them and exits 1.

    NodeError
    ├── ConfigRefused        the cloud-config has validation errors (line-numbered entries)
    ├── HostRootRefused      --root is the real `/` and --allow-host-root was not given
    └── UnsupportedConfig    the config asks for something corral cannot run yet
"""

from __future__ import annotations

from corral.cloudinit import Entry

__all__ = ["ConfigRefused", "HostRootRefused", "NodeError", "UnsupportedConfig"]


class NodeError(Exception):
    """Base of every error `corral node` reports to the user."""


class ConfigRefused(NodeError):
    def __init__(self, entries: tuple[Entry, ...]) -> None:
        self.entries = entries
        lines = "\n".join(str(e) for e in entries)
        super().__init__(f"the cloud-config has errors; nothing was applied\n{lines}")


class HostRootRefused(NodeError):
    pass


class UnsupportedConfig(NodeError):
    pass
