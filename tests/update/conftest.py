"""Fixtures for the update tests: the Omaha samples, release keys and payloads."""

from __future__ import annotations

from pathlib import Path

import pytest

import corral
from corral.update.payload import build_payload, generate_key, load_private_key, sign_payload

SAMPLES = Path(__file__).parent / "omaha_samples"
SOURCE = Path(corral.__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def release_key() -> tuple[bytes, bytes]:
    return generate_key()


@pytest.fixture(scope="session")
def other_key() -> tuple[bytes, bytes]:
    """A key no machine trusts (e.g. one a compromised update server would hold)."""
    return generate_key()


@pytest.fixture(scope="session")
def unsigned_110() -> bytes:
    return build_payload(SOURCE, "1.1.0")


@pytest.fixture(scope="session")
def signed_110(unsigned_110: bytes, release_key: tuple[bytes, bytes]) -> bytes:
    return sign_payload(unsigned_110, load_private_key(release_key[0]))


@pytest.fixture(scope="session")
def signed_100(release_key: tuple[bytes, bytes]) -> bytes:
    return sign_payload(build_payload(SOURCE, "1.0.0"), load_private_key(release_key[0]))
