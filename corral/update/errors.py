"""The update subsystem's errors, one tree, each carrying the Omaha error code it maps to.

    UpdateError                      (code 1, kActionCodeError)
    ├── OmahaError                   codec and protocol failures
    │   ├── EmptyResponseError       (30) zero-byte body
    │   ├── XmlParseError            (31) not well-formed, DTD/entities, wrong root, too large
    │   └── ResponseInvalidError     (34) parses, but breaks update_engine's acceptance rules
    ├── VersionError                 a version that is not semver
    ├── PayloadError                 (12) a release payload that must not be installed
    │   ├── PayloadHashError         (10) SHA-256 differs from what the server announced
    │   ├── PayloadSizeError         (11) truncated or padded
    │   ├── SignatureMissingError    (17) unsigned, or no key trusted at all
    │   └── SignatureError           (18) signed, but by no trusted key
    ├── SlotError                    (13) the slot table or a slot's contents are unusable
    └── RefusedError                 (36) policy on the machine refuses the update

Codes are update_engine's `ActionExitCode` values (see `omaha.ErrorCode`), so an agent can
report any failure as `<event eventtype="3" eventresult="0" errorcode="N">`.
"""

from __future__ import annotations

__all__ = [
    "EmptyResponseError",
    "OmahaError",
    "PayloadError",
    "PayloadHashError",
    "PayloadSizeError",
    "RefusedError",
    "ResponseInvalidError",
    "SignatureError",
    "SignatureMissingError",
    "SlotError",
    "UpdateError",
    "VersionError",
    "XmlParseError",
]


class UpdateError(Exception):
    """Base of every update failure; `code` is the Omaha error code to report."""

    code: int = 1


class OmahaError(UpdateError):
    code = 2


class EmptyResponseError(OmahaError):
    code = 30


class XmlParseError(OmahaError):
    code = 31


class ResponseInvalidError(OmahaError):
    code = 34


class VersionError(UpdateError, ValueError):
    code = 34


class PayloadError(UpdateError):
    code = 12


class PayloadHashError(PayloadError):
    code = 10


class PayloadSizeError(PayloadError):
    code = 11


class SignatureMissingError(PayloadError):
    code = 17


class SignatureError(PayloadError):
    code = 18


class SlotError(UpdateError):
    code = 13


class RefusedError(UpdateError):
    code = 36
