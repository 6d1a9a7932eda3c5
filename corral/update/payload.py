"""Release payloads: corral's own source at a version, in one signed file.

Format (version 1), all integers big-endian::

    b"CRLPAY\\r\\n"          8-byte magic
    u32  format version     (1)
    u64  body length N
    N bytes body            gzip'd tar: `release.json` first, then `corral/**`
    -- signature block, appended by `sign_payload`, absent when unsigned --
    b"CRLSIG\\r\\n"          8-byte magic
    u32  block length M
    M bytes JSON            {"format": 1, "signatures": [{"key_id": …, "signature": b64}]}

`release.json` (format 1) names the version and the SHA-256 of every file in the tree.
Each signature is Ed25519 over `DOMAIN + sha256(header ‖ body)`, like update_engine's RSA
signature over the payload hash up to the signature blob (reference §2.5); several
signatures may be appended, so a release key can be rotated.

Trust rules, checked by `verify_payload` in this order (error codes are update_engine's):
size equals what the server announced (11), SHA-256 equals it (10), the framing is whole
(11: truncated), at least one key is trusted at all and a signature block exists (17), one
signature verifies with a trusted key (18), every file matches `release.json` (12).
The update server never holds a signing key; a signature by any key the machine was not
provisioned with — a server's key included — is refused.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import struct
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from corral.update.errors import (
    PayloadError,
    PayloadHashError,
    PayloadSizeError,
    SignatureError,
    SignatureMissingError,
)
from corral.update.version import parse_version

__all__ = [
    "FORMAT_VERSION",
    "ReleaseManifest",
    "build_payload",
    "extract_payload",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_keys",
    "read_manifest",
    "sign_payload",
    "verify_payload",
]

MAGIC = b"CRLPAY\r\n"
SIG_MAGIC = b"CRLSIG\r\n"
FORMAT_VERSION = 1
DOMAIN = b"corral-release-payload-v1\x00"
_HEADER = struct.Struct(">8sIQ")
_SIG_HEADER = struct.Struct(">8sI")
MAX_SIG_BLOCK = 64 * 1024
_VERSION_LINE = re.compile(r'^__version__ = "[^"]*"$', re.M)


@dataclass(frozen=True, slots=True)
class ReleaseManifest:
    version: str
    files: dict[str, str]
    format: int = FORMAT_VERSION
    name: str = "corral"


# --------------------------------------------------------------------------- keys


def generate_key() -> tuple[bytes, bytes]:
    """A new release key pair as (private PEM, public PEM)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise PayloadError(f"not a release private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PayloadError("release keys are Ed25519")
    return key


def load_public_keys(pems: Iterable[bytes]) -> list[Ed25519PublicKey]:
    keys = []
    for pem in pems:
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise PayloadError(f"not a public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise PayloadError("release keys are Ed25519")
        keys.append(key)
    return keys


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# --------------------------------------------------------------------------- build


def _source_files(source: Path) -> list[Path]:
    package = source / "corral"
    if not (package / "__init__.py").is_file():
        raise PayloadError(f"{source} does not contain the corral package")
    files = [
        p for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".pyo"}
    ]
    return sorted(files)


def build_payload(source: Path, version: str) -> bytes:
    """An unsigned payload of `source/corral` with `__version__` set to `version`."""
    parse_version(version)
    contents: dict[str, bytes] = {}
    for path in _source_files(source):
        rel = path.relative_to(source).as_posix()
        data = path.read_bytes()
        if rel == "corral/__init__.py":
            text, n = _VERSION_LINE.subn(f'__version__ = "{version}"', data.decode())
            if n != 1:
                raise PayloadError("corral/__init__.py has no __version__ line")
            data = text.encode()
        contents[rel] = data
    manifest = {
        "format": FORMAT_VERSION,
        "name": "corral",
        "version": version,
        "files": {k: hashlib.sha256(v).hexdigest() for k, v in contents.items()},
    }
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, data in [("release.json", json.dumps(manifest, indent=1).encode()),
                          *contents.items()]:
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    body = gzip.compress(tar_bytes.getvalue(), mtime=0)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, len(body)) + body


