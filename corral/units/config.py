"""From parsed entries to a typed unit configuration (systemd.unit(5), .service(5), .exec(5),
.kill(5)).

`build_unit(name, parsed, machine, defaults)` interprets every entry in order, which is what
gives repeated keys their meaning: list settings accumulate and an empty assignment resets
them; scalar settings take the last value. A value that cannot be used is skipped with a
line-numbered warning, as systemd does; only problems that make the unit unrunnable (no
ExecStart= for a non-oneshot service, several ExecStart= for a non-oneshot, Restart=always for
a oneshot) raise `BadSettingError`, which the runner shows as load state `bad-setting`.

Environment variables in command lines are expanded only when a process is about to be
spawned (`expand_command`), because EnvironmentFile= is read at that moment.
"""

from __future__ import annotations

import enum
import re
import resource
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from corral.units.errors import BadSettingError, SpecifierError, UnitError
from corral.units.names import Machine, SpecifierContext, UnitName, expand_specifiers
from corral.units.syntax import (
    Diagnostic,
    Entry,
    ParsedUnit,
    parse_bool,
    parse_timespan,
    split_words,
)

__all__ = [
    "Condition",
    "Defaults",
    "ExecCommand",
    "KillMode",
    "RestartPolicy",
    "ServiceConfig",
    "ServiceType",
    "UnitConfig",
    "build_unit",
    "expand_command",
    "parse_env_file",
    "parse_exit_status",
]


class ServiceType(enum.Enum):
    SIMPLE = "simple"
    EXEC = "exec"
    ONESHOT = "oneshot"
    FORKING = "forking"
    NOTIFY = "notify"


class RestartPolicy(enum.Enum):
    NO = "no"
    ALWAYS = "always"
    ON_SUCCESS = "on-success"
    ON_FAILURE = "on-failure"
    ON_ABNORMAL = "on-abnormal"
    ON_ABORT = "on-abort"
    ON_WATCHDOG = "on-watchdog"


class KillMode(enum.Enum):
    CONTROL_GROUP = "control-group"
    MIXED = "mixed"
    PROCESS = "process"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Defaults:
    """Manager-wide defaults (systemd-system.conf(5)); tests shorten them."""

    timeout_start: float | None = 90.0
    timeout_stop: float | None = 90.0
    restart_sec: float = 0.1
    start_limit_interval: float = 10.0
    start_limit_burst: int = 5
    environment: tuple[tuple[str, str], ...] = ()  # DefaultEnvironment=: for every process


@dataclass(frozen=True, slots=True)
class ExecCommand:
    """One command line of an Exec*= setting, with its prefixes decoded."""

    path: str
    args: tuple[str, ...]  # argv[1:], specifiers resolved, variables not yet expanded
    argv0: str | None = None
    ignore_failure: bool = False  # "-"
    no_env_expansion: bool = False  # ":"
    full_privileges: bool = False  # "+"
    ignore_user: bool = False  # "!" / "!!"
    line: int = 0

    def __str__(self) -> str:
        flags = (
            ("-" if self.ignore_failure else "")
            + ("@" if self.argv0 is not None else "")
            + (":" if self.no_env_expansion else "")
            + ("+" if self.full_privileges else "")
            + ("!" if self.ignore_user else "")
        )
        return " ".join([flags + self.path, *self.args])


