"""The cloud-config schema: coreos-cloudinit v1.13.0's `config` structs, plus corral's key.

Each struct is a table of fields in the Go declaration order (rendered drop-ins list their
`Environment=` lines in that order), with the Go kind, the `valid` regex, the `deprecated`
note and the `env` name from the struct tags of coreos-cloudinit v1.13.0 `config/*.go`.
The `corral:` section is corral's own and is documented in docs/cloud-config.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["CLOUD_CONFIG", "Field", "Kind", "SliceOf", "Struct", "TypeSpec"]


class Kind(Enum):
    """Go reflect kinds the schema and YAML values can have."""

    STRING = "string"
    INT = "int"
    FLOAT = "float64"
    BOOL = "bool"
    STRUCT = "struct"
    SLICE = "slice"
    MAP = "map"  # only YAML values
    INVALID = "invalid"  # a YAML null / missing value


@dataclass(frozen=True, slots=True)
class SliceOf:
    elem: TypeSpec


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: TypeSpec
    env: str = ""
    valid: str = ""
    deprecated: str = ""


@dataclass(frozen=True, slots=True)
class Struct:
    name: str
    fields: tuple[Field, ...]

    def field(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


TypeSpec = Kind | SliceOf | Struct


def kind_of(spec: TypeSpec) -> Kind:
    if isinstance(spec, Struct):
        return Kind.STRUCT
    if isinstance(spec, SliceOf):
        return Kind.SLICE
    return spec


def human_type(spec: TypeSpec) -> str:
    """Go's HumanType(): `struct`, `[]string`, `[]struct`, `bool`, …"""
    if isinstance(spec, SliceOf):
        return "[]" + human_type(spec.elem)
    return kind_of(spec).value


S, N, F, B = Kind.STRING, Kind.INT, Kind.FLOAT, Kind.BOOL
_E2 = "etcd2 options no longer work for etcd"
_REMOTE = "trying to fetch from a remote endpoint introduces too many intermittent errors"
_DURATION = r"^[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+$"


def _env(
    prefix: str, *specs: tuple[str, TypeSpec, str] | tuple[str, TypeSpec, str, str]
) -> tuple[Field, ...]:
    out = []
    for spec in specs:
        name, typ, env = spec[0], spec[1], spec[2]
        deprecated = spec[3] if len(spec) == 4 else ""
        out.append(Field(name, typ, env=prefix + env, deprecated=deprecated))
    return tuple(out)


