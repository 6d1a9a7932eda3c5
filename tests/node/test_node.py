"""`corral node` end to end: refusal, apply and re-apply, machines running as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.cli.node import cli
from corral.testing.ports import free_ports
from corral.units.api import UnitsClient

from .conftest import Machine, eventually, kv_config


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _diff(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("created ", "changed "))]


def _node(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


# --------------------------------------------------------------------- validation and apply


def test_invalid_config_is_refused_with_line_numbers_and_nothing_written(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "cc.yml",
                 "#cloud-config\nhostname: a\ncoreos:\n  update:\n    reboot-strategy: false\n")
    root = tmp_path / "m"
    code, out = _node("--root", str(root), "--cloud-config", str(cfg))
    assert code == 1
    assert "line 5: error: invalid value false" in out
    assert "nothing was applied" in out
    assert not root.exists()


def test_writing_to_the_host_root_needs_the_flag(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "cc.yml", "#cloud-config\nhostname: a\n")
    code, out = _node("--root", "/", "--cloud-config", str(cfg), "--apply-only")
    assert code == 1
    assert "--allow-host-root" in out


def test_proxy_config_is_planned_as_a_kv_proxy(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "cc.yml", "#cloud-config\ncoreos:\n  etcd2:\n    proxy: on\n")
    code, out = _node("--root", str(tmp_path / "m"), "--cloud-config", str(cfg),
                      "--apply-only")
    assert code == 0, out
    unit = (tmp_path / "m/run/corral/units/etcd2.service").read_text()
    assert "Description=corral KV proxy (etcd2)" in unit
    assert 'Environment="ETCD_PROXY=on"' in unit


def test_unreadable_config_and_missing_root_are_clear_errors(tmp_path: Path) -> None:
    code, out = _node("--root", str(tmp_path / "m"), "--cloud-config", str(tmp_path / "nope"))
    assert code == 1 and "cannot read" in out
    cfg = _write(tmp_path / "cc.yml", "#cloud-config\nhostname: a\n")
    code, out = _node("--cloud-config", str(cfg))
    assert code == 2 and "--root" in out


CONFIG = """#cloud-config
hostname: web1
ssh_authorized_keys: ["ssh-ed25519 AAAAC3Nza core@laptop"]
write_files:
  - path: /etc/motd
    content: {motd}
    permissions: "{mode}"
coreos:
  update:
    reboot_strategy: "off"
  units:
    - name: hello.service
      content: "[Service]\\nExecStart=/bin/true\\n"
"""


def test_apply_then_reapply_reports_the_diff(tmp_path: Path) -> None:
    root = tmp_path / "m"
    cfg = _write(tmp_path / "cc.yml", CONFIG.format(motd="hello", mode="0644"))
    code, out = _node("--root", str(root), "--cloud-config", str(cfg), "--apply-only")
    assert code == 0, out
    for path in ("etc/motd", "etc/hostname", "etc/machine-id", "etc/coreos/update.conf",
                 "home/core/.ssh/authorized_keys", "etc/corral/units/hello.service"):
        assert f"created {path}" in out
        assert (root / path).exists()
    assert (root / "etc/hostname").read_text() == "web1\n"
    machine_id = (root / "etc/machine-id").read_text()

    # A second boot with the same config changes nothing, and keeps the machine id.
    code, out = _node("--root", str(root), "--cloud-config", str(cfg), "--apply-only")
    assert code == 0, out
    assert _diff(out) == []
    assert "file(s) unchanged" in out
    assert (root / "etc/machine-id").read_text() == machine_id

    # An edited config: exactly the edited file is reported.
    _write(cfg, CONFIG.format(motd="bye", mode="0600"))
    code, out = _node("--root", str(root), "--cloud-config", str(cfg), "--apply-only")
    assert code == 0, out
    assert _diff(out) == ["changed etc/motd (content, mode 0644 -> 0600)"]
    assert (root / "etc/motd").read_bytes() == b"bye"
    assert (root / "etc/motd").stat().st_mode & 0o777 == 0o600


USERS = """#cloud-config
ssh_authorized_keys: ["ssh-ed25519 AAAAcore"]
users:
  - name: alice
    passwd: {hash}
    gecos: Alice Liddell
    groups: [sudo, docker]
    ssh_authorized_keys: ["ssh-ed25519 AAAAalice"]
  - name: web
    system: true
    homedir: /srv/web
    shell: /sbin/nologin
  - name: ghost
    groups: [no-such-group]