@dataclass(frozen=True, slots=True)
class Condition:
    """A Condition…=/Assert…= check, evaluated by the shell right before starting."""

    kind: str  # PathExists, PathIsDirectory, FileNotEmpty, Host, Environment
    value: str
    negate: bool = False
    is_assert: bool = False


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    type: ServiceType = ServiceType.SIMPLE
    exec_condition: tuple[ExecCommand, ...] = ()
    exec_start_pre: tuple[ExecCommand, ...] = ()
    exec_start: tuple[ExecCommand, ...] = ()
    exec_start_post: tuple[ExecCommand, ...] = ()
    exec_reload: tuple[ExecCommand, ...] = ()
    exec_stop: tuple[ExecCommand, ...] = ()
    exec_stop_post: tuple[ExecCommand, ...] = ()
    restart: RestartPolicy = RestartPolicy.NO
    restart_sec: float = 0.1
    timeout_start: float | None = 90.0  # None = infinity
    timeout_stop: float | None = 90.0
    remain_after_exit: bool = False
    pid_file: str | None = None
    kill_mode: KillMode = KillMode.CONTROL_GROUP
    kill_signal: int = signal.SIGTERM
    restart_kill_signal: int | None = None
    final_kill_signal: int = signal.SIGKILL
    send_sighup: bool = False
    send_sigkill: bool = True
    success_exit_status: frozenset[int] = frozenset()
    success_signals: frozenset[int] = frozenset()
    restart_prevent_status: frozenset[int] = frozenset()
    restart_prevent_signals: frozenset[int] = frozenset()
    restart_force_status: frozenset[int] = frozenset()
    restart_force_signals: frozenset[int] = frozenset()
    environment: tuple[tuple[str, str], ...] = ()
    environment_files: tuple[tuple[str, bool], ...] = ()  # (path, missing is fine)
    unset_environment: tuple[str, ...] = ()
    pass_environment: tuple[str, ...] = ()
    working_directory: str | None = None
    working_directory_optional: bool = False
    user: str | None = None
    group: str | None = None
    standard_output: str = "journal"
    standard_error: str = "inherit"
    syslog_identifier: str | None = None
    rlimits: tuple[tuple[int, int, int], ...] = ()  # LimitNOFILE=, LimitNPROC=, LimitCORE=
    watchdog_sec: float | None = None
    watchdog_signal: int = signal.SIGABRT


@dataclass(frozen=True, slots=True)
class UnitConfig:
    name: str
    description: str = ""
    documentation: tuple[str, ...] = ()
    wants: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    requisite: tuple[str, ...] = ()
    binds_to: tuple[str, ...] = ()
    part_of: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    before: tuple[str, ...] = ()
    on_failure: tuple[str, ...] = ()
    on_success: tuple[str, ...] = ()
    start_limit_interval: float = 10.0
    start_limit_burst: int = 5
    conditions: tuple[Condition, ...] = ()
    wanted_by: tuple[str, ...] = ()
    required_by: tuple[str, ...] = ()
    alias: tuple[str, ...] = ()
    also: tuple[str, ...] = ()
    has_install: bool = False
    service: ServiceConfig | None = None
    fragment_path: str = ""
    dropin_paths: tuple[str, ...] = ()
    warnings: tuple[Diagnostic, ...] = field(default=())


_EXIT_NAMES = {
    "EXIT_SUCCESS": 0,
    "EXIT_FAILURE": 1,
    "INVALIDARGUMENT": 2,
    "NOTIMPLEMENTED": 3,
    "NOPERMISSION": 4,
    "NOTINSTALLED": 5,
    "NOTCONFIGURED": 6,
    "NOTRUNNING": 7,
    "USAGE": 64,
    "DATAERR": 65,
    "NOINPUT": 66,
    "NOUSER": 67,
    "NOHOST": 68,
    "UNAVAILABLE": 69,
    "SOFTWARE": 70,
    "OSERR": 71,
    "OSFILE": 72,
    "CANTCREAT": 73,
    "IOERR": 74,
    "TEMPFAIL": 75,
    "PROTOCOL": 76,
    "NOPERM": 77,
    "CONFIG": 78,
    "CHDIR": 200,
    "EXEC": 203,
    "GROUP": 216,
    "USER": 217,
}


def parse_signal(word: str) -> int:
    w = word.strip().upper()
    if w.isdigit():
        try:
            return int(signal.Signals(int(w)))
        except ValueError:
            raise BadSettingError(f"unknown signal {word!r}") from None
    if not w.startswith("SIG"):
        w = "SIG" + w
    try:
        return int(signal.Signals[w])
    except KeyError:
        raise BadSettingError(f"unknown signal {word!r}") from None


