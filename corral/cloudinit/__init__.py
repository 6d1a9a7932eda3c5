"""#cloud-config for corral machines: validation, the parsed config, and rendering.

    report = validate(data)            # coreos-cloudinit v1.13.0's -validate, line for line
    config = parse(data)               # frozen CloudConfig that `corral node` consumes
    files = render(config, machine_id=...)   # [(path under root, content, mode)], pure
    changes = apply_to_root(root, files)     # writes what differs, says what changed
    apply_users_to_root(root, config.users, today)   # users: as useradd would, under root

See docs/cloud-config.md for the accepted schema and corral's own `corral:` section.
"""

from corral.cloudinit._apply import Change, ChangeKind, OnDisk, apply_to_root, plan
from corral.cloudinit._config import (
    CloudConfig,
    CoreOS,
    CorralSettings,
    EnvSection,
    HealthCheck,
    Unit,
    UnitDropIn,
    Update,
    User,
    WriteFile,
    parse,
)
from corral.cloudinit._render import RenderedFile, render, update_conf
from corral.cloudinit._users import (
    BASE_ACCOUNTS,
    Accounts,
    UserOutcome,
    apply_users,
    apply_users_to_root,
    give_ssh_to_users,
)
from corral.cloudinit._validate import Entry, EntryKind, Report, validate
from corral.cloudinit.errors import CloudConfigError, RenderError, ValidationFailed

__all__ = [
    "BASE_ACCOUNTS",
    "Accounts",
    "Change",
    "ChangeKind",
    "CloudConfig",
    "CloudConfigError",
    "CoreOS",
    "CorralSettings",
    "Entry",
    "EntryKind",
    "EnvSection",
    "HealthCheck",
    "OnDisk",
    "RenderError",
    "RenderedFile",
    "Report",
    "Unit",
    "UnitDropIn",
    "Update",
    "User",
    "UserOutcome",
    "ValidationFailed",
    "WriteFile",
    "apply_to_root",
    "apply_users",
    "apply_users_to_root",
    "give_ssh_to_users",
    "parse",
    "plan",
    "render",
    "update_conf",
    "validate",
]
