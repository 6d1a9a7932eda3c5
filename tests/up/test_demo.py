"""The demo's story end to end on real machines: states asserted, not timings.

A shorter tour than `make demo` (no rolling update): the KV store with a member killed,
service discovery with a real container and its sidekick container announcing it with a TTL,
and fleet placing units by metadata, Conflicts and Global, then moving a unit off a machine
that was powered off.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from corral.cli.demo import Discovery, Tour, _containers_trouble
from corral.containers.drivers import driver_for
from corral.containers.settings import load_settings
from corral.containers.units import container_service_text
from corral.units.config import build_unit, expand_command
from corral.units.syntax import parse_unit_text
from corral.up import ClusterState, UpError, load_state, plan_cluster, stop_cluster

from .conftest import corral, leftovers


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A cluster folder with a short path: podman 4.3 wants a machine root of at most 43
    characters (docs/containers.md), which pytest's temporary folders are too deep for."""
    base = Path(tempfile.mkdtemp(prefix="crl-"))
    d = base / "c"
    yield d
    if (d / "corral-up.json").exists() and leftovers(d):
        stop_cluster(load_state(d), timeout=10, say=lambda _: None)
    shutil.rmtree(base, ignore_errors=True)


def test_the_tour_tells_its_story_and_stops_cleanly(short_dir: Path) -> None:
    out = corral("demo", "--dir", str(short_dir), "--steps", "kv,discovery,fleet", "--stop",
                 "--timeout", "90", timeout=280, wide=True)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    for line in (
        "written on m1, read on m3",
        "a watch on m2 fired for a write on m1",
        "killed; the cluster kept serving writes",
        "was restarted by its unit runner and caught up",
        # discovery: containers, not the process fallback
        "m1 runs www and its sidekick as containers",
        "m3 found www at 127.0.0.1:",
        "fetched its page: 'hello from m1'",
        "the sidekick refreshes the key every",
        "www stopped: its sidekick stopped with it (BindsTo=)",
        "the announcement expired with its TTL",
        "web@1/web@2 on the two role=web machines",
        "web@3 stays unplaced",
        "worker.service now runs on",
        "booted again and rejoined the KV cluster",
    ):
        assert line in text, f"missing {line!r} in:\n{text}"
    assert "FAILED" not in text and "skipped" not in text, text
    assert leftovers(short_dir) == []
    m1 = short_dir / "m1"
    assert driver_for(m1, load_settings(m1)).list() == []  # the containers went with it


def test_a_service_ttl_shorter_than_five_elections_is_refused(tmp_path: Path) -> None:
    out = corral("demo", "--dir", str(tmp_path / "c"), "--service-ttl", "4", timeout=60)
    assert out.returncode == 1
    assert "shorter than 5 KV election timeouts" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "c").exists()


def _run_line(name: str, text: str) -> list[str]:
    """What the unit runner would execute for a `.container` unit: podman's argv."""
    service = container_service_text(
        text, f"/m1/{name}", name.replace(".container", ".service"), Path("/m1")
    )
    unit = build_unit(name.replace(".container", ".service"), parse_unit_text(service))
    assert unit.service is not None
    (cmd,) = unit.service.exec_start
    return expand_command(cmd, {})


def test_the_sidekick_container_speaks_etcd_v2_with_nc() -> None:
    d = Discovery("m1", kv_port=41001, port=41999, ttl=5, refresh=1.7)
    units = d.containers()
    web = _run_line("www.container", units["www.container"])
    assert web[web.index("--network") + 1] == "host" and "busybox" in web
    assert "httpd -f -p 127.0.0.1:41999" in web[-1]
    side = _run_line("www-announce.container", units["www-announce.container"])
    env = {
        side[i + 1].partition("=")[0]: side[i + 1].partition("=")[2]
        for i, w in enumerate(side)
        if w == "--env"
    }
    assert env == {
        "ETCD_PORT": "41001",
        "KEY": "/services/www/m1",
        "VALUE": "127.0.0.1:41999",
        "TTL": "5",
        "REFRESH": "1.7",
    }
    script = side[-1]  # what `sh -c` runs inside the container: `$$` became `$`
    assert 'body="value=$VALUE&ttl=$TTL"' in script
    assert "PUT /v2/keys$KEY HTTP/1.0\\r\\n" in script and "Content-Length: ${#body}" in script
    assert "nc 127.0.0.1 $ETCD_PORT" in script and "sleep $REFRESH" in script
    assert "BindsTo=www.container" in units["www-announce.container"]


def test_ttls_shorter_than_five_election_timeouts_are_refused(tmp_path: Path) -> None:
    ports, ids = list(range(41000, 41007)), [f"{i:032x}" for i in range(1, 4)]
    assert plan_cluster(3, tmp_path, ports, ids, agent_ttl="5s").agent_ttl == "5s"
    with pytest.raises(UpError, match="shorter than 5 KV election timeouts"):
        plan_cluster(3, tmp_path, ports, ids, agent_ttl="4s")
    with pytest.raises(UpError, match="shorter than 5 KV election timeouts"):
        plan_cluster(3, tmp_path, ports, ids, agent_ttl="9s", election_ms=2000)
    with pytest.raises(UpError, match="invalid duration"):
        plan_cluster(3, tmp_path, ports, ids, agent_ttl="soon")


def test_without_podman_the_step_says_so_and_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [f"{i:032x}" for i in range(1, 4)]
    plan = plan_cluster(3, tmp_path, list(range(41000, 41007)), ids)
    tour = Tour(ClusterState(plan, {}), Console(file=io.StringIO()))
    monkeypatch.setenv("PATH", str(tmp_path))  # no podman here
    assert _containers_trouble(tour, "m1") == "podman is not installed"
    units = Discovery("m1", 41001, 41999, 5, 1.7).processes(plan.endpoints, tmp_path / "m1")
    assert "BindsTo=www.service" in units["www-announce.service"]
    assert "--ttl 5 /services/www/m1 127.0.0.1:41999" in units["www-announce.service"]
