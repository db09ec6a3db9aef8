"""Image files that reach outside themselves (issue 13: host files read through an uploaded image),
made with the real qemu-img, and the probes that prove nothing else was opened or connected to.

Every trick points at something the test made: a fake ``cloudlet.db`` holding a marker, a loopback
listener, a FIFO. Nothing here sends a packet anywhere but to 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
from pathlib import Path

MIB = 1024 * 1024


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def host_file(folder: Path, name: str = "cloudlet.db") -> tuple[Path, bytes]:
    """A world-readable stand-in for a host file (the server's database): 1 MiB starting with a
    marker no image holds by chance. Returns (path, marker)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = f"jwt_secret=LEAKED-{secrets.token_hex(8)}".encode()
    path = folder / name
    path.write_bytes(marker + bytes(MIB - len(marker)))
    path.chmod(0o644)
    return path, marker


def data_file_image(folder: Path, target: Path, name: str = "evil.qcow2") -> Path:
    """The finding's own recipe: a qcow2 with a raw external data file, then pointed at ``target``."""
    image, placeholder = folder / name, folder / f"{name}.data"
    qemu_img(
        "create", "-q", "-f", "qcow2", "-o", f"data_file={placeholder},data_file_raw=on", str(image), "1M"
    )
    qemu_img("amend", "-o", f"data_file={target}", str(image))
    placeholder.unlink()
    return image


def backed_image(folder: Path, backing: str, backing_format: str, name: str = "overlay.qcow2") -> Path:
    """A qcow2 whose backing file is ``backing`` (a path or a json:/nbd:/http: name), written
    without opening it (``-u``)."""
    image = folder / name
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-F", backing_format, "-b", backing, str(image), "1M")
    return image


def nbd_json(port: int) -> str:
    """A ``json:`` pseudo-file: raw data read over NBD from 127.0.0.1:``port``."""
    server = {"type": "inet", "host": "127.0.0.1", "port": str(port)}
    return "json:" + json.dumps({"driver": "raw", "file": {"driver": "nbd", "server": server}})


def network_names(port: int) -> dict[str, str]:
    """Backing names that make QEMU connect to 127.0.0.1:``port`` if it follows them."""
    return {
        "json-nbd": nbd_json(port),
        "nbd-uri": f"nbd://127.0.0.1:{port}/export",
        "http-uri": f"http://127.0.0.1:{port}/disk.raw",
    }


def vmdk_naming(folder: Path, extent: Path, name: str = "disk.vmdk") -> Path:
    """A vmdk descriptor whose only (flat) extent is ``extent``, another file."""
    image = folder / name
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(image), "1M")
    flat = folder / f"{image.stem}-flat.vmdk"
    text = image.read_text()
    assert f'"{flat.name}"' in text, text
    image.write_text(text.replace(f'"{flat.name}"', json.dumps(str(extent))))
    flat.unlink()
    return image


def swap(image_file: Path, replacement: Path) -> None:
    """Put ``replacement``'s bytes in an image's place: an image imported before imports were
    checked, as far as the server can tell."""
    shutil.copyfile(replacement, image_file)


class Listener:
    """A loopback TCP listener counting the connections that reach it (each is closed at once, so
    a client waiting for a greeting gives up instead of hanging)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.count += 1
            conn.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


class OpenWatch:
    """A FIFO that tells whether anything opened it for reading (a blocking open for writing
    returns only then): the extent a vmdk names, for instance."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self.path.chmod(0o644)
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        self._opened.set()
        os.close(fd)

    def was_opened(self, wait: float = 1.0) -> bool:
        return self._opened.wait(wait)

    def __enter__(self) -> OpenWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():  # release the writer: a reader of our own
            with contextlib.suppress(OSError):
                os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))
        self._thread.join(timeout=5)
