"""etcd 3.4's command line, so `corral etcd` is a drop-in for `etcd` (pure: argv and env in).

Theory of operation (reference §10; etcd `etcdmain/config.go`, `pkg/flags/flag.go`, Go's
`flag` package):

* Go flag syntax: `-f v`, `-f=v`, `--f v`, `--f=v`. A boolean takes no separate value
  (`--x` or `--x=false`). `--` ends the flags, and so does the first argument that is not a
  flag; leftover arguments are an error ("'x' is not a valid flag"). A repeated flag: the last
  one wins.
* Every flag can come from `ETCD_<FLAG_IN_UPPER_SNAKE>`. A flag given on the command line *and*
  in the environment is fatal (etcd's "conflicting environment variable" message). An
  `ETCD_*` variable that names no flag is a warning.
* Old etcd 0.4 flags are accepted as booleans with a warning and ignored.
* `--config-file` (YAML, keys are flag names) replaces every other flag and variable.
* Flags corral accepts but does not act on (tuning knobs with no meaning for a Python member)
  are listed in `_ACCEPTED`; flags naming features corral lacks (TLS, auth, DNS SRV
  discovery, pprof, separate metrics listeners …) are fatal unless left at their default,
  so nothing is silently ignored.

`parse(argv, env)` returns a `Parsed` (what to do, the config, warnings) or raises
`FlagError` with the message, whether etcd prints its usage, and the exit code.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

import corral

__all__ = [
    "ETCD_VERSION",
    "USAGE",
    "EtcdConfig",
    "FlagError",
    "Parsed",
    "parse",
    "version_text",
]

ETCD_VERSION = "3.4.23"
CLUSTER_VERSION = "3.4.0"

# name -> (kind, default). Kinds: str, bool, uint, int, urls (comma list of URLs).
_FLAGS: dict[str, tuple[str, Any]] = {
    "name": ("str", "default"),
    "data-dir": ("str", ""),
    "wal-dir": ("str", ""),
    "snapshot-count": ("uint", 100000),
    "heartbeat-interval": ("uint", 100),
    "election-timeout": ("uint", 1000),
    "initial-election-tick-advance": ("bool", True),
    "listen-peer-urls": ("urls", "http://localhost:2380"),
    "listen-client-urls": ("urls", "http://localhost:2379"),
    "max-snapshots": ("uint", 5),
    "max-wals": ("uint", 5),
    "quota-backend-bytes": ("int", 0),
    "backend-batch-interval": ("str", ""),
    "backend-batch-limit": ("uint", 0),
    "max-txn-ops": ("uint", 128),
    "max-request-bytes": ("uint", 1572864),
    "max-concurrent-streams": ("uint", 4294967295),
    "grpc-keepalive-min-time": ("str", "5s"),
    "grpc-keepalive-interval": ("str", "2h"),
    "grpc-keepalive-timeout": ("str", "20s"),
    "initial-advertise-peer-urls": ("urls", "http://localhost:2380"),
    "initial-cluster": ("str", ""),
    "initial-cluster-state": ("str", "new"),
    "initial-cluster-token": ("str", "etcd-cluster"),
    "advertise-client-urls": ("urls", "http://localhost:2379"),
    "discovery": ("str", ""),
    "discovery-fallback": ("str", "proxy"),
    "discovery-proxy": ("str", ""),
    "discovery-srv": ("str", ""),
    "discovery-srv-name": ("str", ""),
    "strict-reconfig-check": ("bool", True),
    "pre-vote": ("bool", False),
    "auto-compaction-retention": ("str", "0"),
    "auto-compaction-mode": ("str", "periodic"),
    "enable-v2": ("bool", False),
    "cert-file": ("str", ""),
    "key-file": ("str", ""),
    "client-cert-auth": ("bool", False),
    "client-crl-file": ("str", ""),
    "client-cert-allowed-hostname": ("str", ""),
    "trusted-ca-file": ("str", ""),
    "auto-tls": ("bool", False),
    "peer-cert-file": ("str", ""),
    "peer-key-file": ("str", ""),
    "peer-client-cert-auth": ("bool", False),
    "peer-trusted-ca-file": ("str", ""),
    "peer-cert-allowed-cn": ("str", ""),
    "peer-cert-allowed-hostname": ("str", ""),
    "peer-auto-tls": ("bool", False),
    "peer-crl-file": ("str", ""),
    "cipher-suites": ("str", ""),
    "cors": ("str", "*"),
    "host-whitelist": ("str", "*"),
    "auth-token": ("str", "simple"),
    "bcrypt-cost": ("uint", 10),
    "auth-token-ttl": ("uint", 300),
    "enable-pprof": ("bool", False),
    "metrics": ("str", "basic"),
    "listen-metrics-urls": ("str", ""),
    "logger": ("str", "capnslog"),
    "log-outputs": ("str", "default"),
    "log-level": ("str", "info"),
    "proxy": ("str", "off"),
    "proxy-failure-wait": ("uint", 5000),
    "proxy-refresh-interval": ("uint", 30000),
    "proxy-dial-timeout": ("uint", 1000),
    "proxy-write-timeout": ("uint", 5000),
    "proxy-read-timeout": ("uint", 0),
    "experimental-initial-corrupt-check": ("bool", False),
    "experimental-corrupt-check-time": ("str", "0s"),
    "experimental-enable-v2v3": ("str", ""),
    "experimental-backend-bbolt-freelist-type": ("str", "array"),
    "experimental-enable-lease-checkpoint": ("bool", False),
    "experimental-compaction-batch-limit": ("int", 1000),
    "experimental-peer-skip-client-san-verification": ("bool", False),
    "experimental-watch-progress-notify-interval": ("str", "10m"),
    "experimental-warning-apply-duration": ("str", "100ms"),
    "force-new-cluster": ("bool", False),
    "debug": ("bool", False),
    "log-package-levels": ("str", ""),
    "config-file": ("str", ""),
    "version": ("bool", False),
    "help": ("bool", False),
    "h": ("bool", False),
}

# etcd 0.4 flags: accepted as booleans, warned about, ignored.
_DEPRECATED = frozenset(
    [
        "cluster-active-size",
        "cluster-remove-delay",
        "cluster-sync-interval",
        "config",
        "force",
        "max-result-buffer",
        "max-retry-attempts",
        "peer-heartbeat-interval",
        "peer-election-timeout",
        "retry-interval",
        "snapshot",
        "v",
        "vv",
    ]
)

# Flags whose value corral honours.
_HONOURED = frozenset(
    [
        "name",
        "data-dir",
        "wal-dir",
        "listen-client-urls",
        "advertise-client-urls",
        "listen-peer-urls",
        "initial-advertise-peer-urls",
        "initial-cluster",
        "initial-cluster-state",
        "initial-cluster-token",
        "enable-v2",
        "force-new-cluster",
        "proxy",
        "proxy-failure-wait",
        "proxy-refresh-interval",
        "proxy-dial-timeout",
        "proxy-write-timeout",
        "proxy-read-timeout",
        "discovery",
        "discovery-fallback",
        "discovery-proxy",
        "config-file",
        "version",
        "help",
        "h",
    ]
)
# Flags accepted whatever their value: tuning with no meaning for this member, or logging.
_ACCEPTED = frozenset(
    [
        "snapshot-count",
        "heartbeat-interval",
        "election-timeout",
        "initial-election-tick-advance",
        "max-snapshots",
        "max-wals",
        "quota-backend-bytes",
        "backend-batch-interval",
        "backend-batch-limit",
        "max-txn-ops",
        "max-request-bytes",
        "max-concurrent-streams",
        "grpc-keepalive-min-time",
        "grpc-keepalive-interval",
        "grpc-keepalive-timeout",
        "strict-reconfig-check",
        "pre-vote",
        "auto-compaction-retention",
        "auto-compaction-mode",
        "metrics",
        "logger",
        "log-outputs",
        "log-level",
        "debug",
        "log-package-levels",
        "experimental-initial-corrupt-check",
        "experimental-corrupt-check-time",
        "experimental-backend-bbolt-freelist-type",
        "experimental-enable-lease-checkpoint",
        "experimental-compaction-batch-limit",
        "experimental-watch-progress-notify-interval",
        "experimental-warning-apply-duration",
        "bcrypt-cost",
        "auth-token-ttl",
        "auth-token",
        "host-whitelist",
    ]
)
# Everything else (TLS, discovery-srv, pprof, metrics listeners, v2v3)
# is fatal unless left at its default.

USAGE = """Usage:

  etcd [flags]
    Start an etcd server.

  etcd --version
    Show the version of etcd.

  etcd -h | --help
    Show the help information about etcd.

  etcd --config-file
    Path to the server configuration file. Note that if a configuration file is provided, other command line flags and environment variables will be ignored.

  etcd gateway
    Run the stateless pass-through etcd TCP connection forwarding proxy.

  etcd grpc-proxy
    Run the stateless etcd v3 gRPC L7 reverse proxy.