"""


def test_users_are_created_under_the_root_idempotently(tmp_path: Path) -> None:
    root = tmp_path / "m"
    cfg = _write(tmp_path / "cc.yml", USERS.format(hash="$6$s$h1"))
    before = _host_state()
    code, out = _node("--root", str(root), "--cloud-config", str(cfg), "--apply-only")
    assert code == 0, out
    assert "created user alice (uid 1000, gid 1000, home /home/alice)" in out
    assert "created user web (uid 999, gid 999, home /srv/web)" in out
    assert "user ghost not created: useradd: group 'no-such-group' does not exist" in out
    for path in ("etc/passwd", "etc/group", "etc/shadow", "etc/gshadow", "home/alice",
                 "srv/web", "home/alice/.ssh/authorized_keys"):
        assert f"created {path}" in out
    passwd = (root / "etc/passwd").read_text()
    assert 'alice:x:1000:1000:"Alice Liddell":/home/alice:/bin/bash' in passwd
    assert "web:x:999:999::/srv/web:/sbin/nologin" in passwd
    assert "ghost" not in passwd
    assert "sudo:x:150:core,alice" in (root / "etc/group").read_text()
    assert (root / "etc/shadow").read_text().splitlines()[2].startswith("alice:$6$s$h1:")
    keys = root / "home/alice/.ssh/authorized_keys"
    assert keys.read_text() == "ssh-ed25519 AAAAalice\n"
    if os.geteuid() == 0:  # as update-ssh-keys left them: the user's own
        assert (keys.stat().st_uid, keys.parent.stat().st_uid) == (1000, 1000)
    assert _host_state() == before  # the host's /etc and home are untouched

    # The next boot: nothing to create, and it is said.
    code, out = _node("--root", str(root), "--cloud-config", str(cfg), "--apply-only")
    assert code == 0, out
    assert _diff(out) == []
    assert "user alice exists, ignoring creation-time fields" in out

    # A new password hash: shadow is the one file that changes.
    _write(cfg, USERS.format(hash="$6$s$h2"))
    code, out = _node("--root", str(root), "--cloud-config", str(cfg), "--apply-only")
    assert code == 0, out
    assert _diff(out) == ["changed user alice (password)", "changed etc/shadow (content)"]


# --------------------------------------------------------------------- running machines


def _snapshot(paths: list[Path]) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every entry under `paths` that can be read."""
    out: dict[str, tuple[int, int]] = {}
    for top in paths:
        if not top.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(top, onerror=lambda _e: None):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                out[p] = (st.st_mtime_ns, st.st_size)
    return out


def _host_state() -> tuple[dict[str, tuple[int, int]], list[str]]:
    home = Path.home()
    watched = [Path("/etc"), Path("/var/lib/corral"), Path("/var/log/corral"),
               Path("/var/lib/etcd2"), home / ".ssh", home / ".config/corral"]
    watched += sorted(Path("/run").glob("corral*"))
    # The home dir's own entries (caches other tools fill are left out of the comparison).
    tops = sorted(p.name for p in home.iterdir() if p.name != ".cache") + sorted(
        str(p) for p in Path("/run").glob("corral*"))
    return _snapshot(watched), tops


@pytest.fixture
def hello_unit() -> str:
    return """  fleet:
    metadata: role=web
  units:
    - name: hello.service
      command: start
      content: |
        [Service]
        ExecStart=/bin/sleep 600
"""


