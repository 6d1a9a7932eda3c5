"""`corral kv` behaviour that needs no etcdctl comparison: bad input, formats, backup."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from corral.cli.kv import cli, format_result, parse_duration
from corral.client import KeyResult, Node
from corral.testing.ports import free_port


def _kv(*argv: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(argv), env={"ETCDCTL_ENDPOINTS": None})
    return r.exit_code, r.stdout, r.stderr


def test_bad_input_gives_a_clear_error_and_no_traceback() -> None:
    code, _, err = _kv("--timeout", "soon", "get", "/x")
    assert code != 0 and "invalid duration 'soon'" in err and "Traceback" not in err
    code, _, err = _kv("--endpoints", "ftp://h:1", "get", "/x")
    assert code == 1 and "invalid endpoint" in err
    code, _, err = _kv("set", "--ttl", "abc", "/x", "y")
    assert code == 1 and "abc" in err
    code, _, err = _kv("nosuchverb")
    assert code == 3 and err == "No help topic for 'nosuchverb'\n"


def test_backup_of_a_missing_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    code, out, err = _kv("backup", "--data-dir", str(tmp_path / "d"), "--backup-dir", str(tmp_path / "b"))
    assert code == 1 and out == "" and err.startswith("Error:  data dir ") and "does not exist" in err
    assert not (tmp_path / "b").exists()


def test_endpoint_from_environment_and_unreachable_exit_codes() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    r = CliRunner().invoke(cli, ["get", "/k"], env={"ETCDCTL_ENDPOINTS": dead})
    assert r.exit_code == 2 and dead.removeprefix("http://") in r.stderr
    r = CliRunner().invoke(cli, ["--no-sync", "get", "/k"], env={"ETCDCTL_ENDPOINTS": dead})
    assert r.exit_code == 4


def test_formats_of_a_delete_and_of_json_escaping() -> None:
    deleted = KeyResult("delete", Node("/k", modified_index=9, created_index=4),
                        Node("/k", "old", modified_index=8, created_index=4), etcd_index=9)
    assert format_result(deleted, "simple") == ("PrevNode.Value: old\n", "")
    out, _ = format_result(deleted, "extended")
    assert out.splitlines() == ["Key: /k", "Created-Index: 4", "Modified-Index: 9",
                                "PrevNode.Value: old", "TTL: 0", "Index: 9"]
    got = KeyResult("get", Node("/k", "<a&b>", created_index=1, modified_index=1))
    assert format_result(got, "json")[0] == (
        '{"action":"get","node":{"key":"/k","value":"\\u003ca\\u0026b\\u003e","nodes":null,'
        '"createdIndex":1,"modifiedIndex":1},"prevNode":null}\n')
    assert format_result(got, "yaml") == ("", "Unsupported output format: yaml\n")


def test_go_durations() -> None:
    assert parse_duration("2s") == 2.0
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("250ms") == 0.25
    assert parse_duration("3") == 3.0
