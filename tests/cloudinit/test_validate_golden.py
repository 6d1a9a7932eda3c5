"""Golden tables ported from coreos-cloudinit v1.13.0 `config/validate/*_test.go`.

Each case is (config, expected entries as (kind, message, line)). The per-rule tables run one
rule on the parsed tree, exactly as the Go tests call e.g. `checkStructure(n, &r)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from corral.cloudinit import Entry, EntryKind, ValidationFailed, validate
from corral.cloudinit._validate import (
    Node,
    check_discovery_url,
    check_encoding,
    check_structure,
    check_validity,
    check_write_files,
    check_write_files_under_coreos,
    parse_tree,
)

E, W, INFO = "error", "warning", "info"
Case = tuple[str, list[tuple[str, str, int]]]


def _run(rule: Callable[[Node], Iterator[Entry]], config: str) -> list[tuple[str, str, int]]:
    tree, entries = parse_tree(config)
    assert entries == []
    return [(e.kind.value, e.message, e.line) for e in rule(tree)]


DISCOVERY: list[Case] = [
    ("", []),
    (
        "coreos:\n  etcd:\n    discovery: https://discovery.etcd.io/00000000000000000000000000000000",
        [],
    ),
    ("coreos:\n  etcd:\n    discovery: http://custom.domain/mytoken", []),
    ("coreos:\n  etcd:\n    discovery: disco", [(W, "discovery URL is not valid", 3)]),
]

ENCODING: list[Case] = [
    ("", []),
    ("write_files:\n  - encoding: base64\n    content: aGVsbG8K", []),
    ("write_files:\n  - content: !!binary aGVsbG8K", []),
    (
        "write_files:\n  - encoding: base64\n    content: !!binary aGVsbG8K",
        [(E, 'content cannot be decoded as "base64"', 3)],
    ),
    ("write_files:\n  - encoding: base64\n    content: !!binary YUdWc2JHOEsK", []),
    (
        "write_files:\n  - encoding: gzip\n    content: !!binary H4sIAOC3tVQAA8tIzcnJ5wIAIDA6NgYAAAA=",
        [],
    ),
    (
        "write_files:\n  - encoding: gzip+base64\n    content: H4sIAOC3tVQAA8tIzcnJ5wIAIDA6NgYAAAA=",
        [],
    ),
    (
        "write_files:\n  - encoding: custom\n    content: hello",
        [(E, 'content cannot be decoded as "custom"', 3)],
    ),
]

STRUCTURE: list[Case] = [
    ("", []),
    ("test:", [(W, 'unrecognized key "test"', 1)]),
    ("coreos:\n  etcd:\n    bad:", [(W, 'unrecognized key "bad"', 3)]),
    ("coreos:\n  etcd:\n    discovery: good", []),
    ("coreos:\n  etcd:\n    addr: hi", []),
    (
        "coreos:\n  etcd:\n    proxy: hi",
        [(W, 'deprecated key "proxy" (etcd2 options no longer work for etcd)', 3)],
    ),
    (
        "coreos:\n  units:\n    - hello\n    - goodbye",
        [
            (W, 'incorrect type for "units[0]" (want struct)', 3),
            (W, 'incorrect type for "units[1]" (want struct)', 4),
        ],
    ),
    ("coreos:\n  units:\n    - enable: true", []),
    ("coreos:\n  units:\n    - enable: 4", [(W, 'incorrect type for "enable" (want bool)', 3)]),
    ("coreos:\n  units:\n    - enable: bad", [(W, 'incorrect type for "enable" (want bool)', 3)]),
    (
        "coreos:\n  units:\n    - enable:\n        bad:",
        [(W, 'incorrect type for "enable" (want bool)', 3)],
    ),
    (
        "coreos:\n  units:\n    - enable:\n      - bad",
        [(W, 'incorrect type for "enable" (want bool)', 3)],
    ),
    ("hostname: true", []),
    ("hostname: 4", []),
    ("hostname: host", []),
    ("hostname:\n  name:", [(W, 'incorrect type for "hostname" (want string)', 1)]),
    ("hostname:\n  - name", [(W, 'incorrect type for "hostname" (want string)', 1)]),
    ("coreos: true", [(W, 'incorrect type for "coreos" (want struct)', 1)]),
    ("coreos: 4", [(W, 'incorrect type for "coreos" (want struct)', 1)]),
    ("coreos: hello", [(W, 'incorrect type for "coreos" (want struct)', 1)]),
    ("coreos:\n  etcd:\n    discovery: fire in the disco", []),
    ("coreos:\n  - hello", [(W, 'incorrect type for "coreos" (want struct)', 1)]),
    (
        "ssh_authorized_keys: true",
        [(W, 'incorrect type for "ssh_authorized_keys" (want []string)', 1)],
    ),
    (
        "ssh_authorized_keys: 4",
        [(W, 'incorrect type for "ssh_authorized_keys" (want []string)', 1)],
    ),
    (
        "ssh_authorized_keys: key",
        [(W, 'incorrect type for "ssh_authorized_keys" (want []string)', 1)],
    ),
    (
        "ssh_authorized_keys:\n  key: value",
        [(W, 'incorrect type for "ssh_authorized_keys" (want []string)', 1)],
    ),
    ("ssh_authorized_keys:\n  - key", []),
    (
        "ssh_authorized_keys:\n  - key: value",
        [(W, 'incorrect type for "ssh_authorized_keys[0]" (want string)', 2)],
    ),
    ("users:\n  true", [(W, 'incorrect type for "users" (want []struct)', 1)]),
    ("users:\n  4", [(W, 'incorrect type for "users" (want []struct)', 1)]),
    ("users:\n  bad", [(W, 'incorrect type for "users" (want []struct)', 1)]),
    ("users:\n  bad:", [(W, 'incorrect type for "users" (want []struct)', 1)]),
    ("users:\n  - name: good", []),
    ("users:\n  - true", [(W, 'incorrect type for "users[0]" (want struct)', 2)]),
    ("users:\n  - name: hi\n  - true", [(W, 'incorrect type for "users[1]" (want struct)', 3)]),
    ("users:\n  - 4", [(W, 'incorrect type for "users[0]" (want struct)', 2)]),
    ("users:\n  - bad", [(W, 'incorrect type for "users[0]" (want struct)', 2)]),
    ("users:\n  - - bad", [(W, 'incorrect type for "users[0]" (want struct)', 2)]),
]

VALIDITY: list[Case] = [
    ("hostname: test", []),
    ("coreos:\n  fleet:\n    verbosity: 2", []),
    ("coreos:\n  units:\n    - enable: true", []),
    ("coreos:\n  units:\n    - command: start\n    - name: stop", []),
    ("coreos:\n  units:\n    - command: lol", [(E, "invalid value lol", 3)]),
    ("coreos:\n  update:\n    reboot_strategy: off", []),
    ("coreos:\n  update:\n    reboot_strategy: always", [(E, "invalid value always", 3)]),
    ("unknown: hi", []),
]

WRITE_FILES: list[Case] = [
    ("", []),
    ("write_files:\n  - path: /valid", []),
    ("write_files:\n  - path: /tmp/usr/valid", []),
    (
        "write_files:\n  - path: /usr/invalid",
        [(E, "file cannot be written to a read-only filesystem", 2)],
    ),
    (
        "write-files:\n  - path: /tmp/../usr/invalid",
        [(E, "file cannot be written to a read-only filesystem", 2)],
    ),
]

UNDER_COREOS: list[Case] = [
    ("", []),
    ("write_files:\n  - path: /hi", []),
    (
        "coreos:\n  write_files:\n    - path: /hi",
        [(INFO, "write_files doesn't belong under coreos", 2)],
    ),
    (
        "coreos:\n  write-files:\n    - path: /hyphen",
        [(INFO, "write_files doesn't belong under coreos", 2)],
    ),
]

RULE_TABLES = [
    (check_discovery_url, DISCOVERY),
    (check_encoding, ENCODING),
    (check_structure, STRUCTURE),
    (check_validity, VALIDITY),
    (check_write_files, WRITE_FILES),
    (check_write_files_under_coreos, UNDER_COREOS),
]


@pytest.mark.parametrize(
    ("rule", "config", "expected"),
    [(rule, c, e) for rule, table in RULE_TABLES for c, e in table],
    ids=[f"{rule.__name__}-{i}" for rule, table in RULE_TABLES for i in range(len(table))],
)
def test_rule_tables(
    rule: Callable[[Node], Iterator[Entry]], config: str, expected: list[tuple[str, str, int]]
) -> None:
    assert _run(rule, config) == expected


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("", []),
        ("\t", [(E, "found character that cannot start any token", 1)]),
        ("a:\na", [(E, "could not find expected ':'", 2)]),
        ("#hello\na:\na", [(E, "could not find expected ':'", 3)]),
    ],
)
def test_parse_cloud_config(config: str, expected: list[tuple[str, str, int]]) -> None:
    _tree, entries = parse_tree(config)
    assert [(e.kind.value, e.message, e.line) for e in entries] == expected


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("write_files:\n  - permissions: 0744", []),
        ("write_files:\n  - permissions: '0744'", []),
        ("write_files:\n  - permissions: 744", []),
        ("write_files:\n  - permissions: '744'", []),
        ("coreos:\n  update:\n    reboot-strategy: off", []),
        ("coreos:\n  update:\n    reboot-strategy: false", [(E, "invalid value false", 3)]),
    ],
)
def test_validate_cloud_config_yaml11_traps(
    config: str, expected: list[tuple[str, str, int]]
) -> None:
    # The Go table validates bare YAML; with the header every line moves down by one.
    report = validate("#cloud-config\n" + config)
    assert [(e.kind.value, e.message, e.line - 1) for e in report.entries] == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("", []),
        ("#!/bin/bash\necho hey", []),
        ("{}", [(E, 'must be "#cloud-config" or begin with "#!"', 1)]),
        ('{"ignitionVersion":0}', []),
        ('{"ignitionVersion":1}', []),
        ('{"ignition":{"version":"2.0.0"}}', []),
        ("#cloud-config   \nhostname: a", []),
    ],
)
def test_validate_classifies_user_data(data: str, expected: list[tuple[str, str, int]]) -> None:
    assert [(e.kind.value, e.message, e.line) for e in validate(data).entries] == expected


BENCHMARK_CONFIG = """#cloud-config
hostname: test

