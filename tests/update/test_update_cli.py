"""The update commands fail with clear messages, never tracebacks."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from corral.cli.main import cli
from corral.testing.ports import free_port


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in r.output
    return r.exit_code, r.output


def test_status_without_an_agent(tmp_path: Path) -> None:
    code, out = run("update", "status", "--root", str(tmp_path))
    assert code == 1 and "no update agent is running" in out


def test_agent_on_an_unprovisioned_root(tmp_path: Path) -> None:
    code, out = run("update-agent", "run", "--root", str(tmp_path), "--server",
                    f"http://127.0.0.1:{free_port()}/v1/update/")
    assert code == 1 and "cannot read slot table" in out


def test_provision_refuses_an_unsigned_payload(tmp_path: Path, unsigned_110: bytes,
                                               release_key: tuple[bytes, bytes]) -> None:
    (tmp_path / "p").write_bytes(unsigned_110)
    (tmp_path / "k.pem").write_bytes(release_key[1])
    code, out = run("update-agent", "provision", "--root", str(tmp_path / "m"), "--payload",
                    str(tmp_path / "p"), "--trusted-key", str(tmp_path / "k.pem"))
    assert code == 1 and "refused (code 17)" in out


def test_provision_without_keys_refuses(tmp_path: Path, signed_110: bytes) -> None:
    (tmp_path / "p").write_bytes(signed_110)
    code, out = run("update-agent", "provision", "--root", str(tmp_path / "m"), "--payload",
                    str(tmp_path / "p"))
    assert code == 1 and "no release key is trusted" in out


def test_bad_agent_options(tmp_path: Path) -> None:
    code, out = run("update-agent", "run", "--root", str(tmp_path), "--server", "x",
                    "--interval", "0")
    assert code == 1 and "interval must be positive" in out


def test_updatectl_without_a_server() -> None:
    code, out = run("updatectl", "--server", f"http://127.0.0.1:{free_port()}", "app", "list")
    assert code == 1 and "cannot reach" in out


def test_update_server_with_a_bad_data_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    code, out = run("update-server", "--data-dir", str(tmp_path / "file"),
                    "--port", str(free_port()))
    assert code == 1 and "Error" in out
