"""Debian packages as the tiny image's only source: resolve versions, download, unpack.

A package installed on the host is used from the host (its files listed by dpkg); any other is
fetched with ``apt-get download`` and unpacked with ``dpkg -x``. ``apt-get update`` runs only when
a look-up or download fails, which is what missing or stale package lists look like.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cloudlet.tinyimage.proc import TinyImageError, run

T = TypeVar("T")
Log = Callable[[str], None]


@dataclass(frozen=True)
class Package:
    """One Debian package at the version the image is built from."""

    name: str
    version: str
    installed: bool  # True: taken from the host's installed copy, not downloaded


def installed_version(name: str) -> str | None:
    """The version of ``name`` installed on the host, or None."""
    try:
        out = run(["dpkg-query", "-W", "-f", "${db:Status-Status} ${Version}", name])
    except TinyImageError:
        return None
    status, _, version = out.strip().partition(" ")
    return version if status == "installed" and version else None


def _candidate_version(name: str) -> str:
    out = run(["apt-cache", "policy", name])
    match = re.search(r"^\s*Candidate:\s*(\S+)", out, re.MULTILINE)
    if not match or match.group(1) == "(none)":
        raise TinyImageError(f"apt has no candidate version of {name}")
    return match.group(1)


def _kernel_dependency(meta: str) -> str:
    out = run(["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-enhances", meta])
    # The metapackage depends on exactly one versioned image, e.g. linux-image-6.1.0-56-cloud-amd64.
    flavour = meta.removeprefix("linux-image-")
    pattern = rf"^\s*Depends:\s*(linux-image-\d[\w.+-]*-{re.escape(flavour)})\s*$"
    match = re.search(pattern, out, re.MULTILINE)
    if not match:
        raise TinyImageError(f"cannot find the versioned kernel package that {meta} depends on")
    return match.group(1)


def with_apt_update(action: Callable[[], T], log: Log) -> T:
    """Run ``action``; if it fails, refresh the package lists once and try again."""
    try:
        return action()
    except TinyImageError as first:
        log(f"apt look-up failed ({first.detail[:200]}); running apt-get update and retrying")
        if os.geteuid() != 0:
            raise TinyImageError(
                f"{first.detail} (apt package lists may be missing: run 'apt-get update' as root)",
                cmd=first.cmd,
                stderr=first.stderr,
            ) from first
        run(["apt-get", "update"])
        return action()


def resolve_kernel(meta: str, log: Log) -> Package:
    """The versioned kernel image package behind ``meta`` (e.g. linux-image-cloud-amd64)."""

    def resolve() -> Package:
        name = _kernel_dependency(meta)
        return Package(name, _candidate_version(name), installed=False)

    return with_apt_update(resolve, log)


def resolve_tool(name: str, log: Log) -> Package:
    """``name`` as installed on the host, else its candidate version for download."""
    version = installed_version(name)
    if version is not None:
        return Package(name, version, installed=True)
    return with_apt_update(lambda: Package(name, _candidate_version(name), installed=False), log)


def _depends(name: str) -> list[str]:
    out = run(["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-enhances", name])
    # "  Depends: libc6" or "  |Depends: a" (an alternative); "<name>" is a virtual package.
    return re.findall(r"^\s*\|?Depends:\s*([^\s<>]+)\s*$", out, re.MULTILINE)


def _fetch(pkg: Package, workdir: Path, log: Log) -> Path:
    debs = workdir / "debs"
    debs.mkdir(exist_ok=True)

    def download() -> Path:
        run(["apt-get", "download", f"{pkg.name}={pkg.version}"], cwd=debs)
        found = sorted(debs.glob(f"{pkg.name}_*.deb"))
        if not found:
            raise TinyImageError(f"apt-get download left no .deb for {pkg.name}")
        return found[0]

    log(f"downloading {pkg.name} {pkg.version}")
    return with_apt_update(download, log)


def download_and_extract(pkg: Package, workdir: Path, log: Log, *, libraries: bool = False) -> Path:
    """Download ``pkg`` at its version and unpack it into ``workdir/<name>``; return that folder.

    With ``libraries``, its dependencies that the host lacks are unpacked there too, so the
    package's programs find their shared libraries (see ``library_dirs``).
    """
    root = workdir / pkg.name
    run(["dpkg", "-x", _fetch(pkg, workdir, log), root])
    if libraries:
        for dep in with_apt_update(lambda: _depends(pkg.name), log):
            if installed_version(dep) is None:
                dep_pkg = Package(dep, _candidate_version(dep), installed=False)
                run(["dpkg", "-x", _fetch(dep_pkg, workdir, log), root])
    return root


def library_dirs(root: Path) -> list[Path]:
    """The shared-library folders of an unpacked package tree."""
    dirs = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib", "usr/lib")
    return [root / d for d in dirs if (root / d).is_dir()]


def package_file(pkg: Package, basename: str, workdir: Path, log: Log) -> Path:
    """The file called ``basename`` in a bin or sbin folder of ``pkg``: on the host if installed, else
    from the package downloaded (with its missing libraries) into ``workdir/<name>``, once."""
    if pkg.installed:
        candidates = [Path(p) for p in run(["dpkg-query", "-L", pkg.name]).splitlines()]
    else:
        root = workdir / pkg.name
        if not root.is_dir():
            root = download_and_extract(pkg, workdir, log, libraries=True)
        candidates = list(root.rglob(basename))
    for path in candidates:
        if path.name == basename and path.parent.name in ("bin", "sbin") and path.is_file():
            return path
    raise TinyImageError(f"package {pkg.name} has no bin/{basename}")
