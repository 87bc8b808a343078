"""Segments of one run across several worker processes (``runtime.devices=N``).

Each worker is a plain ``python -m mvgen.fanout`` subprocess, not a multiprocessing child: it works whatever
the parent is (a joblib/loky worker, whose start method is ``loky``; a submitit job; a Ray worker; a
Slurm task), needs no torch.distributed port and does not import Lightning. Worker ``r`` of ``N`` gets the
pickled jobs ``r, r+N, ...`` and, on CUDA, one GPU (``CUDA_VISIBLE_DEVICES``); on CPU its share of threads.
It writes finished segments to the shared store; the parent then reads them all from the store exactly as
a single-process run would, so the bytes are identical. A segment that fails in a worker is left to the
parent's retry loop; a worker that dies (killed, out of memory) fails the run in one line, and the same
command resumes from the segments already in the store.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from mvgen.errors import MvgenError
from mvgen.store import FAULT_ENV, ArtifactStore
from mvgen.util import exception_line

log = logging.getLogger("mvgen")

Job = tuple[str, str, Callable[..., Any]]  # (stage, store key, picklable build(tmp_dir) callable)
RANK_ENV = "MVGEN_FANOUT_RANK"
FAULT_WORKER_ENV = "MVGEN_FAULT_WORKER"  # test hook: only this worker rank honours MVGEN_FAULT_KILL_AFTER


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a ``python -m mvgen...`` child: this process's, with this mvgen importable first
    (a Ray or submitit worker may run in another directory than the command that started it)."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in paths if p != package_root])
    env.update(extra or {})
    return env


def _worker_env(rank: int, devices: int, accelerator: str) -> dict[str, str]:
    extra = {RANK_ENV: str(rank)}
    if accelerator == "cuda":
        visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        extra["CUDA_VISIBLE_DEVICES"] = visible[rank] if rank < len(visible) else str(rank)
    else:  # N CPU workers share the cores instead of each starting one thread per core
        threads = str(max(1, (os.cpu_count() or 1) // devices))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            extra[name] = os.environ.get(name, threads)
    return child_env(extra)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def fan_out(store: ArtifactStore, jobs: list[Job], devices: int, accelerator: str = "cpu") -> set[str]:
    """Build every job's store entry using ``devices`` worker processes (one per device); returns the keys this
    call built (the others were built meanwhile by another run sharing the store)."""
    if not jobs:
        return set()
    workers = max(1, min(devices, len(jobs)))
    built: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="mvgen-fanout-") as tmp:
        procs = []
        for rank in range(workers):
            job_file = Path(tmp) / f"jobs_{rank}.pkl"
            job_file.write_bytes(pickle.dumps(jobs[rank::workers]))
            procs.append(subprocess.Popen([sys.executable, "-m", "mvgen.fanout", str(store.root), str(job_file)],
                                          env=_worker_env(rank, workers, accelerator)))
        codes = [proc.wait() for proc in procs]
        for rank in range(workers):
            done = Path(tmp) / f"jobs_{rank}.pkl.built"
            if done.is_file():
                built.update(done.read_text().split())
    dead = [(rank, code) for rank, code in enumerate(codes) if code != 0]
    if dead:
        stage = jobs[0][0]
        finished = sum(store.exists(s, k) for s, k, _ in jobs)
        which = ", ".join(f"worker {rank + 1}/{workers} {_describe_exit(code)}" for rank, code in dead)
        raise MvgenError(f"{stage}: {which}; {finished} of {len(jobs)} segments were finished and are kept in the "
                         "store; run the same command again to build the rest")
    return built


def fan_out_pending(store: ArtifactStore, stage: str, jobs: list[tuple[str, Any]], devices: int,
                    accelerator: str) -> set[str]:
    """Build the jobs (key, build) whose entries are not in the store yet across ``devices`` processes; returns
    the keys this run built (the caller then reads them from the store, and counts them as misses)."""
    waiting = [(stage, key, build) for key, build in jobs if store.get(stage, key) is None]
    log.info("%s: %d pending segments across %d %s processes", stage, len(waiting), min(devices, len(waiting)),
             accelerator)
    return fan_out(store, waiting, devices, accelerator)


def _worker(store_root: str, job_file: str) -> None:
    rank = os.environ.get(RANK_ENV, "0")
    if os.environ.get(FAULT_WORKER_ENV, rank) != rank:  # FAULT_WORKER_ENV counts from 0, like RANK_ENV
        os.environ.pop(FAULT_ENV, None)
    store = ArtifactStore(store_root)
    jobs: list[Job] = pickle.loads(Path(job_file).read_bytes())
    built = Path(job_file + ".built")
    for stage, key, build in jobs:
        try:
            if not store.get_or_build(stage, key, build).hit:
                with open(built, "a", encoding="utf-8") as handle:  # as it goes: a killed worker still reports
                    handle.write(key + "\n")
        except Exception as exc:  # noqa: BLE001 -- left to the parent's retry loop, which records failures
            print(f"mvgen: fan-out worker {int(rank) + 1}: {stage} {key[:12]} failed ({exception_line(exc)}); "
                  "the main process retries it", file=sys.stderr)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
