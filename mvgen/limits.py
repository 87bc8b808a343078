"""Limits on every count, size and rate, checked when the config is composed (before anything runs).

``LIMITS`` is the documented range of each setting (the README's table is this one). A key that is absent
from the chosen option (``frames.steps`` with storyboard frames) is skipped. ``runtime.devices`` is also held
to the devices this machine has: visible GPUs for CUDA; for CPU workers, twice the CPU count
(``CPU_WORKERS_PER_CORE``). A run whose work is far beyond the usual (``LARGE_RUN`` times the default
preview's) must say ``runtime.confirm_large=true``.
"""

from __future__ import annotations

import os
from typing import Any

from mvgen.errors import MvgenError

LIMITS: dict[str, tuple[float, float]] = {
    "seed": (0, 2**32 - 1),
    "runtime.devices": (1, 64),
    "runtime.nodes": (1, 1024),
    "runtime.node": (0, 1023),
    "runtime.retry.frames.attempts": (1, 10),
    "runtime.retry.render.attempts": (1, 10),
    "runtime.retry.frames.backoff_seconds": (0, 600),
    "runtime.retry.render.backoff_seconds": (0, 600),
    "runtime.retry.frames.timeout_seconds": (0, 86400),
    "runtime.retry.render.timeout_seconds": (0, 86400),
    "music.sample_rate": (16000, 192000),
    "music.duration": (5, 600),
    "music.steps": (1, 200),
    "segment.min_seconds": (0.2, 60),
    "segment.target_seconds": (0.2, 60),
    "segment.max_seconds": (0.2, 60),
    "frames.candidates": (1, 16),
    "frames.batch_size": (1, 16),
    "frames.steps": (1, 200),
    "frames.width": (64, 4096),
    "frames.height": (64, 4096),
    "render.fps": (1, 120),
    "render.width": (32, 4096),
    "render.height": (32, 4096),
    "render.frame_step": (1, 64),
    "render.max_frames": (1, 1025),
    "render.crf": (0, 51),
    "render.clip_candidates": (1, 8),
    "render.sync_rerolls": (0, 5),
    "render.sync_max_offset": (0, 25),
    "render.max_sequence_length": (1, 4096),
    "assemble.crf": (0, 51),
    "assemble.audio_bitrate": (32000, 512000),
}
LARGE_RUN = 10.0
DEFAULT_WORK = 4 * 1 * 960 * 544  # candidates x clip candidates x pixels of the default preview
DEFAULT_TARGET_SECONDS = 5.0  # the default planner's clip length: shorter clips mean more of them
# CPU workers are processes, not hardware: two per core lets a 2-core machine (CI) run the 3-worker split
# the tests check, while each worker's full model copy keeps a higher count from being worth it.
CPU_WORKERS_PER_CORE = 2


def _get(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        if not hasattr(node, "get") or part not in node:
            return None
        node = node[part]
    return node


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def visible_devices(accelerator: str) -> int:
    """How many ``runtime.devices`` this machine allows: visible GPUs, or CPU worker processes."""
    if accelerator == "cuda":
        try:
            import torch

            return int(torch.cuda.device_count())
        except ImportError:
            return 0
    return CPU_WORKERS_PER_CORE * (os.cpu_count() or 1)


def check_limits(cfg: Any, this_machine: bool = True) -> None:
    """One line naming the first setting outside its range, with the range; then devices and run size.
    ``this_machine=False`` (the command line, which may send the jobs to Slurm or Ray nodes) leaves the
    devices check to the machine that runs the job."""
    for key, (low, high) in LIMITS.items():
        value = _get(cfg, key)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not low <= value <= high:
            raise MvgenError(f"{key}={_number(value)} is outside its range {_number(low)}..{_number(high)}; choose a value in it")
    store = str(_get(cfg, "store.root") or "").strip()
    if not store:
        raise MvgenError("store.root is empty; give it a folder, e.g. store.root=outputs/store")
    runtime = cfg.get("runtime") if hasattr(cfg, "get") else None
    if this_machine and runtime is not None and int(runtime.get("devices", 1)) > 1:
        accelerator = str(runtime.get("accelerator", "auto"))
        if accelerator == "auto":
            accelerator = "cuda" if str(runtime.get("device", "cpu")).startswith("cuda") else "cpu"
        have = visible_devices(accelerator)
        if int(runtime.devices) > have:
            what = "GPU(s)" if accelerator == "cuda" else f"CPU worker(s) ({CPU_WORKERS_PER_CORE} per core)"
            raise MvgenError(f"runtime.devices={runtime.devices} but this machine has room for {have} {what}; "
                             f"use at most {have}")
    nodes, node = _get(cfg, "runtime.nodes"), _get(cfg, "runtime.node")
    if isinstance(nodes, int) and isinstance(node, int) and node >= nodes:
        raise MvgenError(f"runtime.node={node} but runtime.nodes={nodes}; number the nodes 0..{nodes - 1}")
    clips_per_default = DEFAULT_TARGET_SECONDS / max(float(_get(cfg, "segment.target_seconds") or 5.0), 0.2)
    work = ((_get(cfg, "frames.candidates") or 4) * (_get(cfg, "render.clip_candidates") or 1)
            * (_get(cfg, "render.width") or 960) * (_get(cfg, "render.height") or 544) * max(clips_per_default, 1.0))
    if work > LARGE_RUN * DEFAULT_WORK and not bool(_get(cfg, "runtime.confirm_large")):
        raise MvgenError(f"this run is {work / DEFAULT_WORK:.0f}x the default preview's work (frames.candidates x "
                         "render.clip_candidates x render size x clips per second); add runtime.confirm_large=true "
                         "to go ahead")
