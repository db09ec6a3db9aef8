"""The tiny image cache keeps the newest few builds, so checkouts of other versions (a branch, a CI
clone) running at the same time keep theirs."""

from __future__ import annotations

import os
from pathlib import Path

from cloudlet.tinyimage.builder import KEEP_BUILDS, prune_builds


def test_superseded_builds_go_but_the_newest_few_stay(tmp_path: Path) -> None:
    stems = [f"tiny-{n:016x}" for n in range(KEEP_BUILDS + 2)]
    for age, stem in enumerate(stems):  # stems[0] is the newest, stems[-1] the oldest
        for suffix in (".qcow2", ".json"):
            path = tmp_path / (stem + suffix)
            path.write_text("x")
            os.utime(path, (1_000_000 - age, 1_000_000 - age))
    (tmp_path / ".tiny-plan.json").write_text("{}")
    prune_builds(tmp_path, keep=stems[2])
    left = sorted(p.name for p in tmp_path.iterdir())
    others = [s for s in stems if s != stems[2]]
    kept = {stems[2], *others[: KEEP_BUILDS - 1]}  # the new one, and the newest others
    assert left == sorted([".tiny-plan.json", *(s + x for s in kept for x in (".json", ".qcow2"))])