def parse_exit_status(value: str) -> tuple[set[int], set[int]]:
    """`SuccessExitStatus=`-style list → (exit codes, signals)."""
    codes: set[int] = set()
    signals: set[int] = set()
    for word in value.split():
        if word.isdigit():
            n = int(word)
            if n > 255:
                raise BadSettingError(f"exit status out of range: {word}")
            codes.add(n)
        elif word.upper() in _EXIT_NAMES:
            codes.add(_EXIT_NAMES[word.upper()])
        else:
            signals.add(parse_signal(word))
    return codes, signals


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _parse_exec(value: str, line: int) -> list[ExecCommand]:
    """One Exec*= value → its commands (a lone `;` separates commands)."""
    words = split_words(value)
    commands: list[list[str]] = [[]]
    for w in words:
        if w == ";":
            commands.append([])
        else:
            commands[-1].append(w.replace("\\;", ";"))
    result: list[ExecCommand] = []
    for cmd in commands:
        if not cmd:
            continue
        first = cmd[0]
        flags = ""
        while first and first[0] in "-@:+!":
            flags += first[0]
            first = first[1:]
        rest = cmd[1:]
        argv0: str | None = None
        if "@" in flags:
            if not rest:
                raise BadSettingError("'@' prefix needs an argv[0] word")
            argv0, rest = rest[0], rest[1:]
        if "+" in flags and "!" in flags:
            raise BadSettingError("'+' and '!' prefixes cannot be combined")
        if not first:
            raise BadSettingError("empty executable path")
        if first.startswith("$"):
            raise BadSettingError("the executable may not be a variable")
        if "/" in first and not first.startswith("/"):
            raise BadSettingError(f"executable path must be absolute or a bare name: {first}")
        result.append(
            ExecCommand(
                path=first,
                args=tuple(rest),
                argv0=argv0,
                ignore_failure="-" in flags,
                no_env_expansion=":" in flags,
                full_privileges="+" in flags,
                ignore_user="!" in flags,
                line=line,
            )
        )
    return result


_RLIMITS = {
    "LimitNOFILE": resource.RLIMIT_NOFILE,
    "LimitNPROC": resource.RLIMIT_NPROC,
    "LimitCORE": resource.RLIMIT_CORE,
}
_OUTPUTS = ("journal", "inherit", "null", "kmsg", "journal+console", "syslog", "tty")


def _output(value: str) -> str:
    kind, sep, path = value.partition(":")
    if value in _OUTPUTS or (
        sep and kind in ("file", "append", "truncate") and path.startswith("/")
    ):
        return value
    raise BadSettingError(f"unsupported output {value!r}")


def _parse_rlimit(value: str) -> tuple[int, int]:
    """`N`, `SOFT:HARD` or `infinity` → (soft, hard)."""

    def one(v: str) -> int:
        v = v.strip()
        if v == "infinity":
            return resource.RLIM_INFINITY
        if not v.isdigit():
            raise BadSettingError(f"bad resource limit {value!r}")
        return int(v)

    soft, sep, hard = value.partition(":")
    return (one(soft), one(hard)) if sep else (one(soft), one(soft))


def _list(value: str) -> list[str]:
    return value.split()


