"""Errors of the cloud-config subsystem.

CloudConfigError
├── ValidationFailed   the validator itself could not finish (coreos-cloudinit's
│                      "Failed while validating user_data"); `corral cloud-config validate`
│                      exits 1 with that message
└── RenderError        a config that validates cannot be rendered (e.g. undecodable content)
"""

from __future__ import annotations

__all__ = ["CloudConfigError", "RenderError", "ValidationFailed"]


class CloudConfigError(Exception):
    """Base class of every cloud-config error."""


class ValidationFailed(CloudConfigError):
    """The validator could not finish; the message is the original's recovered panic."""


class RenderError(CloudConfigError):
    """The config cannot be turned into files."""
