"""Release payloads and trust: what a machine installs and what it refuses."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.cli.release import cli as release_cli
from corral.update.errors import (
    PayloadError,
    PayloadHashError,
    PayloadSizeError,
    SignatureError,
    SignatureMissingError,
)
from corral.update.payload import (
    build_payload,
    extract_payload,
    load_private_key,
    load_public_keys,
    read_manifest,
    sign_payload,
    verify_payload,
)

from .conftest import SOURCE

Keys = tuple[bytes, bytes]


def _b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_signed_payload_verifies_and_extracts(signed_110: bytes, release_key: Keys,
                                              tmp_path: Path) -> None:
    trusted = load_public_keys([release_key[1]])
    m = verify_payload(signed_110, trusted, expected_size=len(signed_110),
                       expected_sha256=_b64sha(signed_110))
    assert m.version == "1.1.0" and "corral/__init__.py" in m.files
    extract_payload(signed_110, tmp_path / "slot")
    init = (tmp_path / "slot/corral/__init__.py").read_text()
    assert '__version__ = "1.1.0"' in init
    assert json.loads((tmp_path / "slot/release.json").read_text())["version"] == "1.1.0"


def test_builds_are_reproducible(tmp_path: Path) -> None:
    (tmp_path / "corral/sub").mkdir(parents=True)
    (tmp_path / "corral/__init__.py").write_text('__version__ = "0.0.1"\n')
    (tmp_path / "corral/sub/x.py").write_text("X = 1\n")
    (tmp_path / "corral/sub/x.pyc").write_bytes(b"junk")
    first = build_payload(tmp_path, "3.0.0")
    assert first == build_payload(tmp_path, "3.0.0")
    assert set(read_manifest(first).files) == {"corral/__init__.py", "corral/sub/x.py"}


def test_unsigned_payload_is_refused(unsigned_110: bytes, release_key: Keys) -> None:
    with pytest.raises(SignatureMissingError) as info:
        verify_payload(unsigned_110, load_public_keys([release_key[1]]))
    assert info.value.code == 17


def test_no_trusted_key_refuses_everything(signed_110: bytes) -> None:
    with pytest.raises(SignatureMissingError, match="no release key is trusted"):
        verify_payload(signed_110, [])


def test_signature_by_an_untrusted_key_is_refused(unsigned_110: bytes, release_key: Keys,
                                                  other_key: Keys) -> None:
    by_server = sign_payload(unsigned_110, load_private_key(other_key[0]))
    with pytest.raises(SignatureError) as info:
        verify_payload(by_server, load_public_keys([release_key[1]]))
    assert info.value.code == 18


def test_forged_key_id_is_refused(unsigned_110: bytes, release_key: Keys,
                                  other_key: Keys) -> None:
    """A signature by another key that claims the trusted key's id does not verify."""
    good = sign_payload(unsigned_110, load_private_key(release_key[0]))
    bad = sign_payload(unsigned_110, load_private_key(other_key[0]))
    good_id = json.loads(good[len(unsigned_110) + 12:])["signatures"][0]["key_id"]
    block = json.loads(bad[len(unsigned_110) + 12:])
    block["signatures"][0]["key_id"] = good_id
    raw = json.dumps(block).encode()
    forged = unsigned_110 + good[len(unsigned_110):len(unsigned_110) + 8] + \
        len(raw).to_bytes(4, "big") + raw
    with pytest.raises(SignatureError):
        verify_payload(forged, load_public_keys([release_key[1]]))


def test_rotation_several_signatures(unsigned_110: bytes, release_key: Keys,
                                     other_key: Keys) -> None:
    both = sign_payload(sign_payload(unsigned_110, load_private_key(release_key[0])),
                        load_private_key(other_key[0]))
    assert verify_payload(both, load_public_keys([other_key[1]])).version == "1.1.0"
    assert verify_payload(both, load_public_keys([release_key[1]])).version == "1.1.0"


@pytest.mark.parametrize("cut", [1, 100, 5000])
def test_truncated_payload_is_refused(signed_110: bytes, release_key: Keys, cut: int) -> None:
    with pytest.raises(PayloadError) as info:
        verify_payload(signed_110[:-cut], load_public_keys([release_key[1]]))
    assert info.value.code in (11, 12)
    with pytest.raises(PayloadSizeError):
        verify_payload(signed_110[:-cut], load_public_keys([release_key[1]]),
                       expected_size=len(signed_110))


def test_wrong_hash_is_refused(signed_110: bytes, release_key: Keys) -> None:
    with pytest.raises(PayloadHashError) as info:
        verify_payload(signed_110, load_public_keys([release_key[1]]),
                       expected_sha256=_b64sha(b"something else"))
    assert info.value.code == 10


def test_tampered_body_is_refused(signed_110: bytes, release_key: Keys) -> None:
    tampered = bytearray(signed_110)
    tampered[200] ^= 0xFF
    with pytest.raises(SignatureError):
        verify_payload(bytes(tampered), load_public_keys([release_key[1]]))


def test_garbage_is_not_a_payload(release_key: Keys) -> None:
    with pytest.raises(PayloadError):
        verify_payload(b"MZ\x90\x00" * 10, load_public_keys([release_key[1]]))
    with pytest.raises(PayloadError):
        read_manifest(b"")


def test_release_cli_keygen_build_sign_verify(tmp_path: Path) -> None:
    run = CliRunner().invoke
    assert run(release_cli, ["keygen", "--out", str(tmp_path / "k")]).exit_code == 0
    assert (tmp_path / "k/release.key").stat().st_mode & 0o077 == 0
    again = run(release_cli, ["keygen", "--out", str(tmp_path / "k")])
    assert again.exit_code == 1 and "refusing to overwrite" in again.output
    p = tmp_path / "r.payload"
    r = run(release_cli, ["build", "--version", "2.0.0", "--source", str(SOURCE), "--out", str(p)])
    assert r.exit_code == 0, r.output
    pub = str(tmp_path / "k/release.pub")
    r = run(release_cli, ["verify", "--trusted-key", pub, str(p)])
    assert r.exit_code == 1 and "not signed" in r.output
    assert run(release_cli, ["sign", "--key", str(tmp_path / "k/release.key"),
                             str(p)]).exit_code == 0
    r = run(release_cli, ["verify", "--trusted-key", pub, str(p)])
    assert r.exit_code == 0 and "corral 2.0.0" in r.output
    r = run(release_cli, ["verify", str(p)])
    assert r.exit_code == 1 and "no release key is trusted" in r.output
    r = run(release_cli, ["build", "--version", "two", "--out", str(p)])
    assert r.exit_code == 1 and "not a semantic version" in r.output
    assert "Traceback" not in r.output
