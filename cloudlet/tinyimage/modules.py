"""Kernel modules for the guest, in the order busybox ``insmod`` must load them.

busybox insmod does not resolve dependencies, so the builder does it here from ``modules.dep``
(made by ``depmod`` when the kernel package ships none) and writes the order into the image.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudlet.tinyimage.proc import TinyImageError, run

_COMPRESSED = (".ko.xz", ".ko.gz", ".ko.zst")


@dataclass(frozen=True)
class Module:
    """A loadable module: its name (``virtio_net``) and path under ``/lib/modules/<version>``."""

    name: str
    path: str


def module_name(path: str) -> str:
    """``kernel/drivers/char/hw_random/virtio-rng.ko.xz`` -> ``virtio_rng``."""
    base = path.rsplit("/", 1)[-1]
    for suffix in (*_COMPRESSED, ".ko"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def ensure_depmod(base: Path, version: str) -> Path:
    """Run ``depmod`` on an unpacked kernel package (root ``base``) unless it has ``modules.dep``."""
    moddir = base / "lib" / "modules" / version
    if not moddir.is_dir():
        raise TinyImageError(f"kernel package has no lib/modules/{version}")
    if not (moddir / "modules.dep").is_file():
        run(["depmod", "-b", base, version])
    return moddir


def _read_lines(path: Path) -> Iterable[str]:
    if path.is_file():
        yield from (line.strip() for line in path.read_text().splitlines() if line.strip())


def load_order(moddir: Path, wanted: Sequence[str]) -> tuple[list[Module], list[str]]:
    """Modules to load for ``wanted``, dependencies first, and which wanted ones are built in.

    Raises ``TinyImageError`` for a module the kernel has neither as a file nor built in.
    """
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in _read_lines(moddir / "modules.dep"):
        path, _, rest = line.partition(":")
        deps[module_name(path)] = (path, [module_name(d) for d in rest.split()])
    builtin = {module_name(line) for line in _read_lines(moddir / "modules.builtin")}

    order: list[Module] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        path, needs = deps[name]
        for dep in needs:
            visit(dep)
        order.append(Module(name, path))

    built_in: list[str] = []
    for want in wanted:
        name = module_name(want)
        if name in deps:
            visit(name)
        elif name in builtin:
            built_in.append(name)
        else:
            raise TinyImageError(f"kernel has no module {name!r}, neither loadable nor built in")
    return order, built_in


def install_modules(moddir: Path, modules: Iterable[Module], dest: Path) -> list[Module]:
    """Copy ``modules`` under ``dest`` (the guest's ``/lib/modules/<version>``), uncompressed so any
    insmod loads them; return them with their new paths."""
    installed = []
    for mod in modules:
        src = moddir / mod.path
        rel = mod.path
        for suffix in _COMPRESSED:
            if rel.endswith(suffix):
                rel = rel[: -len(suffix)] + ".ko"
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if mod.path.endswith(".ko.xz"):
            target.write_bytes(lzma.decompress(src.read_bytes()))
        elif mod.path.endswith(".ko.gz"):
            target.write_bytes(gzip.decompress(src.read_bytes()))
        elif mod.path.endswith(".ko.zst"):
            run(["zstd", "-q", "-d", "-f", "-o", target, src])
        else:
            shutil.copyfile(src, target)
        installed.append(Module(mod.name, rel))
    return installed


def order_file(modules: Iterable[Module]) -> str:
    """The guest's list format: one ``name path`` line per module, in load order."""
    return "".join(f"{m.name} {m.path}\n" for m in modules)