def test_one_machine_runs_its_kv_member_and_units_and_writes_only_under_its_root(
    tmp_path: Path, machines: list[Machine], hello_unit: str
) -> None:
    before = _host_state()
    client, peer = free_ports(2)
    root = tmp_path / "m1"
    cfg = _write(tmp_path / "m1.yml",
                 kv_config("m1", client, peer, f"m1=http://127.0.0.1:{peer}", hello_unit))
    m = Machine(root, cfg, client)
    machines.append(m)
    m.start()
    eventually(m.up, 60, "the machine to come up")
    eventually(lambda: m.put("greeting", "hi") is not None, 60, "a KV write")
    doc = m.get("greeting")
    assert doc is not None
    node = doc["node"]
    assert isinstance(node, dict)
    assert (node["key"], node["value"]) == ("/greeting", "hi")
    units = UnitsClient(root, timeout=10)
    for name in ("etcd2.service", "fleet.service", "hello.service"):
        eventually(lambda name=name: units.call("status", unit=name)["active_state"] == "active",
                   30, f"{name} active")
    st = units.call("status", unit="hello.service")
    pid = st["main_pid"]
    assert isinstance(pid, int)
    assert (root / "var/lib/etcd2").is_dir()  # the member's data stays in the root

    def fleet_sees_machine() -> bool:
        out = subprocess.run(
            [sys.executable, "-m", "corral", "fleet", "--endpoint", m.url, "list-machines"],
            capture_output=True, text=True, timeout=60,
        )
        return out.returncode == 0 and "role=web" in out.stdout

    eventually(fleet_sees_machine, 60, "fleetd to register the machine with its metadata")

    assert m.stop() == 0
    # Every process it started is gone.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "stopping" in m.output()
    after = _host_state()
    assert after[1] == before[1], "entries appeared or vanished in the home dir or /run"
    assert after[0] == before[0], "files outside the machine root changed"

    # The next boot re-applies the config: nothing to change.
    code, out = _node("--root", str(root), "--cloud-config", str(cfg), "--apply-only")
    assert code == 0, out
    assert _diff(out) == []
    assert "file(s) unchanged" in out


