"""Segments of one run across several processes with Lightning Fabric (``runtime.devices=N``).

Fabric starts N processes with the spawn launcher (``fabric.launch(fn)``: Fabric's default launcher
re-executes ``sys.argv``, which would start N Hydra runs). Each process loads its models once, takes every
N-th pending job, and writes finished segments to the shared store; the parent then reads them all from
the store exactly as a single-process run would, so the results are identical.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from mvgen.store import ArtifactStore

log = logging.getLogger("mvgen")

Job = tuple[str, str, Callable[..., Any]]  # (stage, store key, picklable build(tmp_dir) callable)


def _work(fabric: Any, store_root: str, jobs: list[Job]) -> int:
    store = ArtifactStore(store_root)
    mine = jobs[fabric.global_rank::fabric.world_size]
    for stage, key, build in mine:
        store.get_or_build(stage, key, build)
    return len(mine)


def fan_out(store: ArtifactStore, jobs: list[Job], devices: int, accelerator: str = "cpu") -> None:
    """Build every job's store entry using ``devices`` processes (one per device)."""
    if not jobs:
        return
    if devices <= 1:
        for stage, key, build in jobs:
            store.get_or_build(stage, key, build)
        return
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator=accelerator, devices=devices, strategy="ddp_spawn")
    fabric.launch(_work, str(store.root), jobs)


def fan_out_pending(store: ArtifactStore, stage: str, jobs: list[tuple[str, Any]], devices: int,
                    accelerator: str) -> set[str]:
    """Build the jobs (key, build) whose entries are not in the store yet across ``devices`` processes; returns
    their keys (computed by this run, though the caller then reads them from the store)."""
    waiting = [(stage, key, build) for key, build in jobs if store.get(stage, key) is None]
    log.info("%s: %d pending segments across %d %s processes", stage, len(waiting), devices, accelerator)
    fan_out(store, waiting, devices, accelerator)
    return {key for _, key, _ in waiting}
