"""The guest's root filesystem: the tree that becomes the initramfs.

busybox (with a link per applet) is the userland and PID 1, dropbear the SSH server (with the
shared libraries ``ldd`` names and the dynamic loader), plus the kernel modules and the guest
files shipped in ``cloudlet/tinyimage/guest``.
"""

from __future__ import annotations

import importlib.resources
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudlet.tinyimage.cpio import DeviceNode
from cloudlet.tinyimage.debs import library_dirs
from cloudlet.tinyimage.modules import Module, install_modules, order_file
from cloudlet.tinyimage.proc import TinyImageError, run

# Guest file name -> (path in the guest, mode). Files not named here are not part of the tree.
GUEST_FILES: dict[str, tuple[str, int]] = {
    "inittab": ("etc/inittab", 0o644),
    "rcS": ("etc/init.d/rcS", 0o755),
    "rcK": ("etc/init.d/rcK", 0o755),
    "power-button": ("etc/acpi/PWRF/00000080", 0o755),
    "dhcp": ("usr/libexec/cloudlet/dhcp", 0o755),
    "udhcpc.script": ("usr/share/udhcpc/default.script", 0o755),
    "seed.awk": ("usr/libexec/cloudlet/seed.awk", 0o644),
    "netcfg.awk": ("usr/libexec/cloudlet/netcfg.awk", 0o644),
    "hotplug-online": ("usr/libexec/cloudlet/hotplug-online", 0o755),
    "passwd": ("etc/passwd", 0o644),
    "group": ("etc/group", 0o644),
    "shadow": ("etc/shadow", 0o600),
    "shells": ("etc/shells", 0o644),
    "nsswitch.conf": ("etc/nsswitch.conf", 0o644),
    "issue": ("etc/issue", 0o644),
}
# Guest files used outside the tree (on the boot disk).
BOOT_FILES = ("syslinux.cfg",)

_DIRS = ("dev", "proc", "sys", "run", "tmp", "mnt", "root", "srv/www", "var/log", "var/lib/cloudlet")
# /dev/console must exist before rcS mounts devtmpfs: the kernel opens it for init's stdio.
DEVICES = (DeviceNode("dev/console", stat.S_IFCHR | 0o600, 5, 1),)


@dataclass(frozen=True)
class RootfsInputs:
    """Everything the tree is made of, besides the guest files."""

    busybox: Path
    dropbear: Path
    dropbearkey: Path
    kernel_moddir: Path  # /lib/modules/<version> of the unpacked kernel package
    kernel_version: str
    core_modules: Sequence[Module]  # loaded at every boot
    cdrom_modules: Sequence[Module]  # loaded only when no seed is on a virtio disk
    release: str  # written to /etc/cloudlet/release
    unpacked_roots: Sequence[Path] = ()  # downloaded package trees the binaries may come from


def guest_files() -> dict[str, bytes]:
    """The guest files shipped with cloudlet, by name."""
    folder = importlib.resources.files("cloudlet.tinyimage").joinpath("guest")
    files = {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}
    missing = sorted(set(GUEST_FILES).union(BOOT_FILES) - set(files))
    if missing:
        raise TinyImageError(f"guest files missing from the cloudlet package: {', '.join(missing)}")
    return files


def shared_libraries(binary: Path, roots: Sequence[Path] = ()) -> list[Path]:
    """The shared libraries and dynamic loader ``binary`` needs, as ``ldd`` names them; libraries in
    the unpacked package trees ``roots`` come before the host's."""
    search = ":".join(str(d) for root in roots for d in library_dirs(root))
    libs = []
    for line in run(["ldd", binary], env={"LD_LIBRARY_PATH": search} if search else None).splitlines():
        line = line.strip()
        if "not found" in line:
            raise TinyImageError(f"{binary}: shared library {line.split()[0]} not found")
        target = line.partition("=>")[2] if "=>" in line else line
        path = target.split("(")[0].strip()
        if path.startswith("/"):  # linux-vdso has no file
            libs.append(Path(path))
    return libs


def _put(root: Path, guest_path: str, data: bytes, mode: int) -> None:
    dest = root / guest_path
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    dest.chmod(mode)


def _copy(root: Path, guest_path: str, src: Path, mode: int) -> None:
    _put(root, guest_path, src.resolve().read_bytes(), mode)


def _link(root: Path, guest_path: str, target: str) -> None:
    dest = root / guest_path
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists() and not dest.is_symlink():
        dest.symlink_to(target)


def _install_busybox(root: Path, busybox: Path) -> None:
    _copy(root, "bin/busybox", busybox, 0o755)
    for applet in run([busybox, "--list-full"]).split():
        if applet.strip("/") != "bin/busybox":
            _link(root, applet.strip("/"), "/bin/busybox")
    _link(root, "init", "/bin/busybox")  # the kernel runs /init; busybox acts as init by that name


def _guest_path(path: Path, roots: Sequence[Path]) -> str:
    # A library from an unpacked package goes where the package would install it.
    for unpacked in roots:
        if path.is_relative_to(unpacked):
            return path.relative_to(unpacked).as_posix()
    return path.as_posix().lstrip("/")


def _install_dropbear(root: Path, inputs: RootfsInputs) -> None:
    _copy(root, "usr/sbin/dropbear", inputs.dropbear, 0o755)
    _copy(root, "usr/bin/dropbearkey", inputs.dropbearkey, 0o755)
    roots = inputs.unpacked_roots
    libs = {lib for b in (inputs.dropbear, inputs.dropbearkey) for lib in shared_libraries(b, roots)}
    for lib in sorted(libs):
        _copy(root, _guest_path(lib, roots), lib, 0o755)
    (root / "etc/dropbear").mkdir(parents=True, exist_ok=True)


def assemble(root: Path, inputs: RootfsInputs, files: dict[str, bytes]) -> None:
    """Lay out the guest tree under ``root`` (an empty folder)."""
    for folder in _DIRS:
        (root / folder).mkdir(parents=True, exist_ok=True)
    _link(root, "var/run", "../run")

    _install_busybox(root, inputs.busybox)
    _install_dropbear(root, inputs)

    guest_moddir = root / "lib/modules" / inputs.kernel_version
    core = install_modules(inputs.kernel_moddir, inputs.core_modules, guest_moddir)
    cdrom = install_modules(inputs.kernel_moddir, inputs.cdrom_modules, guest_moddir)
    _put(root, "etc/cloudlet/modules.core", order_file(core).encode(), 0o644)
    _put(root, "etc/cloudlet/modules.cdrom", order_file(cdrom).encode(), 0o644)
    for name in ("modules.builtin", "modules.order"):
        if (inputs.kernel_moddir / name).is_file():
            shutil.copyfile(inputs.kernel_moddir / name, guest_moddir / name)

    for name, (guest_path, mode) in GUEST_FILES.items():
        _put(root, guest_path, files[name], mode)
    _put(root, "etc/cloudlet/release", inputs.release.encode(), 0o644)

    # Folder modes must not depend on the builder's umask (dropbear checks them on the key's path).
    for sub in root.rglob("*"):
        if sub.is_dir() and not sub.is_symlink():
            sub.chmod(0o755)
    root.chmod(0o755)
    (root / "tmp").chmod(0o1777)
    (root / "root").chmod(0o700)
