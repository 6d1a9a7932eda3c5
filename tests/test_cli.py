"""The `corral` command itself: entry points and subcommand discovery."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

import corral
from corral.cli.main import cli


def test_version_flag() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert corral.__version__ in result.output


def test_python_dash_m_runs_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "corral", "--help"], capture_output=True, text=True, check=True
    )
    assert "Usage:" in out.stdout


def test_unknown_subcommand_is_an_error() -> None:
    result = CliRunner().invoke(cli, ["no-such-thing"])
    assert result.exit_code == 2
    assert "No such command" in result.output
