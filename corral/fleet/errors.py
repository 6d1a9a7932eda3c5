"""fleet's error hierarchy.

::

    FleetError
    ├── UnitFileError        a unit file go-systemd's deserializer would reject
    ├── UnitNameError        a name api.ValidateName would reject (HTTP 400)
    ├── RequirementsError    [X-Fleet] options api.ValidateOptions would reject (HTTP 400)
    ├── RegistryFormatError  a registry value that does not decode (bad JSON, wrong shape)
    └── MoveRefused          ``fleet move`` asked for a machine the unit cannot run on

Every message is fleet's own string where fleet has one, so a script that greps fleetctl's
output keeps working. ``http_status`` is the code the v1 API answers with.
"""

from __future__ import annotations

__all__ = [
    "FleetError",
    "MoveRefused",
    "RegistryFormatError",
    "RequirementsError",
    "UnitFileError",
    "UnitNameError",
]


class FleetError(Exception):
    """Base of every fleet error; ``str(err)`` is the user-facing message."""

    http_status = 500


class UnitFileError(FleetError):
    """The unit text does not parse (go-systemd's deserializer semantics)."""

    http_status = 400


class UnitNameError(FleetError):
    """The unit name is not one fleet accepts."""

    http_status = 400


class RequirementsError(FleetError):
    """The ``[X-Fleet]`` options contradict each other."""

    http_status = 400


class RegistryFormatError(FleetError):
    """A value read from the registry has the wrong shape."""

    http_status = 500


class MoveRefused(FleetError):
    """A requested move would break one of the unit's placement rules."""

    http_status = 409
