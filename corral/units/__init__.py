"""systemd units run by corral's own supervisor.

Pure cores: `syntax` (unit-file lines), `names` (names, templates, specifiers), `config`
(typed settings), `machine` (one service's state machine), `deps` (transactions). Shells:
`supervisor` (the runner: processes, notify sockets, timers), `journal`, `api` (control
socket), `daemon`. See docs/units.md.
"""

from corral.units.config import Defaults, ServiceType, UnitConfig, build_unit
from corral.units.errors import UnitError
from corral.units.names import Machine, UnitName
from corral.units.syntax import merge, parse_unit_text

__all__ = [
    "Defaults",
    "Machine",
    "ServiceType",
    "UnitConfig",
    "UnitError",
    "UnitName",
    "build_unit",
    "merge",
    "parse_unit_text",
]
