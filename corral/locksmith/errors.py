"""Errors of the locksmith subsystem.

LocksmithError
├── SemaphoreError       the semaphore refused the operation (locksmith's exact text)
│   ├── SemaphoreFull        "semaphore is at N"          (lock with no capacity left)
│   ├── HolderExists         "holder exists"              (lock by a current holder)
│   └── HolderNotExist       "holder does not exist"      (unlock by a non-holder)
├── CorruptSemaphore     the stored value is not a semaphore JSON document
├── ConfigError          bad strategy / reboot window / group settings
└── KVError              the KV store answered with an etcd v2 error (`code` = errorCode)
    └── CasConflict          compare-and-swap kept losing (101 Compare failed /
                             105 Key already exists) after every retry
"""

from __future__ import annotations

__all__ = [
    "CasConflict",
    "ConfigError",
    "CorruptSemaphore",
    "HolderExists",
    "HolderNotExist",
    "KVError",
    "LocksmithError",
    "SemaphoreError",
    "SemaphoreFull",
]


class LocksmithError(Exception):
    """Base class of every locksmith error."""


class SemaphoreError(LocksmithError):
    """The semaphore's rules refuse the operation."""


class SemaphoreFull(SemaphoreError):
    def __init__(self, semaphore: int) -> None:
        super().__init__(f"semaphore is at {semaphore}")
        self.semaphore = semaphore


class HolderExists(SemaphoreError):
    def __init__(self) -> None:
        super().__init__("holder exists")


class HolderNotExist(SemaphoreError):
    def __init__(self) -> None:
        super().__init__("holder does not exist")


class CorruptSemaphore(LocksmithError):
    """The value at the semaphore key cannot be decoded."""


class ConfigError(LocksmithError):
    """Invalid locksmith settings (strategy, window, group)."""


class KVError(LocksmithError):
    """An etcd v2 error answer; `code` is its errorCode (100 key not found, 101 compare failed…)."""

    def __init__(self, code: int, message: str, cause: str = "") -> None:
        prefix = f"{code}: " if code > 0 else ""
        super().__init__(prefix + message + (f" ({cause})" if cause else ""))
        self.code = code
        self.message = message
        self.cause = cause


class CasConflict(KVError):
    """Every compare-and-swap attempt lost a race."""
