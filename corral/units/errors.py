"""The units error hierarchy.

    UnitError
     ├── UnitSyntaxError    a unit file cannot be read (carries path and line number)
     ├── UnitNameError      not a valid unit name (or a template used without instance)
     ├── SpecifierError     unknown `%x` specifier in a setting
     ├── BadSettingError    a setting has a value that cannot be used (load state bad-setting)
     ├── UnitNotFoundError  no unit file of that name (load state not-found)
     ├── JobError           a start/stop request was refused (start limit, unit failed to load…)
     └── ControlError       the control socket is unreachable or answered with an error

Each carries a `code` that the control API puts on the wire, so a client re-raises the
same class that the runner raised.
"""

from __future__ import annotations

__all__ = [
    "BadSettingError",
    "ControlError",
    "JobError",
    "SpecifierError",
    "UnitError",
    "UnitNameError",
    "UnitNotFoundError",
    "UnitSyntaxError",
    "error_from_code",
]


class UnitError(Exception):
    """Base of every error raised by `corral.units`."""

    code = "unit-error"


class UnitSyntaxError(UnitError):
    code = "syntax"

    def __init__(self, message: str, path: str = "", line: int = 0) -> None:
        where = f"{path or '<unit>'}:{line}: " if line else (f"{path}: " if path else "")
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


class UnitNameError(UnitError):
    code = "bad-name"


class SpecifierError(UnitError):
    code = "specifier"


class BadSettingError(UnitError):
    code = "bad-setting"

    def __init__(self, message: str, path: str = "", line: int = 0) -> None:
        where = f"{path or '<unit>'}:{line}: " if line else ""
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


class UnitNotFoundError(UnitError):
    code = "not-found"


class JobError(UnitError):
    code = "job-failed"


class ControlError(UnitError):
    code = "control"


_BY_CODE: dict[str, type[UnitError]] = {
    c.code: c
    for c in (
        UnitError,
        UnitSyntaxError,
        UnitNameError,
        SpecifierError,
        BadSettingError,
        UnitNotFoundError,
        JobError,
        ControlError,
    )
}


def error_from_code(code: str, message: str) -> UnitError:
    """Rebuild the error a runner reported over the control socket."""
    cls = _BY_CODE.get(code, UnitError)
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    if isinstance(err, UnitSyntaxError | BadSettingError):
        err.path, err.line = "", 0
    return err
