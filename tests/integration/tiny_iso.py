"""A bootable installer-like ISO made of the tiny guest's kernel and initramfs, booted by ISOLINUX
(El Torito, no emulation), and the tiny guest's raw disk that such an "installer" writes out.

The kernel and initramfs are read out of the cached tiny image (its FAT partition starts at 1 MiB)
with mtools, so no new download is needed. Lives with the tests, not in ``cloudlet.tinyimage``, whose
source files are part of the tiny image's cache key."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pycdlib

ISOLINUX_BIN = Path("/usr/lib/ISOLINUX/isolinux.bin")  # Debian package isolinux
LDLINUX_C32 = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")  # Debian package syslinux-common
PART_OFFSET = 1024 * 1024  # where the tiny disk's FAT partition starts
# Marks a guest that was booted from the ISO: it is on the kernel command line, in /proc/cmdline.
ISO_MARK = "cloudlet.booted_from=iso"
CONFIG = f"""SERIAL 0 115200
DEFAULT tiny
PROMPT 0
TIMEOUT 0
LABEL tiny
  KERNEL /ISOLINUX/VMLINUZ
  INITRD /ISOLINUX/INITRD.GZ
  APPEND console=tty0 console=ttyS0,115200n8 panic=10 {ISO_MARK}
"""


def tiny_raw_disk(tiny_qcow2: Path, dest: Path) -> Path:
    """The tiny image as a raw disk (MBR, boot code, FAT partition)."""
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(tiny_qcow2), str(dest)], check=True
    )
    return dest


def build_tiny_iso(raw_disk: Path, dest: Path, workdir: Path) -> Path:
    """An ISO 9660 image that boots the tiny guest from CD (isolinux), with ``ISO_MARK`` on its
    kernel command line."""
    for name in ("vmlinuz", "initrd.gz"):
        subprocess.run(
            ["mcopy", "-n", "-i", f"{raw_disk}@@{PART_OFFSET}", f"::{name}", str(workdir / name)], check=True
        )
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident="CLOUDLET_TINY")
    try:
        iso.add_directory("/ISOLINUX")
        files = {
            "/ISOLINUX/ISOLINUX.BIN;1": ISOLINUX_BIN.read_bytes(),
            "/ISOLINUX/LDLINUX.C32;1": LDLINUX_C32.read_bytes(),
            "/ISOLINUX/ISOLINUX.CFG;1": CONFIG.encode(),
            "/ISOLINUX/VMLINUZ;1": (workdir / "vmlinuz").read_bytes(),
            "/ISOLINUX/INITRD.GZ;1": (workdir / "initrd.gz").read_bytes(),
        }
        for path, data in files.items():
            iso.add_fp(io.BytesIO(data), len(data), path)
        # isolinux.bin needs the boot info table patched in and 4 sectors loaded by the BIOS.
        iso.add_eltorito(
            "/ISOLINUX/ISOLINUX.BIN;1",
            bootcatfile="/ISOLINUX/BOOT.CAT;1",
            boot_load_size=4,
            boot_info_table=True,
            media_name="noemul",
        )
        iso.write(str(dest))
    finally:
        iso.close()
    return dest
