"""Fixtures for fleet: KV endpoints from a real etcd 3.4 or a 3-member `corral etcd` cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.testing.servers import corral_etcd_command, real_etcd_command, start_cluster


@pytest.fixture(params=["etcd", "corral3"])
def kv_endpoints(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """Client URLs of a fresh store: one real etcd member, or three corral members."""
    if request.param == "etcd":
        command, size = real_etcd_command(), 1
    else:
        command, size = corral_etcd_command(), 3
    with start_cluster(command, tmp_path / request.param, size=size, prefix="kv") as members:
        yield [m.client_url for m in members]
