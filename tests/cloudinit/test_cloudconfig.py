"""Validation beyond the upstream tables, the parsed config, rendering and the CLI."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.cli.cloud_config import cli
from corral.cloudinit import (
    CloudConfigError,
    RenderError,
    ValidationFailed,
    parse,
    render,
    update_conf,
    validate,
)


def _entries(config: str) -> list[str]:
    return [str(e) for e in validate("#cloud-config\n" + config).entries]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        # v1.13.0 still accepts best-effort; etcd2/fleet carry no deprecation yet.
        ("coreos:\n  update:\n    reboot-strategy: best-effort\n", []),
        ("coreos:\n  update:\n    reboot-strategy: etcd-lock\n", []),
        ("coreos:\n  etcd2:\n    proxy: on\n    name: a\n", []),
        ("coreos:\n  etcd2:\n    proxy: maybe\n", ["line 4: error: invalid value maybe"]),
        (
            "coreos:\n  etcd2:\n    ca_file: /x\n",
            [
                'line 4: warning: deprecated key "ca_file" '
                "(ca_file obsoleted by trusted_ca_file and client_cert_auth)"
            ],
        ),
        ("coreos:\n  fleet:\n    metadata: region=us\n    verbosity: 1\n", []),
        ("coreos:\n  locksmith:\n    window_start: Thu 04:00\n    window_length: 1h30m\n", []),
        ("coreos:\n  locksmith:\n    window_start: 04:00\n    window_length: 1h\n", []),
        (
            "coreos:\n  locksmith:\n    window_start: someday 25:00\n",
            ["line 4: error: invalid value someday 25:00"],
        ),
        (
            "coreos:\n  locksmith:\n    window_length: 1 hour\n",
            ["line 4: error: invalid value 1 hour"],
        ),
        (
            "users:\n  - name: core\n    coreos-ssh-import-github: someone\n",
            [
                'line 4: warning: deprecated key "coreos_ssh_import_github" (trying to fetch from a '
                "remote endpoint introduces too many intermittent errors)"
            ],
        ),
        ("coreos:\n  units:\n    - name: a\n      enable: yes\n", []),
        ("manage_etc_hosts: localhost\n", []),
        (
            "write_files:\n  - path: /usr/share/x\n    permissions: 0999\n",
            [
                "line 4: error: invalid value 0999",
                "line 3: error: file cannot be written to a read-only filesystem",
            ],
        ),
        (
            "coreos:\n  oem:\n    id: qemu\n    bogus-key: 1\n",
            ['line 5: warning: unrecognized key "bogus_key"'],
        ),
        # only the first YAML document is read, as go-yaml did
        ("---\nhostname: a\n---\nfoo: [\n", []),
        ("---\nbogus: 1\n", ['line 3: warning: unrecognized key "bogus"']),
        # corral's own section
        (
            "corral:\n  machine_id: 0123456789abcdef0123456789abcdef\n  ports:\n    client: 2379\n",
            [],
        ),
        ("corral:\n  machine_id: xyz\n", ["line 3: error: invalid value xyz"]),
        (
            "corral:\n  ports:\n    client: 70000\n",
            ["line 4: error: invalid port 70000 (want 1-65535)"],
        ),
        (
            "corral:\n  ports:\n    client: high\n",
            ['line 4: warning: incorrect type for "client" (want int)'],
        ),
        (
            "corral:\n  version: 2\n",
            ["line 3: error: unsupported corral settings version 2 (want 1)"],
        ),
        ("corral:\n  colour: blue\n", ['line 3: warning: unrecognized key "colour"']),
        (
            "corral:\n  health_checks:\n    - name: kv\n      command: true\n      timeout: 5s\n",
            [],
        ),
    ],
)
def test_validation_messages(config: str, expected: list[str]) -> None:
    assert _entries(config) == expected


@given(st.sampled_from(["on", "On", "off", "yes", "no", "y", "n", "true", "false"]))
def test_yaml11_bools_in_string_fields_keep_their_text(word: str) -> None:
    # Every YAML 1.1 boolean spelling decodes to its own text in a string field.
    cfg = parse(f"#cloud-config\nhostname: {word}\n")
    assert cfg.hostname == word


@settings(max_examples=40)
@given(st.integers(min_value=0, max_value=0o7777))
def test_any_octal_permission_validates(mode: int) -> None:
    text = f"#cloud-config\nwrite_files:\n  - path: /etc/x\n    permissions: 0{mode:03o}\n"
    assert validate(text).entries == ()
    (f,) = [f for f in render(parse(text), machine_id="a" * 32) if f.path == "etc/x"]
    assert f.mode == mode


FULL = """#cloud-config
hostname: node1
ssh_authorized_keys:
  - ssh-ed25519 AAAA one
users:
  - name: alice
    ssh-authorized-keys: [ssh-ed25519 BBBB alice]
