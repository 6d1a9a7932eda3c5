"""Applying rendered files under a root: idempotent, reports changes, never escapes the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral.cloudinit import ChangeKind, RenderedFile, RenderError, apply_to_root, parse, render

CONFIG = """#cloud-config
hostname: {host}
write_files:
  - path: /etc/app.conf
    content: "x=1"
    permissions: "0600"
coreos:
  units:
    - name: noisy.service
      mask: true
"""


def _files(host: str) -> list[RenderedFile]:
    return list(render(parse(CONFIG.format(host=host)), machine_id="a" * 32))


def _tree(root: Path) -> dict[str, tuple[int, bytes | str]]:
    out: dict[str, tuple[int, bytes | str]] = {}
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            out[rel] = (
                (0o777, os.readlink(p))
                if p.is_symlink()
                else (p.stat().st_mode & 0o7777, p.read_bytes())
            )
    return out


def test_apply_is_idempotent_and_reports_changes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    first = apply_to_root(root, _files("a"))
    assert {c.kind for c in first} == {ChangeKind.CREATED}
    tree = _tree(root)
    assert tree["etc/hostname"] == (0o644, b"a\n")
    assert tree["etc/app.conf"] == (0o600, b"x=1")
    assert tree["etc/systemd/system/noisy.service"] == (0o777, "/dev/null")
    assert {c.kind for c in apply_to_root(root, _files("a"))} == {ChangeKind.UNCHANGED}
    again = {c.path: c for c in apply_to_root(root, _files("b"))}
    assert again["etc/hostname"].kind is ChangeKind.CHANGED
    assert str(again["etc/hostname"]) == "changed etc/hostname (content)"
    os.chmod(root / "etc/app.conf", 0o644)
    fixed = {c.path: c for c in apply_to_root(root, _files("b"))}
    assert str(fixed["etc/app.conf"]) == "changed etc/app.conf (mode 0644 -> 0600)"
    assert _tree(root)["etc/app.conf"][0] == 0o600
    assert set(_tree(root)) == set(tree)  # nothing else appeared, no temp files left


def test_symlink_inside_root_cannot_redirect_writes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "etc").symlink_to(outside)
    with pytest.raises(RenderError, match="outside the machine root"):
        apply_to_root(root, _files("a"))
    assert list(outside.iterdir()) == []