def _split(data: bytes) -> tuple[bytes, bytes, list[dict[str, str]] | None]:
    """(signed region, body, signatures or None); raises on bad framing."""
    if len(data) < _HEADER.size:
        raise PayloadSizeError("payload truncated: shorter than its header")
    magic, fmt, body_len = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PayloadError("not a corral release payload")
    if fmt != FORMAT_VERSION:
        raise PayloadError(f"unsupported payload format {fmt}")
    end = _HEADER.size + body_len
    if len(data) < end:
        raise PayloadSizeError(f"payload truncated: body needs {body_len} bytes")
    signed, body, rest = data[:end], data[_HEADER.size:end], data[end:]
    if not rest:
        return signed, body, None
    if len(rest) < _SIG_HEADER.size:
        raise PayloadSizeError("payload truncated inside the signature block")
    sig_magic, block_len = _SIG_HEADER.unpack_from(rest)
    if sig_magic != SIG_MAGIC or block_len > MAX_SIG_BLOCK:
        raise PayloadError("trailing bytes after the payload body")
    if len(rest) != _SIG_HEADER.size + block_len:
        raise PayloadSizeError("payload signature block truncated or padded")
    try:
        doc = json.loads(rest[_SIG_HEADER.size:])
        sigs = [{"key_id": str(s["key_id"]), "signature": str(s["signature"])}
                for s in doc["signatures"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise PayloadError(f"bad signature block: {exc}") from None
    return signed, body, sigs


def _digest(signed: bytes) -> bytes:
    return DOMAIN + hashlib.sha256(signed).digest()


def sign_payload(data: bytes, key: Ed25519PrivateKey) -> bytes:
    """Add a signature by `key` (keeping any earlier ones, for key rotation)."""
    signed, _, sigs = _split(data)
    sigs = list(sigs or [])
    kid = key_id(key.public_key())
    sigs = [s for s in sigs if s["key_id"] != kid]
    sigs.append({"key_id": kid,
                 "signature": base64.b64encode(key.sign(_digest(signed))).decode()})
    block = json.dumps({"format": FORMAT_VERSION, "signatures": sigs}).encode()
    return signed + _SIG_HEADER.pack(SIG_MAGIC, len(block)) + block


def _members(body: bytes) -> dict[str, bytes]:
    try:
        raw = gzip.decompress(body)
        out: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar:
                name = member.name
                if (not member.isfile() or name.startswith("/") or ".." in name.split("/")
                        or name in out):
                    raise PayloadError(f"unsafe entry in payload: {name!r}")
                f = tar.extractfile(member)
                assert f is not None
                out[name] = f.read()
        return out
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise PayloadError(f"payload body is not a valid archive: {exc}") from None


def _manifest_of(members: dict[str, bytes]) -> ReleaseManifest:
    try:
        doc = json.loads(members["release.json"])
        manifest = ReleaseManifest(str(doc["version"]), dict(doc["files"]), int(doc["format"]),
                                   str(doc["name"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise PayloadError(f"payload has no valid release.json: {exc}") from None
    if manifest.format != FORMAT_VERSION:
        raise PayloadError(f"unsupported release.json format {manifest.format}")
    parse_version(manifest.version)
    return manifest


def read_manifest(data: bytes) -> ReleaseManifest:
    """The release manifest, without checking signatures (what the server may look at)."""
    _, body, _ = _split(data)
    return _manifest_of(_members(body))


def verify_payload(
    data: bytes,
    trusted: Iterable[Ed25519PublicKey],
    *,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
) -> ReleaseManifest:
    """Apply every trust rule (module docstring) and return the verified manifest."""
    if expected_size is not None and len(data) != expected_size:
        raise PayloadSizeError(f"payload is {len(data)} bytes, expected {expected_size}")
    if expected_sha256 is not None:
        actual = base64.b64encode(hashlib.sha256(data).digest()).decode()
        if actual != expected_sha256:
            raise PayloadHashError(f"payload sha256 {actual} != announced {expected_sha256}")
    signed, body, sigs = _split(data)
    keys = {key_id(k): k for k in trusted}
    if not keys:
        raise SignatureMissingError("no release key is trusted; refusing every payload")
    if not sigs:
        raise SignatureMissingError("payload is not signed")
    digest = _digest(signed)
    ok = False
    for sig in sigs:
        key = keys.get(sig["key_id"])
        if key is None:
            continue
        try:
            key.verify(base64.b64decode(sig["signature"]), digest)
            ok = True
            break
        except (InvalidSignature, ValueError):
            continue
    if not ok:
        raise SignatureError("payload is not signed by any trusted release key")
    return _checked(_members(body))


def _checked(members: dict[str, bytes]) -> ReleaseManifest:
    """The manifest, after checking every file against it."""
    manifest = _manifest_of(members)
    files = {k: v for k, v in members.items() if k != "release.json"}
    if set(files) != set(manifest.files):
        raise PayloadError("payload files differ from release.json")
    for name, content in files.items():
        if hashlib.sha256(content).hexdigest() != manifest.files[name]:
            raise PayloadHashError(f"{name} does not match release.json")
    return manifest


def extract_payload(data: bytes, target: Path) -> ReleaseManifest:
    """Write a payload's tree into the new directory `target`, files checked first.

    Signatures are not checked here: only verified payloads reach a slot.
    """
    _, body, _ = _split(data)
    members = _members(body)
    manifest = _checked(members)
    target.mkdir(parents=True, exist_ok=True)
    for name, content in members.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return manifest
