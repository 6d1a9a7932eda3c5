"""Fleet-era docker command lines: parsing and mapping onto `corral containers`."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.containers.dockercompat import is_docker_argv, map_docker_argv, parse_run
from corral.containers.errors import ContainerError


def test_fleet_era_run_line_parses() -> None:
    req = parse_run(
        ["--name", "web1", "--network=host", "busybox", "httpd", "-f", "-p", "127.0.0.1:18080"]
    )
    assert req.spec.name == "web1"
    assert req.spec.network == "host"
    assert req.spec.image == "busybox"
    assert req.spec.args == ("httpd", "-f", "-p", "127.0.0.1:18080")
    assert not req.spec.rm and not req.detach


def test_options_after_the_image_belong_to_the_command() -> None:
    req = parse_run(["--rm", "-e", "A=1", "--env=B=2", "img", "--rm", "-e"])
    assert req.spec.rm
    assert req.spec.env == (("A", "1"), ("B", "2"))
    assert req.spec.args == ("--rm", "-e")


def test_detach_and_passthrough() -> None:
    req = parse_run(["-d", "-it", "--ulimit", "nofile=10:10", "--privileged", "img"])
    assert req.detach
    assert req.spec.extra == ("--ulimit", "nofile=10:10", "--privileged")


@pytest.mark.parametrize("args", [[], ["--name"], ["--rm"]])
def test_missing_image_or_value_is_a_clear_error(args: list[str]) -> None:
    with pytest.raises(ContainerError):
        parse_run(args)


def test_docker_paths_are_mapped_and_others_kept() -> None:
    root = Path("/m/root")
    assert is_docker_argv(["/usr/bin/docker", "ps"])
    mapped = map_docker_argv(["/usr/bin/docker", "stop", "web1"], root, python="py")
    assert mapped == ["py", "-m", "corral", "containers", "--root", "/m/root", "stop", "web1"]
    assert map_docker_argv(["/bin/echo", "docker"], root) == ["/bin/echo", "docker"]
