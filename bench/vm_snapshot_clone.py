"""Clone benchmark: linked vs full clones of the same VM, through cloudlet and as raw qemu-img calls,
measured side by side in one run, variants interleaved round by round (these machines are noisy).

The image is the tiny guest made heavier with ``--image-data-mb`` of data past its boot partition
(a real cloud image holds hundreds of MB), so that what a full clone copies and a linked clone does
not is visible. The source VM is created, then stopped. Each round clones it
(stopped clones: the copy is what is measured, not a boot) four ways, A, B, C, D:
  cloudlet linked   POST /instances/{vm}/clone {mode: linked, start: false}, waited on
  cloudlet full     the same with mode full
  raw linked        qemu-img convert -B <image> of the VM's disk (what a linked clone copies)
  raw full          qemu-img convert of the VM's disk (what a full clone copies)
and reports medians and the ratios full/linked (the point of linked clones) and cloudlet/raw (what
cloudlet adds: name, address, seed, definition, bookkeeping). It reports; it never fails.
Usage: .venv/bin/python bench/vm_snapshot_clone.py [--rounds 5] [--image-data-mb 512] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
from vm_lifecycle import Server, remove_leftovers

from cloudlet.client import Client
from cloudlet.tinyimage import build_tiny_image

GIB = 1024**3


def heavy_image(tiny: Path, dest: Path, data_mb: int) -> Path:
    """The tiny image grown to hold ``data_mb`` MiB of data past its first GiB (boot untouched)."""
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(tiny), str(dest)], check=True)
    if data_mb:
        size = GIB + data_mb * 1024**2
        subprocess.run(["qemu-img", "resize", "-q", str(dest), str(size)], check=True)
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {GIB} {data_mb}M", str(dest)],
            check=True,
            capture_output=True,
        )
    return dest


def timed(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def cloudlet_clone(c: Client, source: str, name: str, mode: str) -> float:
    """Seconds from POST .../clone to its operation succeeded; then the clone is deleted."""
    try:
        seconds = timed(lambda: _check(c.clone_instance(source, name, mode=mode, start=False)))
        return seconds
    finally:
        with contextlib.suppress(Exception):
            c.delete_instance(name, force=True)


def _check(op: dict[str, Any]) -> None:
    if op["status"] != "succeeded":
        raise RuntimeError(f"clone failed: {op.get('error')}")


def raw_convert(disk: Path, dest: Path, backing: Path | None) -> float:
    """Seconds of the qemu-img copy a clone does; then the copy is deleted."""
    args = ["qemu-img", "convert", "-q", "-O", "qcow2"]
    if backing is not None:
        args += ["-B", str(backing), "-F", "qcow2"]
    try:
        return timed(lambda: subprocess.run([*args, str(disk), str(dest)], check=True))
    finally:
        dest.unlink(missing_ok=True)


def measure(server: Server, rounds: int, image: Path) -> dict[str, Any]:
    samples: dict[str, list[float]] = {
        "cloudlet_linked": [],
        "cloudlet_full": [],
        "raw_linked": [],
        "raw_full": [],
    }
    with server.client() as c:
        c.import_image("heavy", str(image))
        c.create_instance(name="source", image="heavy", memory=128, disk=2)
        c.action("source", "stop")
        source_id = c.instance("source")["id"]
        image_file = next((server.data_dir / "images").glob("*.qcow2"))
        disk = server.data_dir / "instances" / source_id / "disk.qcow2"
        scratch = server.data_dir / "raw.qcow2"
        cloudlet_clone(c, "source", "warm-l", "linked")  # first-use costs stay unmeasured
        cloudlet_clone(c, "source", "warm-f", "full")
        for n in range(rounds):
            samples["cloudlet_linked"].append(cloudlet_clone(c, "source", f"linked{n}", "linked"))
            samples["cloudlet_full"].append(cloudlet_clone(c, "source", f"full{n}", "full"))
            samples["raw_linked"].append(raw_convert(disk, scratch, image_file))
            samples["raw_full"].append(raw_convert(disk, scratch, None))
        c.delete_instance("source", force=True)
    return samples


def report(samples: dict[str, list[float]], data_mb: int, image: Path) -> dict[str, Any]:
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"image: tiny guest + {data_mb} MiB of data ({image.stat().st_size / 1024**2:.0f} MiB file)")
    print(f"{'':18}{'linked':>12}{'full':>12}{'full/linked':>14}")
    for who in ("cloudlet", "raw"):
        linked, full = med[f"{who}_linked"], med[f"{who}_full"]
        print(f"{who + ' clone':18}{linked * 1000:>10.0f}ms{full * 1000:>10.0f}ms{full / linked:>13.1f}x")
    ratios = {
        "full_over_linked_cloudlet": med["cloudlet_full"] / med["cloudlet_linked"],
        "full_over_linked_raw": med["raw_full"] / med["raw_linked"],
        "cloudlet_over_raw_linked": med["cloudlet_linked"] / med["raw_linked"],
        "cloudlet_over_raw_full": med["cloudlet_full"] / med["raw_full"],
    }
    print(
        f"cloudlet/raw: linked {ratios['cloudlet_over_raw_linked']:.1f}x "
        f"(+{(med['cloudlet_linked'] - med['raw_linked']) * 1000:.0f} ms), "
        f"full {ratios['cloudlet_over_raw_full']:.2f}x "
        f"(+{(med['cloudlet_full'] - med['raw_full']) * 1000:.0f} ms)"
    )
    return {"samples_s": samples, "median_s": med, "ratios": ratios, "image_data_mb": data_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description="cloudlet clone benchmark (see the module doc)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument(
        "--image-data-mb", type=int, default=512, help="data added to the image (default 512)"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args()
    if args.rounds < 1 or args.image_data_mb < 0:
        parser.error("--rounds must be at least 1 and --image-data-mb at least 0")
    cache = Path(os.environ.get("CLOUDLET_CACHE_DIR", "~/.cache/cloudlet")).expanduser()
    tiny = build_tiny_image(cache / "tiny")
    work = Path(tempfile.mkdtemp(prefix="cloudlet-bench-image-", dir="/var/tmp"))
    work.chmod(0o755)
    conn = libvirt.open("qemu:///system")
    server = Server(import_dir=work)
    try:
        image = heavy_image(tiny, work / "heavy.qcow2", args.image_data_mb)
        server.start()
        summary = report(measure(server, args.rounds, image), args.image_data_mb, image)
    finally:
        server.stop()
        remove_leftovers(conn, server)
        shutil.rmtree(server.data_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        conn.close()
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
