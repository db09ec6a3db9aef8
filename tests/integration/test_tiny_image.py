"""The tiny image boots under QEMU (TCG), reads its NoCloud seed, answers HTTP and SSH with the
seeded hostname, and powers off on the ACPI power button.

QEMU is started directly (no libvirt) with user networking forwarded to loopback ports only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudlet.drivers.libvirt.seed import build_nocloud_seed
from cloudlet.tinyimage import build_tiny_image

pytestmark = pytest.mark.integration

HOSTNAME = "tinytest"
HTTP_DEADLINE = 90.0
POWEROFF_DEADLINE = 30.0


def _cache_dir() -> Path:
    return Path(os.environ.get("CLOUDLET_CACHE_DIR", "~/.cache/cloudlet")).expanduser() / "tiny"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _require_qemu() -> str:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        if os.environ.get("CLOUDLET_REQUIRE_REAL"):
            pytest.fail("qemu-system-x86_64 is missing and CLOUDLET_REQUIRE_REAL is set")
        pytest.skip("qemu-system-x86_64 is not installed")
    return qemu


class Qmp:
    """Just enough of the QEMU Machine Protocol to press the power button."""

    def __init__(self, path: Path, deadline: float = 30.0) -> None:
        end = time.monotonic() + deadline
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)
        self.sock.settimeout(10)
        self.reader = self.sock.makefile("rb")
        json.loads(self.reader.readline())  # greeting
        self.execute("qmp_capabilities")

    def execute(self, command: str) -> object:
        self.sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
        while True:
            reply = json.loads(self.reader.readline())
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError(f"QMP {command}: {reply['error']}")
            return reply.get("return")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@contextlib.contextmanager
def _qemu(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _http_get(port: int, deadline: float, proc: subprocess.Popen[bytes]) -> bytes | None:
    end = time.monotonic() + deadline
    while time.monotonic() < end and proc.poll() is None:
        try:
            # Short timeout: before the guest is up, slirp may accept and then hold the connection.
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as resp:
                return bytes(resp.read())
        except (OSError, urllib.error.URLError):
            time.sleep(0.2)
    return None


def _ssh(key: Path, port: int, command: str) -> subprocess.CompletedProcess[str]:
    argv = [
        "ssh", "-i", str(key), "-p", str(port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
        "root@127.0.0.1", command,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no output)"
    return "\n".join(text.splitlines()[-lines:])


def test_tiny_image_boots_serves_and_powers_off(tmp_path: Path) -> None:
    qemu = _require_qemu()
    started = time.monotonic()
    image = build_tiny_image(_cache_dir(), log=lambda m: print(f"tinyimage: {m}"))
    print(f"image {image} ({image.stat().st_size} bytes) ready in {time.monotonic() - started:.1f} s")

    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    seed = tmp_path / "seed.iso"
    build_nocloud_seed(
        seed, instance_id="tiny-test-1", hostname=HOSTNAME, ssh_keys=[key.with_suffix(".pub").read_text()]
    )
    overlay = tmp_path / "disk.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", "qcow2", str(overlay)], check=True
    )

    http_port, ssh_port = _free_port(), _free_port()
    serial = tmp_path / "serial.log"
    qmp_dir = Path(tempfile.mkdtemp(prefix="cl-qmp-"))  # short path: unix sockets allow ~100 bytes
    qmp_sock = qmp_dir / "qmp.sock"
    argv = [
        qemu, "-accel", "tcg", "-m", "256", "-display", "none",
        "-serial", f"file:{serial}", "-monitor", "none",
        "-qmp", f"unix:{qmp_sock},server=on,wait=off",
        "-drive", f"file={overlay},if=virtio,format=qcow2",
        "-drive", f"file={seed},if=virtio,format=raw,readonly=on",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{http_port}-:80,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip
    try:
        with _qemu(argv, tmp_path / "qemu.log") as proc:
            boot = time.monotonic()
            body = _http_get(http_port, HTTP_DEADLINE, proc)
            assert body == f"{HOSTNAME}\n".encode(), (
                f"HTTP answered {body!r}; qemu: {_tail(tmp_path / 'qemu.log', 5)}\nserial:\n{_tail(serial)}"
            )
            print(f"boot to HTTP: {time.monotonic() - boot:.1f} s")

            result = _ssh(key, ssh_port, "hostname")
            assert result.returncode == 0, f"ssh failed: {result.stderr}\nserial:\n{_tail(serial)}"
            assert result.stdout.strip() == HOSTNAME

            qmp = Qmp(qmp_sock)
            try:
                pressed = time.monotonic()
                qmp.execute("system_powerdown")  # the ACPI power button, as libvirt's shutdown
                proc.wait(timeout=POWEROFF_DEADLINE)
            except subprocess.TimeoutExpired:
                pytest.fail(f"guest ignored the ACPI power button\nserial:\n{_tail(serial)}")
            finally:
                qmp.close()
            print(f"power button to exit: {time.monotonic() - pressed:.1f} s")
            assert "ACPI power button" in serial.read_text(errors="replace")
    finally:
        shutil.rmtree(qmp_dir, ignore_errors=True)