"""


class FlagError(Exception):
    """A fatal command-line problem: `message`, etcd's `exit_code`, whether usage follows."""

    def __init__(self, message: str, exit_code: int = 1, usage: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.usage = usage


@dataclass(frozen=True)
class EtcdConfig:
    """The member's settings, after flags, environment or config file."""

    name: str = "default"
    data_dir: str = "default.etcd"
    wal_dir: str = ""
    listen_client_urls: tuple[str, ...] = ("http://localhost:2379",)
    advertise_client_urls: tuple[str, ...] = ("http://localhost:2379",)
    listen_peer_urls: tuple[str, ...] = ("http://localhost:2380",)
    initial_advertise_peer_urls: tuple[str, ...] = ("http://localhost:2380",)
    initial_cluster: str = "default=http://localhost:2380"
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Parsed:
    """What `corral etcd` should do: "run", "version" or "help"."""

    action: str
    config: EtcdConfig
    warnings: tuple[str, ...] = ()


def version_text() -> str:
    """`--version`, shaped like etcd's (clients parse `etcd Version: X.Y`)."""
    return (
        f"etcd Version: {ETCD_VERSION}\n"
        f"Git SHA: corral {corral.__version__}\n"
        f"Go Version: python{platform.python_version()}\n"
        f"Go OS/Arch: {sys.platform}/{_arch()}\n"
    )


def _arch() -> str:
    m = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


# etcd's SelectiveStringValue flags: anything else is "invalid value".
_CHOICES = {"proxy": ("off", "readonly", "on"), "discovery-fallback": ("proxy", "exit")}


def _convert(name: str, kind: str, raw: str) -> Any:
    """A value of `kind`; ValueError with Go's reason ("parse error")."""
    if name in _CHOICES and raw not in _CHOICES[name]:
        raise ValueError("invalid value")
    if kind == "bool":
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        raise ValueError("parse error")
    if kind == "uint":
        if not raw.isascii() or not raw.isdigit() or int(raw) >= 1 << 64:
            raise ValueError("parse error")
        return int(raw)
    if kind == "int":
        body = raw[1:] if raw[:1] in "+-" else raw
        if not body.isascii() or not body.isdigit():
            raise ValueError("parse error")
        return int(raw)
    if kind == "urls":
        urls = tuple(u.strip() for u in raw.split(",") if u.strip())
        for u in urls:
            scheme, sep, rest = u.partition("://")
            if not sep or scheme not in ("http", "https", "unix", "unixs") or not rest:
                raise ValueError(f"URL scheme must be http, https, unix, or unixs: {u}")
        return urls
    return raw


def _env_name(flag: str) -> str:
    return "ETCD_" + flag.upper().replace("-", "_")


def _parse_args(argv: Sequence[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """Go's flag loop: set values (raw strings, last wins), deprecated seen, leftovers."""
    values: dict[str, str] = {}
    deprecated: list[str] = []
    i = 0
    args = list(argv)
    while i < len(args):
        arg = args[i]
        if len(arg) < 2 or arg[0] != "-":
            break
        dashes = 2 if arg[1] == "-" else 1
        if dashes == 2 and len(arg) == 2:  # "--" terminates
            i += 1
            break
        body = arg[dashes:]
        if not body or body[0] in "-=":
            raise FlagError(f"bad flag syntax: {arg}", 2, usage=True)
        name, has_value, value = body.partition("=")
        i += 1
        if name in _DEPRECATED:
            deprecated.append(name)
            continue
        spec = _FLAGS.get(name)
        if spec is None:
            raise FlagError(f"flag provided but not defined: -{name}", 2, usage=True)
        kind = spec[0]
        if kind == "bool":
            if not has_value:
                value = "true"
            elif value not in _TRUE and value not in _FALSE:
                raise FlagError(
                    f'invalid boolean value "{value}" for -{name}: parse error', 2, usage=True
                )
        elif not has_value:
            if i >= len(args):
                raise FlagError(f"flag needs an argument: -{name}", 2, usage=True)
            value = args[i]
            i += 1
        values[name] = value
    return values, deprecated, args[i:]


def _from_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as exc:
        raise FlagError(f"etcdmain: error verifying flags, {exc}. See 'etcd --help'.") from None
    except yaml.YAMLError as exc:
        raise FlagError(
            f"etcdmain: error verifying flags, error converting YAML to JSON: {exc}. "
            "See 'etcd --help'."
        ) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise FlagError(f"etcdmain: error verifying flags, {path}: not a YAML mapping.")
    return {str(k): v for k, v in doc.items()}


def parse(argv: Sequence[str], env: Mapping[str, str]) -> Parsed:
    """Parse `corral etcd` arguments like etcd 3.4 parses its own; raises FlagError."""
    raw, deprecated, leftover = _parse_args(argv)
    warnings = [f'pkg/flags: flag "-{d}" is no longer supported - ignoring.' for d in deprecated]
    if raw.get("h") == "true" or raw.get("help") == "true":
        return Parsed("help", EtcdConfig(), tuple(warnings))
    if raw.get("version") == "true":
        return Parsed("version", EtcdConfig(), tuple(warnings))
    if leftover:
        raise FlagError(
            f"etcdmain: error verifying flags, '{leftover[0]}' is not a valid flag. "
            "See 'etcd --help'."
        )
    values: dict[str, Any] = {}
    config_file = raw.get("config-file") or (
        env.get("ETCD_CONFIG_FILE", "") if "config-file" not in raw else ""
    )
    if config_file:
        for key, v in _from_yaml(config_file).items():
            spec = _FLAGS.get(key)
            if spec is None:
                warnings.append(
                    f"etcdmain: config file key {key!r} is not an etcd flag - ignoring."
                )
                continue
            text = (
                ",".join(v)
                if isinstance(v, list)
                else str(v).lower()
                if isinstance(v, bool)
                else str(v)
            )
            try:
                values[key] = _convert(key, spec[0], text)
            except ValueError as exc:
                raise FlagError(
                    f"etcdmain: error verifying flags, invalid value {text!r} for {key} in "
                    f"{config_file}: {exc}. See 'etcd --help'."
                ) from None
    else:
        for name, text in raw.items():
            try:
                values[name] = _convert(name, _FLAGS[name][0], text)
            except ValueError as exc:
                raise FlagError(
                    f'invalid value "{text}" for flag -{name}: {exc}', 2, True
                ) from None
        known_env = {_env_name(n): n for n in _FLAGS}
        for var in sorted(env):
            if not var.startswith("ETCD_"):
                continue
            env_flag = known_env.get(var)
            if env_flag is None:
                warnings.append(f"pkg/flags: unrecognized environment variable {var}={env[var]}")
                continue
            name = env_flag
            if name in raw:
                raise FlagError(
                    f'pkg/flags: conflicting environment variable "{var}" is shadowed by '
                    "corresponding command-line flag (either unset environment variable or "
                    "disable flag)"
                )
            try:
                values[name] = _convert(name, _FLAGS[name][0], env[var])
            except ValueError as exc:
                raise FlagError(
                    f'etcdmain: error verifying flags, invalid value "{env[var]}" for {var}: '
                    f"{exc}. See 'etcd --help'."
                ) from None
    return Parsed("run", _build(values), tuple(warnings))


def _build(values: dict[str, Any]) -> EtcdConfig:
    for name, v in values.items():
        if name in _HONOURED or name in _ACCEPTED:
            continue
        kind, default = _FLAGS[name]
        default_v = _convert(name, kind, default) if isinstance(default, str) else default
        if v != default_v:
            raise FlagError(
                f"etcdmain: error verifying flags, --{name} is not supported by corral. "
                "See 'corral etcd --help'."
            )
    if values.get("discovery") and values.get("initial-cluster"):
        # embed.ErrConflictBootstrapFlags
        raise FlagError(
            "etcdmain: error verifying flags, multiple discovery or bootstrap flags are set. "
            'Choose one of "initial-cluster", "discovery" or "discovery-srv". '
            "See 'etcd --help'."
        )
    state = values.get("initial-cluster-state", "new")
    if state not in ("new", "existing"):
        raise FlagError(
            f'etcdmain: error verifying flags, invalid value "{state}" for '
            "initial-cluster-state (expected new or existing). See 'etcd --help'."
        )
    for urls_flag in ("listen-client-urls", "listen-peer-urls"):
        for u in values.get(urls_flag, ()):
            if not u.startswith("http://"):
                raise FlagError(
                    f"etcdmain: error verifying flags, --{urls_flag} {u}: only http:// URLs are "
                    "supported by corral. See 'corral etcd --help'."
                )
    name = values.get("name", "default")
    peer = values.get("initial-advertise-peer-urls", ("http://localhost:2380",))
    initial = values.get("initial-cluster") or ",".join(f"{name}={u}" for u in peer)
    client = values.get("listen-client-urls", ("http://localhost:2379",))
    return EtcdConfig(
        name=name,
        data_dir=values.get("data-dir") or f"{name}.etcd",
        wal_dir=values.get("wal-dir", ""),
        listen_client_urls=client,
        advertise_client_urls=values.get("advertise-client-urls", ("http://localhost:2379",)),
        listen_peer_urls=values.get("listen-peer-urls", ("http://localhost:2380",)),
        initial_advertise_peer_urls=peer,
        initial_cluster=initial,
        initial_cluster_state=state,
        initial_cluster_token=values.get("initial-cluster-token", "etcd-cluster"),
        values=dict(values),
    )
