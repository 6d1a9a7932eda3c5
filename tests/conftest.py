"""Suite-wide settings: Hypothesis profiles, the soak switch, shared server fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from corral.testing.servers import ServerProcess, real_etcd_command, start_cluster

# CI profile: deterministic (derandomized) and without deadlines, as noisy machines need.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile("dev")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-soak", action="store_true", default=False, help="run the long tests marked slow"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Long runs belong to `make soak`; `make test` leaves them out (deselected, not skipped).
    if config.getoption("--run-soak"):
        return
    kept = [i for i in items if i.get_closest_marker("slow") is None]
    dropped = [i for i in items if i.get_closest_marker("slow") is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def real_etcd(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh single-member real etcd 3.4 (`--enable-v2`) on free loopback ports."""
    with start_cluster(real_etcd_command(), tmp_path / "etcd", size=1, prefix="etcd") as members:
        yield members[0]
