"""`.container` units → services, as Podman's Quadlet generator does (containers.md §2.3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.containers.errors import QuadletError
from corral.containers.quadlet import generate_service, service_name
from corral.units.syntax import parse_unit_text

UNIT = """\
[Unit]
Description=web
After=db.container network-online.target

[Container]
Image=busybox
Exec=httpd -f -p 127.0.0.1:8080
Environment=A=1 "B=two words"
PublishPort=8080:80
Network=host
StopTimeout=3

[Service]
Restart=always

[Install]
WantedBy=multi-user.target
"""


def gen(text: str, name: str = "web.container") -> str:
    return generate_service(parse_unit_text(text, name), name, Path("/r"), "py", name)


def test_generated_service_runs_in_foreground_and_stops_the_container() -> None:
    out = gen(UNIT)
    start = next(line for line in out.splitlines() if line.startswith("ExecStart="))
    assert start.startswith(
        "ExecStart=py -m corral containers --root /r run --name systemd-%N --replace --rm"
    )
    assert " -d " not in start and "sdnotify" not in start
    assert '--env A=1 --env "B=two words"' in start
    assert "--publish 8080:80" in start and "--network host" in start
    assert start.endswith("busybox httpd -f -p 127.0.0.1:8080")
    assert "ExecStop=py -m corral containers --root /r stop -t 3 systemd-%N" in out
    assert "ExecStopPost=-py -m corral containers --root /r rm -f systemd-%N" in out
    assert "After=db.service network-online.target" in out
    assert "Restart=always" in out and "WantedBy=multi-user.target" in out
    assert "Type=simple" in out


def test_container_name_overrides_default() -> None:
    out = gen(UNIT.replace("StopTimeout=3", "ContainerName=web1"))
    assert "stop -t 10 web1" in out


def test_service_name() -> None:
    assert service_name("web.container") == "web.service"
    assert service_name("web@.container") == "web@.service"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[Container]\nExec=true\n", "no Image key specified"),
        (
            "[Container]\nImage=x\nBogus=1\n",
            "web.container:3: unsupported key 'Bogus' in group 'Container'",
        ),
        ("[Container]\nImage=x\nRunInit=maybe\n", "web.container:3: invalid boolean"),
        ("[Container]\nImage=x\nStopTimeout=soon\n", "web.container:3: invalid StopTimeout"),
        (
            "[Container]\nImage=x\n[Service]\nType=forking\n",
            "web.container:4: invalid service Type",
        ),
        ("[Unit]\nDescription=x\n", "missing [Container] section"),
    ],
)
def test_invalid_units_name_the_line(text: str, message: str) -> None:
    with pytest.raises(QuadletError, match=message.replace("[", r"\[").replace("]", r"\]")):
        gen(text)