coreos:
  etcd:
    name:      node001
    discovery: https://discovery.etcd.io/disco
    addr:      $public_ipv4:4001
    peer-addr: $private_ipv4:7001
  fleet:
    verbosity: 2
    metadata:  "hi"
  update:
    reboot-strategy: off
  units:
    - name:    hi.service
      command: start
      enable:  true
    - name:    bye.service
      command: stop

ssh_authorized_keys:
  - ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC0g+ZTxC7weoIJLUafOgrm+h...
  - ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC0g+ZTxC7weoIJLUafOgrm+h...

users:
  - name: me

write_files:
  - path: /etc/yes
    content: "Hi"

manage_etc_hosts: localhost"""


def test_benchmark_config_is_clean() -> None:
    assert validate(BENCHMARK_CONFIG).entries == ()


def test_yaml_error_is_followed_by_root_type_warning() -> None:
    # After a YAML error the original still ran its rules on the empty tree.
    report = validate("#cloud-config\na:\na")
    assert [str(e) for e in report.entries] == [
        "line 3: error: could not find expected ':'",
        'line 0: warning: incorrect type for "" (want struct)',
    ]


def test_null_in_regex_checked_field_fails_validation() -> None:
    with pytest.raises(ValidationFailed, match="zero Value"):
        validate("#cloud-config\ncoreos:\n  update:\n    reboot-strategy:\n")


def test_report_json_and_text_forms() -> None:
    report = validate("#cloud-config\ncoreos:\n  units:\n    - command: lol\n")
    assert str(report) == "line 4: error: invalid value lol\n"
    assert report.to_json() == '[{"kind": "error", "line": 4, "message": "invalid value lol"}]'
    assert report.entries[0].kind is EntryKind.ERROR
