"""`python -m corral.update.hello`: the tour's workload, a program shipped in every release.

A fleet unit runs it on the machines; it comes from the machine's booted slot (the units
runner's `PYTHONPATH` names the slot's tree), so after a reboot into a new release the unit
runs that release's copy. It says which release it is, tells the units runner it is ready
(`Type=notify`: the unit is `active` only then), then stays up until SIGTERM. The
tour's bad release ships a copy that exits 1 at start: the machine itself stays healthy, the
fleet unit fails, and the update agent's fleet gate catches it.
"""

from __future__ import annotations

import os
import signal
import socket
import threading

import corral


def notify(state: str) -> None:
    """sd_notify(3): tell the unit runner (`Type=notify`) this service is ready."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # an abstract socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(addr)
        sock.sendall(state.encode())


def main() -> None:
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(f"hello from corral {corral.__version__} (pid {os.getpid()})", flush=True)
    notify("READY=1")
    done.wait()


if __name__ == "__main__":
    main()