@pytest.fixture
def three_configs(tmp_path: Path) -> Iterator[list[tuple[Path, Path, int]]]:
    ports = free_ports(6)
    names = ["m0", "m1", "m2"]
    initial = ",".join(f"{n}=http://127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(names))
    out = []
    for i, n in enumerate(names):
        cfg = _write(tmp_path / f"{n}.yml", kv_config(n, ports[2 * i], ports[2 * i + 1], initial))
        out.append((tmp_path / n, cfg, ports[2 * i]))
    yield out


def initial_of(configs: list[tuple[Path, Path, int]]) -> str:
    return configs[0][1].read_text().split("initial_cluster: ")[1].split("\n")[0]


@pytest.fixture
def proxy_config(
    tmp_path: Path, three_configs: list[tuple[Path, Path, int]]
) -> tuple[Path, Path, int]:
    initial = initial_of(three_configs)
    (client,) = free_ports(1)
    text = f"""#cloud-config
hostname: px
coreos:
  etcd2:
    proxy: on
    listen_client_urls: http://127.0.0.1:{client}
    initial_cluster: {initial}
    proxy_refresh_interval: 2000
"""
    return tmp_path / "px", _write(tmp_path / "px.yml", text), client


def test_three_machines_form_a_kv_cluster_from_their_configs(
    three_configs: list[tuple[Path, Path, int]],
    proxy_config: tuple[Path, Path, int],
    machines: list[Machine],
) -> None:
    before = _host_state()
    for root, cfg, port in three_configs:
        m = Machine(root, cfg, port)
        machines.append(m)
        m.start()
    for m in machines:
        eventually(m.up, 90, f"{m.root.name} up")
    # A write on every member, each readable from every member: one cluster, not three.
    for i, m in enumerate(machines):
        eventually(lambda m=m, i=i: m.put(f"from{i}", str(i)) is not None, 90,
                   f"a write on {m.root.name}")
    for m in machines:
        for i in range(len(machines)):
            eventually(lambda m=m, i=i: (m.get(f"from{i}") or {}).get("node") is not None,
                       30, f"from{i} on {m.root.name}")
    # One log: the three writes got three different indexes.
    indexes = set()
    for i in range(len(machines)):
        doc = machines[0].get(f"from{i}")
        assert doc is not None
        node = doc["node"]
        assert isinstance(node, dict)
        indexes.add(node["modifiedIndex"])
    assert len(indexes) == len(machines)

    # A fourth machine whose config says `proxy: on` runs a non-voting proxy of the three.
    root, cfg, client = proxy_config
    proxy = Machine(root, cfg, client)
    machines.append(proxy)
    proxy.start()
    eventually(proxy.up, 90, "the proxy machine up")
    eventually(lambda: proxy.put("via-proxy", "p") is not None, 60, "a write through the proxy")
    doc = machines[0].get("via-proxy?quorum=true")
    assert doc is not None and doc["node"]["value"] == "p"  # type: ignore[index]
    with urllib.request.urlopen(proxy.url + "/v2/members", timeout=10) as resp:
        assert len(json.load(resp)["members"]) == 3  # the cluster's, through the proxy
    data_dir = root / "var/lib/etcd2"
    assert sorted(os.listdir(data_dir)) == ["proxy"]  # no Raft, no data: a cluster file only
    peers = json.loads((data_dir / "proxy/cluster").read_text())["PeerURLs"]
    assert peers == sorted(u.split("=", 1)[1] for u in initial_of(three_configs).split(","))
    for m in machines:
        assert m.stop() == 0
    assert _host_state() == before


def test_warnings_are_said_and_the_config_still_applies(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "cc.yml", "#cloud-config\nhostname: a\nfoo: bar\n")
    root = tmp_path / "m"
    code, out = _node("--root", str(root), "--cloud-config", str(cfg), "--apply-only")
    assert code == 0, out
    assert 'line 3: warning: unrecognized key "foo"' in out
    assert (root / "etc/hostname").read_text() == "a\n"


def test_private_ipv4_is_the_loopback_address(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "cc.yml", "#cloud-config\ncoreos:\n  etcd2:\n"
                 "    advertise_client_urls: http://$private_ipv4:2379\n")
    root = tmp_path / "m"
    code, out = _node("--root", str(root), "--cloud-config", str(cfg), "--apply-only")
    assert code == 0, out
    unit = (root / "run/corral/units/etcd2.service").read_text()
    assert 'Environment="ETCD_ADVERTISE_CLIENT_URLS=http://127.0.0.1:2379"' in unit


def test_unit_commands_run_as_systemctl_would(
    tmp_path: Path, machines: list[Machine]
) -> None:
    cfg = _write(tmp_path / "m.yml", """#cloud-config
coreos:
  units:
    - name: a.service
      command: start
      content: "[Service]\\nExecStart=/bin/sleep 600\\n"
    - name: b.service
      command: try-restart
      content: "[Service]\\nExecStart=/bin/sleep 600\\n"
    - name: c.service
      enable: true
      command: reload-or-restart
      content: "[Service]\\nExecStart=/bin/sleep 600\\n[Install]\\nWantedBy=multi-user.target\\n"
""")
    root = tmp_path / "m"
    m = Machine(root, cfg, 0)
    machines.append(m)
    m.start()
    eventually(m.up, 60, "the machine to come up")
    units = UnitsClient(root, timeout=10)
    out = m.output()
    assert "start a.service" in out
    assert "try-restart b.service: not active, nothing to do" in out
    assert "reload-or-restart c.service" in out
    for name, state in (("a.service", "active"), ("b.service", "inactive"),
                        ("c.service", "active")):
        eventually(lambda name=name, state=state:
                   units.call("status", unit=name)["active_state"] == state, 30,
                   f"{name} {state}")
    assert units.call("status", unit="c.service")["file_state"] == "enabled"
    assert m.stop() == 0
