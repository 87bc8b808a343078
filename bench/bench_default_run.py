"""Benchmark (not a test): the default run, its cached rerun, and `mvgen --help`.

Prints wall times and ratios. Targets (issue 2): default run under 120 s on 2 cores; cached rerun
under 5 % of it; --help well under 2 s. Runs in a fresh temporary directory with its own store.

    python bench/bench_default_run.py [extra overrides...]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(args: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mvgen", *args], cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"mvgen {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def main() -> None:
    extra = sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="mvgen-bench-") as tmp:
        cwd = Path(tmp)
        help_seconds, _ = timed(["--help"], cwd)
        first, out = timed(["runtime.progress=false", *extra], cwd)
        second, _ = timed(["runtime.progress=false", *extra], cwd)
        run_dir = Path(re.search(r"^mvgen: (\S+)/master\.mp4", out, re.MULTILINE).group(1))
        manifest = json.loads((run_dir / "manifest.json").read_text())
        song_seconds = manifest["master"]["duration"]
        print(f"mvgen --help:           {help_seconds:6.2f} s")
        print(f"default run:            {first:6.2f} s  (song {song_seconds:.1f} s, "
              f"{manifest['master']['frames']} frames, target < 120 s)")
        print(f"cached rerun:           {second:6.2f} s  ({100 * second / first:.1f} % of the first run, target < 5 %)")
        print("stage wall times (first run):")
        for name, stage in manifest["stages"].items():
            print(f"  {name:9s} {stage['seconds']:6.2f} s  misses {stage['misses']}")
        annotate = manifest["stages"]["annotate"]["seconds"]
        print(f"alignment real-time factor (incl. model load): {annotate / song_seconds:.3f}")
        render = manifest["stages"]["render"]["seconds"]
        print(f"animatic render: {manifest['master']['frames'] / render:.0f} frames/s")


if __name__ == "__main__":
    main()