ETCD = Struct(
    "Etcd",
    _env(
        "ETCD_",
        ("addr", S, "ADDR"),
        ("advertise_client_urls", S, "ADVERTISE_CLIENT_URLS", _E2),
        ("bind_addr", S, "BIND_ADDR"),
        ("ca_file", S, "CA_FILE"),
        ("cert_file", S, "CERT_FILE"),
        ("cluster_active_size", N, "CLUSTER_ACTIVE_SIZE"),
        ("cluster_remove_delay", F, "CLUSTER_REMOVE_DELAY"),
        ("cluster_sync_interval", F, "CLUSTER_SYNC_INTERVAL"),
        ("cors", S, "CORS"),
        ("data_dir", S, "DATA_DIR"),
        ("discovery", S, "DISCOVERY"),
        ("discovery_fallback", S, "DISCOVERY_FALLBACK", _E2),
        ("discovery_srv", S, "DISCOVERY_SRV", _E2),
        ("discovery_proxy", S, "DISCOVERY_PROXY", _E2),
        ("election_timeout", N, "ELECTION_TIMEOUT", _E2),
        ("force_new_cluster", B, "FORCE_NEW_CLUSTER", _E2),
        ("graphite_host", S, "GRAPHITE_HOST"),
        ("heartbeat_interval", N, "HEARTBEAT_INTERVAL", _E2),
        ("http_read_timeout", F, "HTTP_READ_TIMEOUT"),
        ("http_write_timeout", F, "HTTP_WRITE_TIMEOUT"),
        ("initial_advertise_peer_urls", S, "INITIAL_ADVERTISE_PEER_URLS", _E2),
        ("initial_cluster", S, "INITIAL_CLUSTER", _E2),
        ("initial_cluster_state", S, "INITIAL_CLUSTER_STATE", _E2),
        ("initial_cluster_token", S, "INITIAL_CLUSTER_TOKEN", _E2),
        ("key_file", S, "KEY_FILE"),
        ("listen_client_urls", S, "LISTEN_CLIENT_URLS", _E2),
        ("listen_peer_urls", S, "LISTEN_PEER_URLS", _E2),
        ("max_result_buffer", N, "MAX_RESULT_BUFFER"),
        ("max_retry_attempts", N, "MAX_RETRY_ATTEMPTS"),
        ("max_snapshots", N, "MAX_SNAPSHOTS", _E2),
        ("max_wals", N, "MAX_WALS", _E2),
        ("name", S, "NAME"),
        ("peer_addr", S, "PEER_ADDR"),
        ("peer_bind_addr", S, "PEER_BIND_ADDR"),
        ("peer_ca_file", S, "PEER_CA_FILE"),
        ("peer_cert_file", S, "PEER_CERT_FILE"),
        ("peer_election_timeout", N, "PEER_ELECTION_TIMEOUT"),
        ("peer_heartbeat_interval", N, "PEER_HEARTBEAT_INTERVAL"),
        ("peer_key_file", S, "PEER_KEY_FILE"),
        ("peers", S, "PEERS"),
        ("peers_file", S, "PEERS_FILE"),
        ("proxy", S, "PROXY", _E2),
        ("retry_interval", F, "RETRY_INTERVAL"),
        ("snapshot", B, "SNAPSHOT"),
        ("snapshot_count", N, "SNAPSHOTCOUNT"),
        ("trace", S, "TRACE"),
        ("verbose", B, "VERBOSE"),
        ("very_verbose", B, "VERY_VERBOSE"),
        ("very_very_verbose", B, "VERY_VERY_VERBOSE"),
    ),
)

_etcd2_fields = list(
    _env(
        "ETCD_",
        ("advertise_client_urls", S, "ADVERTISE_CLIENT_URLS"),
        ("ca_file", S, "CA_FILE", "ca_file obsoleted by trusted_ca_file and client_cert_auth"),
        ("cert_file", S, "CERT_FILE"),
        ("client_cert_auth", B, "CLIENT_CERT_AUTH"),
        ("cors", S, "CORS"),
        ("data_dir", S, "DATA_DIR"),
        ("debug", B, "DEBUG"),
        ("discovery", S, "DISCOVERY"),
        ("discovery_fallback", S, "DISCOVERY_FALLBACK"),
        ("discovery_srv", S, "DISCOVERY_SRV"),
        ("discovery_proxy", S, "DISCOVERY_PROXY"),
        ("election_timeout", N, "ELECTION_TIMEOUT"),
        ("enable_pprof", B, "ENABLE_PPROF"),
        ("force_new_cluster", B, "FORCE_NEW_CLUSTER"),
        ("heartbeat_interval", N, "HEARTBEAT_INTERVAL"),
        ("initial_advertise_peer_urls", S, "INITIAL_ADVERTISE_PEER_URLS"),
        ("initial_cluster", S, "INITIAL_CLUSTER"),
        ("initial_cluster_state", S, "INITIAL_CLUSTER_STATE"),
        ("initial_cluster_token", S, "INITIAL_CLUSTER_TOKEN"),
        ("key_file", S, "KEY_FILE"),
        ("listen_client_urls", S, "LISTEN_CLIENT_URLS"),
        ("listen_peer_urls", S, "LISTEN_PEER_URLS"),
        ("log_package_levels", S, "LOG_PACKAGE_LEVELS"),
        ("max_snapshots", N, "MAX_SNAPSHOTS"),
        ("max_wals", N, "MAX_WALS"),
        ("name", S, "NAME"),
        (
            "peer_ca_file",
            S,
            "PEER_CA_FILE",
            "peer_ca_file obsoleted peer_trusted_ca_file and peer_client_cert_auth",
        ),
        ("peer_cert_file", S, "PEER_CERT_FILE"),
        ("peer_key_file", S, "PEER_KEY_FILE"),
        ("peer_client_cert_auth", B, "PEER_CLIENT_CERT_AUTH"),
        ("peer_trusted_ca_file", S, "PEER_TRUSTED_CA_FILE"),
        ("proxy", S, "PROXY"),
        ("proxy_dial_timeout", N, "PROXY_DIAL_TIMEOUT"),
        ("proxy_failure_wait", N, "PROXY_FAILURE_WAIT"),
        ("proxy_read_timeout", N, "PROXY_READ_TIMEOUT"),
        ("proxy_refresh_interval", N, "PROXY_REFRESH_INTERVAL"),
        ("proxy_write_timeout", N, "PROXY_WRITE_TIMEOUT"),
        ("snapshot_count", N, "SNAPSHOT_COUNT"),
        ("strict_reconfig_check", B, "STRICT_RECONFIG_CHECK"),
        ("trusted_ca_file", S, "TRUSTED_CA_FILE"),
        ("wal_dir", S, "WAL_DIR"),
    )
)
_etcd2_fields = [
    Field(f.name, f.type, env=f.env, valid=r"^(on|off|readonly)$", deprecated=f.deprecated)
    if f.name == "proxy"
    else f
    for f in _etcd2_fields
]
ETCD2 = Struct("Etcd2", tuple(_etcd2_fields))

