"""One KV server per test module and kind; tests isolate themselves by locksmith group.

`shared_etcd` runs every test of a module against a real etcd 3.4 and, once `corral etcd`
exists, against corral's own KV store too (same v2 HTTP API, so the same assertions).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from corral.testing.servers import (
    ServerProcess,
    corral_etcd_command,
    real_etcd_command,
    start_cluster,
)

_HAVE_CORRAL_KV = importlib.util.find_spec("corral.cli.etcd") is not None


@pytest.fixture(
    scope="module",
    params=[
        "etcd",
        pytest.param(
            "corral",
            marks=pytest.mark.skipif(not _HAVE_CORRAL_KV, reason="`corral etcd` not built yet"),
        ),
    ],
)
def shared_etcd(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A single-member KV server speaking the etcd v2 API, shared by a test module."""
    command = real_etcd_command() if request.param == "etcd" else corral_etcd_command()
    base = tmp_path_factory.mktemp(f"locksmith-{request.param}")
    with start_cluster(command, base / "kv", size=1, prefix=request.param) as members:
        yield members[0]
