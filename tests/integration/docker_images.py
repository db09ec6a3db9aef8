"""Local container images for the tests. There is no registry here (HOST-NOTES), so a busybox
image is made from Debian's busybox-static with `docker import`, once per engine."""

from __future__ import annotations

import fcntl
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import docker

BUSYBOX_REF = "local/busybox:latest"
LOCK = Path("/var/tmp/cloudlet-tests/docker-images.lock")


def _busybox_tar() -> bytes:
    busybox = shutil.which("busybox") or "/bin/busybox"
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for folder in ("bin", "tmp", "etc", "www"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        for name, text in (("etc/passwd", "root:x:0:0:root:/:/bin/sh\n"), ("etc/group", "root:x:0:\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def ensure_busybox_image() -> str:
    """Make ``local/busybox:latest`` unless the engine has it; safe across xdist workers."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    client = docker.from_env()
    try:
        with LOCK.open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                client.images.get(BUSYBOX_REF)
            except docker.errors.ImageNotFound:
                repository, tag = BUSYBOX_REF.rsplit(":", 1)
                client.api.import_image_from_data(
                    _busybox_tar(), repository=repository, tag=tag, changes=['CMD ["/bin/sh"]']
                )
    finally:
        client.close()
    return BUSYBOX_REF