FLEET = Struct(
    "Fleet",
    _env(
        "FLEET_",
        ("agent_ttl", S, "AGENT_TTL"),
        ("authorized_keys_file", S, "AUTHORIZED_KEYS_FILE"),
        ("disable_engine", B, "DISABLE_ENGINE"),
        ("engine_reconcile_interval", F, "ENGINE_RECONCILE_INTERVAL"),
        ("etcd_cafile", S, "ETCD_CAFILE"),
        ("etcd_certfile", S, "ETCD_CERTFILE"),
        ("etcd_keyfile", S, "ETCD_KEYFILE"),
        ("etcd_key_prefix", S, "ETCD_KEY_PREFIX"),
        ("etcd_request_timeout", F, "ETCD_REQUEST_TIMEOUT"),
        ("etcd_servers", S, "ETCD_SERVERS"),
        ("etcd_username", S, "ETCD_USERNAME"),
        ("etcd_password", S, "ETCD_PASSWORD"),
        ("metadata", S, "METADATA"),
        ("public_ip", S, "PUBLIC_IP"),
        ("token_limit", N, "TOKEN_LIMIT"),
        ("verbosity", N, "VERBOSITY"),
        ("verify_units", B, "VERIFY_UNITS"),
    ),
)

FLANNEL = Struct(
    "Flannel",
    _env(
        "FLANNELD_",
        ("etcd_endpoints", S, "ETCD_ENDPOINTS"),
        ("etcd_cafile", S, "ETCD_CAFILE"),
        ("etcd_certfile", S, "ETCD_CERTFILE"),
        ("etcd_keyfile", S, "ETCD_KEYFILE"),
        ("etcd_prefix", S, "ETCD_PREFIX"),
        ("etcd_username", S, "ETCD_USERNAME"),
        ("etcd_password", S, "ETCD_PASSWORD"),
        ("ip_masq", S, "IP_MASQ"),
        ("subnet_file", S, "SUBNET_FILE"),
        ("interface", S, "IFACE"),
        ("public_ip", S, "PUBLIC_IP"),
    ),
)

LOCKSMITH = Struct(
    "Locksmith",
    (
        Field("endpoint", S, env="LOCKSMITHD_ENDPOINT"),
        Field("etcd_cafile", S, env="LOCKSMITHD_ETCD_CAFILE"),
        Field("etcd_certfile", S, env="LOCKSMITHD_ETCD_CERTFILE"),
        Field("etcd_keyfile", S, env="LOCKSMITHD_ETCD_KEYFILE"),
        Field("etcd_username", S, env="LOCKSMITHD_ETCD_USERNAME"),
        Field("etcd_password", S, env="LOCKSMITHD_ETCD_PASSWORD"),
        Field("group", S, env="LOCKSMITHD_GROUP"),
        Field(
            "window_start",
            S,
            env="REBOOT_WINDOW_START",
            valid=r"^((?i:sun|mon|tue|wed|thu|fri|sat|sun) )?0*([0-9]|1[0-9]|2[0-3]):0*([0-9]|[1-5][0-9])$",
        ),
        Field("window_length", S, env="REBOOT_WINDOW_LENGTH", valid=_DURATION),
    ),
)