def build_unit(
    name: str,
    parsed: ParsedUnit,
    machine: Machine | None = None,
    defaults: Defaults | None = None,
    fragment_path: str = "",
    dropin_paths: tuple[str, ...] = (),
) -> UnitConfig:
    """Interpret a parsed unit. Raises `BadSettingError` when the unit cannot run."""
    unit_name = UnitName.parse(name)
    if unit_name.is_template:
        raise BadSettingError(
            f"{name} is a template; start an instance such as {unit_name.prefix}@1.{unit_name.type}"
        )
    machine = machine or Machine()
    defaults = defaults or Defaults()
    ctx = SpecifierContext(unit_name, machine, fragment_path)
    warnings = list(parsed.warnings)
    u: dict[str, object] = {
        "start_limit_interval": defaults.start_limit_interval,
        "start_limit_burst": defaults.start_limit_burst,
    }
    s: dict[str, object] = {
        "restart_sec": defaults.restart_sec,
        "timeout_start": defaults.timeout_start,
        "timeout_stop": defaults.timeout_stop,
    }
    lists_u: dict[str, list[str]] = {}
    conditions: list[Condition] = []
    execs: dict[str, list[ExecCommand]] = {}
    env: list[tuple[str, str]] = []
    env_files: list[tuple[str, bool]] = []
    status_sets: dict[str, tuple[set[int], set[int]]] = {}
    type_set = False
    timeout_start_set = False
    rlimits: list[tuple[int, int, int]] = []

    def warn(e: Entry, msg: str) -> None:
        warnings.append(Diagnostic(e.path, e.line, f"{e.section}.{e.key}: {msg}"))

    unit_lists = {
        "Documentation": "documentation",
        "Wants": "wants",
        "Requires": "requires",
        "Requisite": "requisite",
        "BindsTo": "binds_to",
        "PartOf": "part_of",
        "Conflicts": "conflicts",
        "After": "after",
        "Before": "before",
        "OnFailure": "on_failure",
        "OnSuccess": "on_success",
    }
    install_lists = {
        "WantedBy": "wanted_by",
        "RequiredBy": "required_by",
        "Alias": "alias",
        "Also": "also",
    }
    exec_keys = {
        "ExecCondition": "exec_condition",
        "ExecStartPre": "exec_start_pre",
        "ExecStart": "exec_start",
        "ExecStartPost": "exec_start_post",
        "ExecReload": "exec_reload",
        "ExecStop": "exec_stop",
        "ExecStopPost": "exec_stop_post",
    }
    cond_kinds = ("PathExists", "PathIsDirectory", "FileNotEmpty", "Host", "Environment")

    scalar_handlers: dict[str, Callable[[str], tuple[str, object]]] = {
        "Type": lambda v: ("type", ServiceType(v)),
        "Restart": lambda v: ("restart", RestartPolicy(v)),
        "RestartSec": lambda v: ("restart_sec", parse_timespan(v) or 0.0),
        "TimeoutStopSec": lambda v: ("timeout_stop", parse_timespan(v) or None),
        "RemainAfterExit": lambda v: ("remain_after_exit", parse_bool(v)),
        "PIDFile": lambda v: ("pid_file", v),
        "KillMode": lambda v: ("kill_mode", KillMode(v)),
        "KillSignal": lambda v: ("kill_signal", parse_signal(v)),
        "RestartKillSignal": lambda v: ("restart_kill_signal", parse_signal(v)),
        "FinalKillSignal": lambda v: ("final_kill_signal", parse_signal(v)),
        "SendSIGHUP": lambda v: ("send_sighup", parse_bool(v)),
        "WatchdogSec": lambda v: ("watchdog_sec", parse_timespan(v) or None),
        "WatchdogSignal": lambda v: ("watchdog_signal", parse_signal(v)),
        "SendSIGKILL": lambda v: ("send_sigkill", parse_bool(v)),
        "User": lambda v: ("user", v or None),
        "Group": lambda v: ("group", v or None),
        "StandardOutput": lambda v: ("standard_output", _output(v)),
        "StandardError": lambda v: ("standard_error", _output(v)),
        "SyslogIdentifier": lambda v: ("syslog_identifier", v),
    }

    for e in parsed.entries:
        try:
            raw = e.value
            if e.section == "Unit":
                if e.key == "Description":
                    u["description"] = expand_specifiers(raw, ctx)
                elif e.key in unit_lists:
                    lst = lists_u.setdefault(unit_lists[e.key], [])
                    if not raw:
                        lst.clear()
                    else:
                        lst.extend(_list(expand_specifiers(raw, ctx)))
                elif e.key == "StartLimitIntervalSec":
                    u["start_limit_interval"] = parse_timespan(raw) or 0.0
                elif e.key == "StartLimitBurst":
                    u["start_limit_burst"] = int(raw)
                elif e.key.startswith(("Condition", "Assert")):
                    is_assert = e.key.startswith("Assert")
                    kind = e.key.removeprefix("Assert" if is_assert else "Condition")
                    if kind not in cond_kinds:
                        warn(e, "unsupported condition, ignoring")
                        continue
                    if not raw:
                        conditions.clear()
                        continue
                    value = expand_specifiers(raw, ctx)
                    negate = value.startswith("!")
                    conditions.append(Condition(kind, value.lstrip("!"), negate, is_assert))
                elif e.key in (
                    "DefaultDependencies",
                    "StopWhenUnneeded",
                    "RefuseManualStart",
                    "RefuseManualStop",
                    "JobTimeoutSec",
                    "StartLimitAction",
                    "IgnoreOnIsolate",
                    "AllowIsolate",
                ):
                    pass  # accepted, not acted upon (see docs/units.md)
                else:
                    warn(e, "unknown setting, ignoring")
            elif e.section == "Install":
                if e.key in install_lists:
                    lst = lists_u.setdefault(install_lists[e.key], [])
                    if not raw:
                        lst.clear()
                    else:
                        lst.extend(_list(expand_specifiers(raw, ctx)))
                elif e.key != "DefaultInstance":
                    warn(e, "unknown setting, ignoring")
            elif e.section == "Service":
                if e.key in exec_keys:
                    lst_e = execs.setdefault(exec_keys[e.key], [])
                    if not raw:
                        lst_e.clear()
                    else:
                        lst_e.extend(_parse_exec(expand_specifiers(raw, ctx), e.line))
                elif e.key == "Environment":
                    if not raw:
                        env.clear()
                        continue
                    for word in split_words(expand_specifiers(raw, ctx)):
                        k, sep, v = word.partition("=")
                        if not sep or not _ENV_NAME.fullmatch(k):
                            warn(e, f"invalid environment assignment {word!r}, ignoring")
                            continue
                        env.append((k, v))
                elif e.key == "EnvironmentFile":
                    if not raw:
                        env_files.clear()
                        continue
                    path = expand_specifiers(raw, ctx)
                    optional = path.startswith("-")
                    path = path.lstrip("-")
                    if not path.startswith("/"):
                        warn(e, f"path is not absolute: {path!r}, ignoring")
                        continue
                    env_files.append((path, optional))
                elif e.key in ("UnsetEnvironment", "PassEnvironment"):
                    target = "unset_environment" if e.key[0] == "U" else "pass_environment"
                    lst = lists_u.setdefault(target, [])
                    if not raw:
                        lst.clear()
                    else:
                        lst.extend(split_words(expand_specifiers(raw, ctx)))
                elif e.key == "WorkingDirectory":
                    wd = expand_specifiers(raw, ctx)
                    s["working_directory_optional"] = wd.startswith("-")
                    wd = wd.lstrip("-")
                    if wd and wd != "~" and not wd.startswith("/"):
                        raise BadSettingError(f"not an absolute path: {wd!r}")
                    s["working_directory"] = wd or None
                elif e.key in (
                    "SuccessExitStatus",
                    "RestartPreventExitStatus",
                    "RestartForceExitStatus",
                ):
                    codes, sigs = status_sets.setdefault(e.key, (set(), set()))
                    if not raw:
                        codes.clear()
                        sigs.clear()
                    else:
                        c2, s2 = parse_exit_status(raw)
                        codes |= c2
                        sigs |= s2
                elif e.key in ("TimeoutSec", "TimeoutStartSec"):
                    span = parse_timespan(raw)
                    s["timeout_start"] = span or None
                    timeout_start_set = True
                    if e.key == "TimeoutSec":
                        s["timeout_stop"] = span or None
                elif e.key in scalar_handlers:
                    attr, val = scalar_handlers[e.key](expand_specifiers(raw, ctx))
                    s[attr] = val
                    type_set = type_set or attr == "type"
                elif e.key in _RLIMITS:
                    limits = [x for x in rlimits if x[0] != _RLIMITS[e.key]]
                    soft, hard = _parse_rlimit(raw)
                    rlimits[:] = [*limits, (_RLIMITS[e.key], soft, hard)]
                elif e.key in (
                    "NotifyAccess",
                    "GuessMainPID",
                    "StandardInput",
                    "Slice",
                    "Delegate",
                    "PrivateTmp",
                    "TimeoutStartFailureMode",
                    "ExitType",
                ):
                    pass  # accepted, not acted upon (see docs/units.md)
                else:
                    warn(e, "unknown setting, ignoring")
        except SpecifierError as err:
            warn(e, f"{err}, ignoring")
        except (BadSettingError, ValueError) as err:
            warn(e, f"invalid value {e.value!r} ({err}), ignoring")
        except UnitError as err:
            warn(e, f"{err}, ignoring")

    for key, (codes, sigs) in status_sets.items():
        base = {
            "SuccessExitStatus": "success",
            "RestartPreventExitStatus": "restart_prevent",
            "RestartForceExitStatus": "restart_force",
        }[key]
        s[f"{base}_status" if base != "success" else "success_exit_status"] = frozenset(codes)
        s[f"{base}_signals"] = frozenset(sigs)
    for attr, cmds in execs.items():
        s[attr] = tuple(cmds)
    s["environment"] = tuple(env)
    s["rlimits"] = tuple(rlimits)
    s["environment_files"] = tuple(env_files)
    for attr in ("unset_environment", "pass_environment"):
        if attr in lists_u:
            s[attr] = tuple(lists_u.pop(attr))

    service: ServiceConfig | None = None
    if unit_name.type == "service" or parsed.has_section("Service"):
        if not type_set:
            s["type"] = ServiceType.SIMPLE if s.get("exec_start") else ServiceType.ONESHOT
        service = ServiceConfig(**s)  # type: ignore[arg-type]
        service = _check_service(service, name, timeout_start_set, parsed)
    return UnitConfig(
        name=name,
        service=service,
        conditions=tuple(conditions),
        has_install=parsed.has_section("Install"),
        fragment_path=fragment_path,
        dropin_paths=dropin_paths,
        warnings=tuple(warnings),
        **{k: tuple(v) for k, v in lists_u.items()},  # type: ignore[arg-type]
        **u,  # type: ignore[arg-type]
    )


