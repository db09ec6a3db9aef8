"""The bootable disk: MBR + one FAT partition with syslinux, the kernel and the initramfs.

Made without mounting anything or using loop devices, so it needs no privileges: the partition is
a separate file (``mkfs.vfat``, ``mcopy``, ``syslinux --install``, which works through mtools), and
is then copied into the disk file at its offset behind an ``sfdisk`` partition table and syslinux's
MBR boot code. ``qemu-img convert`` turns the raw disk into qcow2.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cloudlet.tinyimage.proc import TinyImageError, run

MIB = 1024 * 1024
SECTOR = 512
PART_START = MIB  # first partition at 1 MiB, sector 2048
MIN_PART_SIZE = 32 * MIB
MBR_BOOT_CODE = 440  # bytes of boot code before the disk signature and partition table
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
VOLUME_ID = "434c4454"  # fixed FAT serial ("CLDT"), so the same inputs give the same image
VOLUME_LABEL = "CLOUDLET"


def _partition_size(payload: int) -> int:
    # Room for the files plus FAT overhead and slack, whole MiB.
    return max(MIN_PART_SIZE, (payload * 5 // 4 + 4 * MIB + MIB - 1) // MIB * MIB)


def make_fat_partition(dest: Path, files: dict[str, Path]) -> None:
    """A FAT16 file system image holding ``files`` (name on the disk -> host file) and syslinux."""
    size = _partition_size(sum(p.stat().st_size for p in files.values()))
    with dest.open("wb") as f:
        f.truncate(size)
    # -h: hidden sectors = the partition's start, which the boot sector uses to find itself.
    run(["mkfs.vfat", "-F", "16", "-n", VOLUME_LABEL, "-i", VOLUME_ID, "-h", str(PART_START // SECTOR), dest])
    for name, src in files.items():
        run(["mcopy", "-i", dest, "-o", src, f"::{name}"])
    run(["syslinux", "--install", dest])


def make_disk(dest: Path, partition: Path) -> None:
    """A raw disk: MBR with syslinux boot code, ``partition`` as its one bootable FAT partition."""
    if not SYSLINUX_MBR.is_file():
        raise TinyImageError(f"{SYSLINUX_MBR} is missing (Debian package syslinux-common)")
    part_size = partition.stat().st_size
    with dest.open("wb") as f:
        f.truncate(PART_START + part_size)
    table = (
        "label: dos\n"
        "label-id: 0x" + VOLUME_ID + "\n"
        "unit: sectors\n\n"
        f"start={PART_START // SECTOR}, size={part_size // SECTOR}, type=e, bootable\n"
    )
    run(["sfdisk", "--no-reread", "--no-tell-kernel", "--wipe", "never", dest], stdin=table)
    with dest.open("r+b") as disk:
        disk.seek(PART_START)
        with partition.open("rb") as part:
            shutil.copyfileobj(part, disk, MIB)
        disk.seek(0)
        disk.write(SYSLINUX_MBR.read_bytes()[:MBR_BOOT_CODE])


def to_qcow2(raw: Path, dest: Path) -> None:
    """Convert the raw disk to a qcow2 image."""
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, dest])


def build_disk(workdir: Path, files: dict[str, Path], dest: Path) -> None:
    """Make the bootable qcow2 ``dest`` from ``files`` (FAT name -> host file), working in ``workdir``."""
    partition = workdir / "part.fat"
    raw = workdir / "disk.raw"
    make_fat_partition(partition, files)
    make_disk(raw, partition)
    to_qcow2(raw, dest)
