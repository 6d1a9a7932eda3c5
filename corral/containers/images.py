"""Images without a registry: import a rootfs tarball, list, remove; build a busybox image.

podman keeps imported images in the machine's own storage; the runc driver keeps each image as
an unpacked rootfs folder under `var/lib/corral/images/`. Short names resolve as podman does
for local images: `busybox` means `localhost/busybox:latest`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from corral.containers.drivers import PodmanDriver
from corral.containers.errors import ImageError
from corral.containers.settings import ContainerSettings, MachinePaths

__all__ = [
    "ImageInfo",
    "build_busybox_rootfs",
    "build_busybox_tar",
    "import_image",
    "list_images",
    "normalize",
    "remove_image",
]

BUSYBOX = Path("/bin/busybox")


@dataclass(frozen=True)
class ImageInfo:
    name: str
    id: str
    size: int
    created: str


def normalize(name: str) -> str:
    """`busybox` → `localhost/busybox:latest` (podman's rule for local short names)."""
    repo, tag = name, "latest"
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, _, tag = name.rpartition(":")
    if "/" not in repo:
        repo = f"localhost/{repo}"
    return f"{repo}:{tag}"


def runc_image_dir(root: Path, name: str) -> Path:
    safe = normalize(name).replace("/", "_").replace(":", "_")
    return MachinePaths(root).runc_images / safe


def build_busybox_rootfs(dest: Path, busybox: Path = BUSYBOX) -> Path:
    """A minimal root filesystem: static busybox, its applets as symlinks, passwd/group."""
    if not busybox.exists():
        raise ImageError(f"{busybox} not found (install Debian's busybox-static)")
    out = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=False)
    if out.returncode != 0 or not out.stdout.strip():
        raise ImageError(f"{busybox} does not list its applets; is it busybox-static?")
    for d in ("bin", "proc", "sys", "dev", "etc", "tmp", "var", "root", "www"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, dest / "bin/busybox")
    for applet in out.stdout.split():
        link = dest / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (dest / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
    )
    (dest / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (dest / "www/index.html").write_text("corral busybox image\n")
    # `httpd -f -p PORT` with no -h serves the working directory, which is / (fleet's example)
    (dest / "index.html").write_text("corral busybox image\n")
    return dest


def build_busybox_tar(out: Path, busybox: Path = BUSYBOX) -> Path:
    """Write a busybox rootfs tarball to `out` (for `corral images import`)."""
    work = out.with_name(out.name + ".rootfs")
    shutil.rmtree(work, ignore_errors=True)
    try:
        build_busybox_rootfs(work, busybox)
        with tarfile.open(out, "w") as tar:
            for p in sorted(work.iterdir()):
                tar.add(p, arcname=p.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def import_image(root: Path, settings: ContainerSettings, tar_path: Path, name: str) -> str:
    """Import a rootfs tarball as image `name`; returns the image id."""
    if not tar_path.is_file():
        raise ImageError(f"{tar_path}: no such file")
    if settings.driver in ("podman", "docker"):
        d = PodmanDriver(root, settings)
        r = d.cli_copying("import", "--quiet", str(tar_path), normalize(name))
        if r.returncode != 0:
            raise ImageError(f"import failed: {r.stderr.strip()}")
        return r.stdout.strip().removeprefix("sha256:")
    target = runc_image_dir(root, name)
    tmp = target.with_name(target.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "rootfs").mkdir(parents=True)
    try:
        with tarfile.open(tar_path) as tar:
            tar.extractall(tmp / "rootfs", filter="tar")
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ImageError(f"{tar_path}: not a usable rootfs tarball: {exc}") from None
    import hashlib

    digest = hashlib.sha256(tar_path.read_bytes()).hexdigest()
    (tmp / "image.json").write_text(
        json.dumps(
            {
                "name": normalize(name),
                "id": digest,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
    )
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return digest


def list_images(root: Path, settings: ContainerSettings) -> list[ImageInfo]:
    if settings.driver in ("podman", "docker"):
        r = PodmanDriver(root, settings).cli("images", "--format", "json")
        if r.returncode != 0:
            raise ImageError(r.stderr.strip())
        out = []
        for img in json.loads(r.stdout or "[]"):
            for n in img.get("Names") or ["<none>"]:
                out.append(
                    ImageInfo(
                        n,
                        str(img.get("Id", ""))[:12],
                        int(img.get("Size", 0)),
                        str(img.get("CreatedAt", "")),
                    )
                )
        return out
    base = MachinePaths(root).runc_images
    infos = []
    for meta in sorted(base.glob("*/image.json")) if base.exists() else []:
        m = json.loads(meta.read_text())
        size = sum(
            f.stat().st_size
            for f in (meta.parent / "rootfs").rglob("*")
            if f.is_file() and not f.is_symlink()
        )
        infos.append(ImageInfo(m["name"], m["id"][:12], size, m["created"]))
    return infos


def remove_image(root: Path, settings: ContainerSettings, name: str) -> None:
    if settings.driver in ("podman", "docker"):
        r = PodmanDriver(root, settings).cli("rmi", normalize(name))
        if r.returncode != 0:
            raise ImageError(r.stderr.strip() or f"cannot remove {name}")
        return
    target = runc_image_dir(root, name)
    if not target.exists():
        raise ImageError(f"image {name!r} not found")
    shutil.rmtree(target)