write_files:
  - path: /etc/motd
    content: hello
  - path: /../../escape
    encoding: gzip+base64
    content: {gz}
    permissions: '0600'
manage_etc_hosts: localhost
coreos:
  etcd2:
    name: node1
    proxy: on
    heartbeat-interval: 100
  fleet:
    metadata: role=web
  locksmith:
    group: web
    window-start: Sun 02:00
    window-length: 1h
  update:
    reboot-strategy: etcd-lock
    group: beta
  units:
    - name: hello.service
      command: start
      content: "[Service]\\nExecStart=/bin/true\\n"
      drop-ins:
        - name: 10-env.conf
          content: "[Service]\\nEnvironment=A=1\\n"
    - name: noisy.service
      mask: true
      runtime: true
corral:
  machine_id: 0123456789abcdef0123456789abcdef
  ports: {{client: 2379, peer: 2380}}
  trusted_update_keys: ["-----BEGIN PUBLIC KEY-----\\nAAA\\n-----END PUBLIC KEY-----\\n"]
  locksmith: {{dead_holder_grace: 30s}}
"""


def _full() -> str:
    gz = base64.b64encode(gzip.compress(b"secret\n", mtime=0)).decode()
    return FULL.format(gz=gz)


def test_full_config_validates_parses_and_renders() -> None:
    text = _full()
    assert validate(text).entries == ()
    cfg = parse(text)
    assert cfg.kv_proxy
    assert cfg.coreos.etcd2.get("heartbeat_interval") == 100
    assert cfg.corral.client_port == 2379 and cfg.corral.dead_holder_grace == "30s"
    files = {f.path: f for f in render(cfg, machine_id="f" * 32, update_conf_base="GROUP=stable\n")}
    assert files["etc/hostname"].content == b"node1\n"
    assert files["etc/machine-id"].content == b"0123456789abcdef0123456789abcdef\n"
    assert files["etc/motd"].content == b"hello" and files["etc/motd"].mode == 0o644
    assert files["escape"].content == b"secret\n" and files["escape"].mode == 0o600
    assert files["home/core/.ssh/authorized_keys"].content == b"ssh-ed25519 AAAA one\n"
    assert files["home/alice/.ssh/authorized_keys.d/coreos-cloudinit"].mode == 0o600
    assert files["etc/hosts"].content == b"127.0.0.1 node1\n"
    assert files["etc/coreos/update.conf"].content == b"GROUP=beta\nREBOOT_STRATEGY=etcd-lock\n"
    assert files["run/systemd/system/etcd2.service.d/20-cloudinit.conf"].content == (
        b'[Service]\nEnvironment="ETCD_HEARTBEAT_INTERVAL=100"\n'
        b'Environment="ETCD_NAME=node1"\nEnvironment="ETCD_PROXY=on"\n'
    )
    assert files["run/systemd/system/locksmithd.service.d/20-cloudinit.conf"].content == (
        b'[Service]\nEnvironment="LOCKSMITHD_GROUP=web"\n'
        b'Environment="REBOOT_WINDOW_START=Sun 02:00"\nEnvironment="REBOOT_WINDOW_LENGTH=1h"\n'
    )
    assert (
        b"FLEET_METADATA=role=web"
        in files["run/systemd/system/fleet.service.d/20-cloudinit.conf"].content
    )
    assert files["etc/systemd/system/hello.service"].content == b"[Service]\nExecStart=/bin/true\n"
    assert "etc/systemd/system/hello.service.d/10-env.conf" in files
    assert files["run/systemd/system/noisy.service"].link == "/dev/null"
    assert files["etc/corral/update-keys/00.pem"].content.startswith(b"-----BEGIN PUBLIC KEY")
    node = json.loads(files["etc/corral/node.json"].content)
    assert node["version"] == 1 and node["peer_port"] == 2380
    assert all(not f.path.startswith("/") and ".." not in f.path.split("/") for f in files.values())


def test_update_conf_follows_coreos_cloudinit() -> None:
    cfg = parse(
        "#cloud-config\ncoreos:\n  update:\n    group: master\n    server: http://foo.com\n"
    )
    assert update_conf(cfg, "") == "GROUP=master\nSERVER=http://foo.com\n"
    assert update_conf(cfg, "SERVER=old\nX=1\n") == "SERVER=http://foo.com\nX=1\nGROUP=master\n"
    assert update_conf(parse("#cloud-config\nhostname: a\n"), "X=1\n") is None


def test_render_rejects_what_the_original_rejected() -> None:
    bad = parse("#cloud-config\ncoreos:\n  update:\n    reboot-strategy: always\n")
    with pytest.raises(RenderError, match='invalid value "always" for option "RebootStrategy"'):
        render(bad, machine_id="a" * 32)
    undecodable = parse(
        "#cloud-config\nwrite_files:\n  - path: /x\n    encoding: b64\n    content: '!'\n"
    )
    with pytest.raises(RenderError, match="write_files"):
        render(undecodable, machine_id="a" * 32)


def test_wrong_types_decode_to_zero_values() -> None:
    cfg = parse("#cloud-config\nhostname: [a]\nusers: bad\ncoreos:\n  units:\n    - enable: 4\n")
    assert cfg.hostname == "" and cfg.users == () and cfg.coreos.units[0].enable is False


def test_cli_validate_exit_codes_and_output(tmp_path: Path) -> None:
    runner = CliRunner()
    good = tmp_path / "good.yml"
    good.write_text(_full())
    res = runner.invoke(cli, ["validate", str(good)])
    assert res.exit_code == 0 and res.output == ""

    bad = tmp_path / "bad.yml"
    bad.write_text("#cloud-config\ncoreos:\n  update:\n    reboot-strategy: false\nfoo: 1\n")
    res = runner.invoke(cli, ["validate", str(bad)])
    assert res.exit_code == 1
    assert (
        res.output
        == 'line 4: error: invalid value false\nline 5: warning: unrecognized key "foo"\n'
        or (
            res.output
            == 'line 5: warning: unrecognized key "foo"\nline 4: error: invalid value false\n'
        )
    )
    res = runner.invoke(cli, ["validate", "--json", str(bad)])
    assert res.exit_code == 1 and {e["line"] for e in json.loads(res.output)} == {4, 5}

    gz = tmp_path / "bad.gz"
    gz.write_bytes(gzip.compress(bad.read_bytes()))
    assert runner.invoke(cli, ["validate", str(gz)]).exit_code == 1

    res = runner.invoke(cli, ["validate", str(tmp_path / "missing.yml")])
    assert res.exit_code == 1 and "cannot read" in res.output and "Traceback" not in res.output

    notcc = tmp_path / "x.txt"
    notcc.write_text("hello")
    res = runner.invoke(cli, ["validate", str(notcc)])
    assert (
        res.exit_code == 1
        and res.output == 'line 1: error: must be "#cloud-config" or begin with "#!"\n'
    )

    nulls = tmp_path / "null.yml"
    nulls.write_text("#cloud-config\ncoreos:\n  update:\n    reboot-strategy:\n")
    res = runner.invoke(cli, ["validate", str(nulls)])
    assert res.exit_code == 1 and "Failed while validating user_data" in res.output


def test_cli_render_lists_files(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_text(_full())
    res = CliRunner().invoke(cli, ["render", str(f)])
    assert res.exit_code == 0
    assert "0644 etc/hostname (6 bytes)" in res.output
    assert "run/systemd/system/noisy.service -> /dev/null" in res.output


yamlish = st.text(
    alphabet=st.sampled_from(list("abcoreswitf_-:[]{}!&*|>'\"#%@ \n\t0179.,?~")), max_size=120
)


@settings(max_examples=100)
@given(yamlish)
def test_any_input_gives_a_report_or_a_clean_failure(body: str) -> None:
    # Whatever the bytes, validation answers with entries or ValidationFailed, never a crash,
    # and parsing either works or raises CloudConfigError.
    text = "#cloud-config\n" + body
    try:
        report = validate(text)
    except ValidationFailed:
        return
    assert all(e.line >= 0 for e in report.entries)
    try:
        cfg = parse(text)
    except CloudConfigError:
        assert any(e.kind.value == "error" for e in report.entries)
        return
    try:
        render(cfg, machine_id="a" * 32)
    except RenderError:
        pass


def test_etcd2_section_is_an_environment_corral_etcd_accepts() -> None:
    # The drop-in's ETCD_* variables are what `corral etcd` (like etcd) reads at start.
    from corral.kv.flags import parse as parse_etcd_flags

    cfg = parse(
        "#cloud-config\ncoreos:\n  etcd2:\n    name: n1\n"
        "    initial-cluster: n1=http://127.0.0.1:2380\n"
        "    listen-client-urls: http://127.0.0.1:2379\n"
        "    advertise-client-urls: http://127.0.0.1:2379\n"
        "    heartbeat-interval: 100\n"
    )
    env = cfg.coreos.etcd2.as_env()
    assert env["ETCD_HEARTBEAT_INTERVAL"] == "100"
    parsed = parse_etcd_flags([], env)
    assert parsed.action == "run"
    assert parsed.config.name == "n1"


def test_keys_for_the_same_home_are_merged() -> None:
    cfg = parse(
        "#cloud-config\nssh_authorized_keys: [k1]\n"
        "users:\n  - name: core\n    ssh_authorized_keys: [k2]\n"
    )
    files = [f for f in render(cfg, machine_id="a" * 32) if f.path.startswith("home/core/")]
    assert {f.path: f.content for f in files} == {
        "home/core/.ssh/authorized_keys.d/coreos-cloudinit": b"k1\nk2\n",
        "home/core/.ssh/authorized_keys": b"k1\nk2\n",
    }