UPDATE = Struct(
    "Update",
    (
        # v1.13.0 still lists best-effort (locksmith removed it in v0.6.0; corral warns on it).
        Field(
            "reboot_strategy",
            S,
            env="REBOOT_STRATEGY",
            valid=r"^(best-effort|etcd-lock|reboot|off)$",
        ),
        Field("group", S, env="GROUP"),
        Field("server", S, env="SERVER"),
    ),
)

OEM = Struct(
    "OEM", tuple(Field(n, S) for n in ("id", "name", "version_id", "home_url", "bug_report_url"))
)

UNIT_DROP_IN = Struct("UnitDropIn", (Field("name", S), Field("content", S)))
UNIT = Struct(
    "Unit",
    (
        Field("name", S),
        Field("mask", B),
        Field("enable", B),
        Field("runtime", B),
        Field("content", S),
        Field(
            "command",
            S,
            valid=r"^(start|stop|restart|reload|try-restart|reload-or-restart"
            r"|reload-or-try-restart)$",
        ),
        Field("drop_ins", SliceOf(UNIT_DROP_IN)),
    ),
)

USER = Struct(
    "User",
    (
        Field("name", S),
        Field("passwd", S),
        Field("ssh_authorized_keys", SliceOf(S)),
        Field("coreos_ssh_import_github", S, deprecated=_REMOTE),
        Field("coreos_ssh_import_github_users", SliceOf(S), deprecated=_REMOTE),
        Field("coreos_ssh_import_url", S, deprecated=_REMOTE),
        Field("gecos", S),
        Field("homedir", S),
        Field("no_create_home", B),
        Field("primary_group", S),
        Field("groups", SliceOf(S)),
        Field("no_user_group", B),
        Field("system", B),
        Field("no_log_init", B),
        Field("shell", S),
    ),
)

FILE = Struct(
    "File",
    (
        Field(
            "encoding", S, valid=r"^(base64|b64|gz|gzip|gz\+base64|gzip\+base64|gz\+b64|gzip\+b64)$"
        ),
        Field("content", S),
        Field("owner", S),
        Field("path", S),
        Field("permissions", S, valid=r"^0?[0-7]{3,4}$"),
    ),
)

COREOS = Struct(
    "CoreOS",
    (
        Field("etcd", ETCD),
        Field("etcd2", ETCD2),
        Field("flannel", FLANNEL),
        Field("fleet", FLEET),
        Field("locksmith", LOCKSMITH),
        Field("oem", OEM),
        Field("update", UPDATE),
        Field("units", SliceOf(UNIT)),
    ),
)

# corral's own settings (not in coreos-cloudinit): validated with the same rules.
CORRAL_PORTS = Struct(
    "CorralPorts",
    (
        Field("client", N),
        Field("peer", N),
        Field("fleetlock", N),
        Field("update", N),
    ),
)
CORRAL_HEALTH_CHECK = Struct(
    "CorralHealthCheck",
    (
        Field("name", S),
        Field("command", S),
        Field("timeout", S, valid=_DURATION),
    ),
)
CORRAL_LOCKSMITH = Struct(
    "CorralLocksmith",
    (
        Field("heartbeat_ttl", S, valid=_DURATION),
        Field("dead_holder_grace", S, valid=_DURATION),
    ),
)
CORRAL = Struct(
    "Corral",
    (
        Field("version", N),
        Field("machine_id", S, valid=r"^[0-9a-f]{32}$"),
        Field("root", S),
        Field("ports", CORRAL_PORTS),
        Field("trusted_update_keys", SliceOf(S)),
        Field("health_checks", SliceOf(CORRAL_HEALTH_CHECK)),
        Field("locksmith", CORRAL_LOCKSMITH),
    ),
)

CLOUD_CONFIG = Struct(
    "CloudConfig",
    (
        Field("ssh_authorized_keys", SliceOf(S)),
        Field("coreos", COREOS),
        Field("write_files", SliceOf(FILE)),
        Field("hostname", S),
        Field("users", SliceOf(USER)),
        Field("manage_etc_hosts", S),
        Field("corral", CORRAL),
    ),
)
