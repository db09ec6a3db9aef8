"""Build (or reuse) cloudlet's tiny guest image: a small qcow2 that behaves like a cloud image.

It boots Debian's cloud kernel with a busybox initramfs, reads a NoCloud seed (hostname and root's
SSH keys), gets an address by DHCP, serves SSH (dropbear) and HTTP (its hostname on port 80), and
powers off on the ACPI power button. Everything comes from Debian packages.

The image is cached under a key made of every input (the guest files, the package versions, the
module lists, the builder version), so it is rebuilt only when one of them changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from cloudlet.tinyimage import debs, disk, modules, rootfs
from cloudlet.tinyimage.cpio import write_initramfs
from cloudlet.tinyimage.proc import TinyImageError

# Bump when the build steps change in a way the other inputs below do not show.
BUILDER_VERSION = 1
KERNEL_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
DROPBEAR_PACKAGE = "dropbear-bin"
LIBC_PACKAGE = "libc6"  # dropbear's shared libraries come from the host
# Loaded at every boot (dependencies are added): disk, network, seed ISO, the ACPI power button
# (button) whose events acpid reads through evdev, and the memory balloon that reports the
# guest's own memory use to the host (VM metrics).
CORE_MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_rng",
    "virtio_balloon",
    "isofs",
    "evdev",
    "button",
)
# Loaded only when no seed is on a virtio disk: a CD-ROM on IDE or virtio-scsi.
CDROM_MODULES = ("ata_piix", "virtio_scsi", "sr_mod")
IMAGE_PREFIX = "tiny-"
KEEP_BUILDS = 4  # cached builds kept, the newest one included

Log = Callable[[str], None]


@dataclass(frozen=True)
class _Plan:
    """The resolved inputs of one build; their hash names the cached image."""

    kernel: debs.Package
    busybox: debs.Package
    dropbear: debs.Package
    libc: str | None


def _quiet(_message: str) -> None:
    pass


def _apt_state() -> str:
    """A fingerprint of what apt and dpkg know; the resolved plan stays valid while it holds."""
    paths = [
        Path("/var/lib/dpkg/status"),
        Path("/etc/apt/preferences"),
        *sorted(Path("/etc/apt/preferences.d").glob("*")),
        *sorted(Path("/var/lib/apt/lists").glob("*Packages*")),
    ]
    parts = []
    for path in paths:
        with contextlib.suppress(OSError):
            st = path.stat()
            parts.append(f"{path} {st.st_mtime_ns} {st.st_size}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _resolve(cache_dir: Path, log: Log, *, fresh: bool) -> _Plan:
    # apt-cache takes about a second to load the package lists, so the answer is remembered
    # until the lists or the installed packages change.
    memo = cache_dir / ".tiny-plan.json"
    state = _apt_state()
    if not fresh:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            saved = json.loads(memo.read_text())
            if saved["apt_state"] == state:
                p = saved["plan"]
                return _Plan(
                    kernel=debs.Package(**p["kernel"]),
                    busybox=debs.Package(**p["busybox"]),
                    dropbear=debs.Package(**p["dropbear"]),
                    libc=p["libc"],
                )
    plan = _Plan(
        kernel=debs.resolve_kernel(KERNEL_PACKAGE, log),
        busybox=debs.resolve_tool(BUSYBOX_PACKAGE, log),
        dropbear=debs.resolve_tool(DROPBEAR_PACKAGE, log),
        libc=debs.installed_version(LIBC_PACKAGE),
    )
    tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"apt_state": _apt_state(), "plan": asdict(plan)}))
    os.replace(tmp, memo)
    return plan


def cache_key(plan: _Plan, files: dict[str, bytes]) -> str:
    """A short hash of everything the image is made of."""
    inputs = {
        "builder": BUILDER_VERSION,
        # The builder's own code: a change to how the image is made makes a new image.
        "code": _code_fingerprint(),
        "plan": asdict(plan),
        "core_modules": CORE_MODULES,
        "cdrom_modules": CDROM_MODULES,
        "guest": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def _code_fingerprint() -> str:
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # One build per cache folder at a time (parallel test workers, CLI and server).
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(
    plan: _Plan, files: dict[str, bytes], key: str, work: Path, dest: Path, log: Log
) -> dict[str, object]:
    kernel_root = debs.download_and_extract(plan.kernel, work, log)
    version = plan.kernel.name.removeprefix("linux-image-")
    vmlinuz = kernel_root / "boot" / f"vmlinuz-{version}"
    if not vmlinuz.is_file():
        raise TinyImageError(f"{plan.kernel.name} has no boot/vmlinuz-{version}")
    moddir = modules.ensure_depmod(kernel_root, version)
    core, core_builtin = modules.load_order(moddir, CORE_MODULES)
    cdrom_all, cdrom_builtin = modules.load_order(moddir, CDROM_MODULES)
    cdrom = [m for m in cdrom_all if m not in core]
    log(f"kernel {version}: modules {' '.join(m.name for m in core)}")
    if core_builtin or cdrom_builtin:
        log(f"built into the kernel: {' '.join(core_builtin + cdrom_builtin)}")

    log("assembling the initramfs")
    tree = work / "rootfs"
    tree.mkdir()
    release = f"image={key}\nkernel={plan.kernel.name} {plan.kernel.version}\n"
    inputs = rootfs.RootfsInputs(
        busybox=debs.package_file(plan.busybox, "busybox", work, log),
        dropbear=debs.package_file(plan.dropbear, "dropbear", work, log),
        dropbearkey=debs.package_file(plan.dropbear, "dropbearkey", work, log),
        kernel_moddir=moddir,
        kernel_version=version,
        core_modules=core,
        cdrom_modules=cdrom,
        release=release,
        unpacked_roots=[work / p.name for p in (plan.busybox, plan.dropbear) if not p.installed],
    )
    rootfs.assemble(tree, inputs, files)
    initrd = work / "initrd.gz"
    write_initramfs(tree, initrd, rootfs.DEVICES)

    log("making the boot disk")
    cfg = work / "syslinux.cfg"
    cfg.write_bytes(files["syslinux.cfg"])
    disk.build_disk(work, {"vmlinuz": vmlinuz, "initrd.gz": initrd, "syslinux.cfg": cfg}, dest)
    return {
        "key": key,
        "kernel": f"{plan.kernel.name} {plan.kernel.version}",
        "busybox": plan.busybox.version,
        "dropbear": plan.dropbear.version,
        "modules": [m.name for m in core],
        "cdrom_modules": [m.name for m in cdrom],
        "builtin_modules": core_builtin + cdrom_builtin,
        "vmlinuz_bytes": vmlinuz.stat().st_size,
        "initrd_bytes": initrd.stat().st_size,
    }


def prune_builds(cache_dir: Path, keep: str) -> None:
    """Remove superseded builds but the newest few: another checkout of cloudlet (a branch, a CI
    clone) may be using its own build right now. Images already imported into a server are
    copies, so removing cached files breaks nothing else."""
    others: dict[str, float] = {}
    for old in cache_dir.glob(f"{IMAGE_PREFIX}*"):
        if old.stem != keep:
            others[old.stem] = max(others.get(old.stem, 0.0), old.stat().st_mtime)
    for stem in sorted(others, key=others.__getitem__, reverse=True)[KEEP_BUILDS - 1 :]:
        for old in cache_dir.glob(f"{stem}.*"):
            old.unlink(missing_ok=True)


def build_tiny_image(cache_dir: Path, *, force: bool = False, log: Log | None = None) -> Path:
    """Return the path of the tiny qcow2 image in ``cache_dir``, building it first if needed.

    An image whose inputs are unchanged is reused unless ``force``. The build happens in a temporary
    folder inside ``cache_dir`` and the finished image is renamed into place, so a failed or
    interrupted build leaves no image behind; concurrent callers wait for one build. Needs
    ``apt-get`` (the kernel is downloaded), dpkg, kmod, fdisk, dosfstools, mtools, syslinux and
    qemu-utils, and the Debian packages busybox-static and dropbear-bin (downloaded when not
    installed). Raises ``TinyImageError`` naming the failing command and its stderr.

    A JSON manifest beside the image (same name, ``.json``) records what went into it.
    """
    say = log or _quiet
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    files = rootfs.guest_files()
    plan = _resolve(cache_dir, say, fresh=force)
    key = cache_key(plan, files)
    dest = cache_dir / f"{IMAGE_PREFIX}{key}.qcow2"
    if dest.is_file() and not force:
        say(f"using cached image {dest}")
        return dest

    with _locked(cache_dir / ".tiny.lock"):
        if dest.is_file() and not force:  # another process built it while we waited
            say(f"using cached image {dest}")
            return dest
        # Holding the lock, no other build is running: leftovers of killed builds can go.
        for stale in cache_dir.glob(".build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        say(f"building tiny image {key} (kernel {plan.kernel.name} {plan.kernel.version})")
        with tempfile.TemporaryDirectory(prefix=".build-", dir=cache_dir) as tmp:
            work = Path(tmp)
            image = work / "image.qcow2"
            manifest = _build(plan, files, key, work, image, say)
            manifest["build_seconds"] = round(time.monotonic() - started, 1)
            manifest["image_bytes"] = image.stat().st_size
            manifest_file = work / "image.json"
            manifest_file.write_text(json.dumps(manifest, indent=2) + "\n")
            image.chmod(0o644)
            os.replace(manifest_file, dest.with_suffix(".json"))
            os.replace(image, dest)  # the image appearing is the commit point
        prune_builds(cache_dir, dest.stem)
        say(f"built {dest} ({manifest['image_bytes']} bytes) in {manifest['build_seconds']} s")
    return dest
