"""Benchmark (not a test): the README's 4-job sweep on the joblib launcher, 1 job at a time vs 2 at a time.

Each setting runs in a fresh temporary directory with its own empty store, so each pays for the shared
upstream work (song, alignment, plan, frames) once and for 4 renders. Prints wall times, the speed-up,
and the load average before each run (other work on the machine skews the figures).

    python bench/bench_sweep.py [extra overrides...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ["render.zoom=0.05,0.1,0.2,0.3"]


def sweep_seconds(n_jobs: int, extra: list[str]) -> tuple[float, list[float]]:
    """The sweep's wall time, and each job's own wall time (from its manifest)."""
    with tempfile.TemporaryDirectory(prefix="mvgen-bench-sweep-") as tmp:
        args = ["-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}", "runtime.progress=false",
                f"store.root={Path(tmp) / 'store'}", *SWEEP, *extra]
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "mvgen", *args], cwd=tmp, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"mvgen {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
        compare = next(Path(tmp).glob("outputs/multirun/*/*/compare.json"))
        return elapsed, [job["wall_seconds"] for job in json.loads(compare.read_text())["jobs"]]


def main() -> None:
    extra = sys.argv[1:]
    print(f"{os.cpu_count()} CPUs; sweep: {' '.join(SWEEP + extra)}")
    times = {}
    for n_jobs in (1, 2):
        load = os.getloadavg()[0]
        times[n_jobs], jobs = sweep_seconds(n_jobs, extra)
        print(f"n_jobs={n_jobs}: {times[n_jobs]:6.1f} s  (1-minute load average before: {load:.2f}); "
              f"jobs: {', '.join(f'{s:.1f}' for s in jobs)} s")
    print(f"speed-up with 2 jobs at a time: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
