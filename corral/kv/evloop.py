"""Run a server's coroutine on the fastest event loop available.

uvloop (libuv) runs the same asyncio programs with a fraction of the per-callback and
per-socket cost of the pure-Python selector loop; a member spends most of its CPU in the
loop (HTTP requests, peer frames, timers), so it is used where installed. Without it the
standard loop runs the same code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(coro)`, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