def _check_service(
    svc: ServiceConfig, name: str, timeout_start_set: bool, parsed: ParsedUnit
) -> ServiceConfig:
    def line_of(key: str) -> int:
        found = parsed.get("Service", key)
        return found[-1].line if found else 0

    path = parsed.entries[0].path if parsed.entries else ""
    if svc.type is ServiceType.ONESHOT:
        if svc.restart in (RestartPolicy.ALWAYS, RestartPolicy.ON_SUCCESS):
            raise BadSettingError(
                f"{name}: Restart={svc.restart.value} is not allowed for Type=oneshot",
                path,
                line_of("Restart"),
            )
        if not timeout_start_set:
            svc = replace(svc, timeout_start=None)
    else:
        if not svc.exec_start:
            raise BadSettingError(
                f"{name}: service has no ExecStart= setting (and is not Type=oneshot)", path
            )
        if len(svc.exec_start) > 1:
            raise BadSettingError(
                f"{name}: more than one ExecStart= is only allowed for Type=oneshot",
                path,
                line_of("ExecStart"),
            )
    return svc


def expand_command(cmd: ExecCommand, env: Mapping[str, str]) -> list[str]:
    """argv for a command: `${X}` → one word, a whole-word `$X` → split words, `$$` → `$`."""
    argv0 = cmd.argv0 if cmd.argv0 is not None else cmd.path
    if cmd.no_env_expansion:
        return [argv0, *cmd.args]
    out = [argv0]
    for word in cmd.args:
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if m:
            value = env.get(m.group(1), "")
            try:
                out.extend(split_words(value))
            except BadSettingError:
                out.extend(value.split())
            continue
        out.append(_expand_braced(word, env))
    return out


