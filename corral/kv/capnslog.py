"""Log lines in etcd 3.4's capnslog shape, on standard error.

`2026-11-28 23:19:48.585087 W | pkg/flags: …`: tools that read etcd's logs (and people who
know them) find the same levels (`D I N W E C`) and package prefixes in a member's log.
"""

from __future__ import annotations

import sys
from datetime import datetime

__all__ = ["log"]


def log(level: str, message: str) -> None:
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")
    print(f"{stamp} {level} | {message}", file=sys.stderr, flush=True)
