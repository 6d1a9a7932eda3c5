"""The containers error hierarchy.

ContainerError
 ├── SettingsError      bad or missing machine container settings
 ├── ImageError         image import, lookup or removal failed
 ├── DriverError        a runtime command failed (carries its exit code and output)
 └── QuadletError       a `.container` unit is invalid (carries the line number)
"""

from __future__ import annotations

__all__ = ["ContainerError", "DriverError", "ImageError", "QuadletError", "SettingsError"]


class ContainerError(Exception):
    """Base of every error raised by `corral.containers`."""


class SettingsError(ContainerError):
    pass


class ImageError(ContainerError):
    pass


class DriverError(ContainerError):
    def __init__(self, message: str, returncode: int = 1, output: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.output = output


class QuadletError(ContainerError):
    def __init__(self, message: str, line: int = 0, path: str = "") -> None:
        where = f"{path}:{line}: " if line else (f"{path}: " if path else "")
        super().__init__(f"{where}{message}")
        self.line = line
        self.path = path