def _expand_braced(word: str, env: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), "")

    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, word)


def parse_env_file(text: str) -> list[tuple[str, str]]:
    """EnvironmentFile= contents → assignments (systemd's shell-like subset)."""
    out: list[tuple[str, str]] = []
    logical: list[str] = []
    buf = ""
    for line in text.splitlines():
        if buf == "" and line.lstrip()[:1] in ("#", ";"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            buf += line[:-1]
            continue
        logical.append(buf + line)
        buf = ""
    if buf:
        logical.append(buf)
    for line in logical:
        line = line.strip()
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _ENV_NAME.fullmatch(key):
            continue
        out.append((key, _env_value(value.strip())))
    return out


def _env_value(v: str) -> str:
    res: list[str] = []
    i = 0
    while i < len(v):
        c = v[i]
        if c == "'":
            end = v.find("'", i + 1)
            end = len(v) if end < 0 else end
            res.append(v[i + 1 : end])
            i = end + 1
        elif c == '"':
            i += 1
            while i < len(v) and v[i] != '"':
                if v[i] == "\\" and i + 1 < len(v) and v[i + 1] in '"\\`$\n':
                    res.append(v[i + 1])
                    i += 2
                    continue
                res.append(v[i])
                i += 1
            i += 1
        elif c == "\\" and i + 1 < len(v):
            res.append(v[i + 1])
            i += 2
        else:
            res.append(c)
            i += 1
    return "".join(res)
