"""etcd's command line as `corral etcd` parses it (corral.kv.flags), plus the real CLI process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from corral.kv.flags import FlagError, parse, version_text


def test_all_four_spellings_and_last_wins() -> None:
    for argv in (
        ["-name", "a"],
        ["-name=a"],
        ["--name", "a"],
        ["--name=a"],
        ["--name=x", "-name", "a"],
    ):
        assert parse(argv, {}).config.name == "a", argv


def test_defaults_follow_etcd() -> None:
    cfg = parse([], {}).config
    assert cfg.name == "default"
    assert cfg.data_dir == "default.etcd"
    assert cfg.listen_client_urls == ("http://localhost:2379",)
    assert cfg.initial_cluster == "default=http://localhost:2380"
    assert parse(["--name", "n1"], {}).config.data_dir == "n1.etcd"


def test_environment_and_conflict() -> None:
    cfg = parse(
        [],
        {
            "ETCD_NAME": "envname",
            "ETCD_LISTEN_CLIENT_URLS": "http://127.0.0.1:1,http://127.0.0.1:2",
        },
    ).config
    assert cfg.name == "envname"
    assert cfg.listen_client_urls == ("http://127.0.0.1:1", "http://127.0.0.1:2")
    with pytest.raises(FlagError) as exc:
        parse(["--name", "y"], {"ETCD_NAME": "x"})
    assert exc.value.message == (
        'pkg/flags: conflicting environment variable "ETCD_NAME" is shadowed by corresponding '
        "command-line flag (either unset environment variable or disable flag)"
    )
    assert exc.value.exit_code == 1
    warned = parse([], {"ETCD_BOGUS": "1"}).warnings
    assert warned == ("pkg/flags: unrecognized environment variable ETCD_BOGUS=1",)
    with pytest.raises(FlagError, match='invalid value "abc" for ETCD_SNAPSHOT_COUNT: parse error'):
        parse([], {"ETCD_SNAPSHOT_COUNT": "abc"})


def test_unknown_flag_is_etcds_message_and_exit_2() -> None:
    with pytest.raises(FlagError) as exc:
        parse(["--bogus"], {})
    assert exc.value.message == "flag provided but not defined: -bogus"
    assert (exc.value.exit_code, exc.value.usage) == (2, True)
    with pytest.raises(FlagError, match="flag needs an argument: -name"):
        parse(["--name"], {})
    with pytest.raises(FlagError, match='invalid value "abc" for flag -snapshot-count'):
        parse(["--snapshot-count=abc"], {})


def test_booleans_take_no_separate_value() -> None:
    assert parse(["--enable-v2"], {}).config.values["enable-v2"] is True
    assert parse(["--enable-v2=true"], {}).config.values["enable-v2"] is True
    with pytest.raises(FlagError, match="'true' is not a valid flag"):
        parse(["--debug", "true"], {})
    with pytest.raises(FlagError, match='invalid boolean value "maybe" for -debug'):
        parse(["--debug=maybe"], {})


def test_old_flags_warn_and_go_on() -> None:
    parsed = parse(["--cluster-active-size", "--data-dir", "d"], {})
    assert parsed.warnings == (
        'pkg/flags: flag "-cluster-active-size" is no longer supported - ignoring.',
    )
    assert parsed.config.data_dir == "d"


@pytest.mark.parametrize(
    "argv",
    [
        ["--cert-file=server.crt"],
        ["--client-cert-auth"],
        ["--discovery-srv=example.com"],
        ["--enable-pprof"],
        ["--cors=http://a.example"],
        ["--listen-client-urls=https://127.0.0.1:2379"],
    ],
)
def test_known_unimplemented_flags_are_fatal(argv: list[str]) -> None:
    with pytest.raises(FlagError, match=r"not supported|only http"):
        parse(argv, {})


def test_unimplemented_flags_at_default_are_fine() -> None:
    assert parse(["--cert-file=", "--proxy=off", "--heartbeat-interval=50"], {}).action == "run"


def test_python_etcd_helper_command_line() -> None:
    argv = [
        "-data-dir",
        "/d",
        "-name",
        "test-node",
        "-initial-advertise-peer-urls",
        "http://127.0.0.1:6001",
        "-listen-peer-urls",
        "http://127.0.0.1:6001",
        "-advertise-client-urls",
        "http://127.0.0.1:6002",
        "-listen-client-urls",
        "http://127.0.0.1:6002",
        "-initial-cluster",
        "test-node=http://127.0.0.1:6001",
        "-initial-cluster-state",
        "new",
        "--enable-v2=true",
    ]
    cfg = parse(argv, {}).config
    assert cfg.name == "test-node"
    assert cfg.advertise_client_urls == ("http://127.0.0.1:6002",)
    with pytest.raises(FlagError, match="flag provided but not defined: -ca-file"):
        parse([*argv, "-ca-file=ca.pem"], {})


def test_version_and_help() -> None:
    assert parse(["--version"], {}).action == "version"
    assert parse(["-h"], {}).action == "help"
    assert version_text().startswith("etcd Version: 3.4.23\n")


def test_config_file_replaces_flags_and_env(tmp_path: Path) -> None:
    conf = tmp_path / "etcd.yaml"
    conf.write_text(
        "name: fromfile\ndata-dir: /x\nlisten-client-urls: http://127.0.0.1:7\nenable-v2: true\n"
    )
    parsed = parse(["--config-file", str(conf), "--name", "ignored"], {"ETCD_DATA_DIR": "/y"})
    assert parsed.config.name == "fromfile"
    assert parsed.config.data_dir == "/x"
    assert parsed.config.listen_client_urls == ("http://127.0.0.1:7",)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(FlagError, match="error verifying flags"):
        parse(["--config-file", str(bad)], {})


def _corral(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", "etcd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_cli_version_and_unknown_flag() -> None:
    out = _corral("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("etcd Version: 3.4.23")
    out = _corral("--bogus")
    assert out.returncode == 2
    assert out.stderr.startswith("flag provided but not defined: -bogus\nUsage:")


def test_cli_env_conflict_and_unsupported(tmp_path: Path) -> None:
    out = _corral("--name", "y", env={"ETCD_NAME": "x"})
    assert out.returncode == 1
    assert "conflicting environment variable" in out.stderr
    assert "Traceback" not in out.stderr
    out = _corral("--auto-tls", f"--data-dir={tmp_path}/d")
    assert out.returncode == 1
    assert "--auto-tls is not supported by corral" in out.stderr
