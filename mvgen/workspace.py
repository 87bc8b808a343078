"""The ground the coordinator works on: the artifact store, the run directory, and what a run keeps account
of (stage times and store hits, output hashes, failed segments).

``get`` takes a store entry or builds it; ``place`` copies its files into the run directory; ``stage`` times a
stage and frees its models when it ends; ``per_segment`` builds one entry per segment (fanned out across
processes when asked, each under the retry policy, a failed segment recorded and skipped).
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from tqdm import tqdm

from mvgen.manifest import StageStats
from mvgen.retry import RetryPolicy, attempt
from mvgen.store import ArtifactStore, Entry

log = logging.getLogger("mvgen")

Job = tuple[dict[str, Any], str, Callable[[Path], Any]]  # (segment, store key, build)


@dataclass
class Workspace:
    store: ArtifactStore
    run_dir: Path
    progress: bool = True
    devices: int = 1  # worker processes for per-segment work (mvgen/fanout.py)
    accelerator: str = "cpu"
    retry: dict[str, dict[str, float]] = field(default_factory=dict)  # per stage: attempts, backoff, timeout
    stats: dict[str, StageStats] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # run-dir relative path -> sha256
    failures: list[dict[str, Any]] = field(default_factory=list)
    nodes: int = 1  # machines sharing this run through the store (runtime.nodes); this one is runtime.node
    node: int = 0

    def get(self, stage: str, config: Any, inputs: dict[str, Any], build: Callable[[Path], Any]) -> Entry:
        return self.store.get_or_build(stage, self.store.key(stage, config, inputs), build)

    def place(self, entry: Entry, name: str, dest: str | None = None) -> Path:
        """Copy one entry file into the run directory (at ``dest``, default its own name); record its hash."""
        dest = dest or name
        path = entry.copy_to(name, self.run_dir / dest)
        self.outputs[dest] = entry.files[name]
        return path

    def place_all(self, entry: Entry) -> None:
        for name in entry.files:
            self.place(entry, name)

    def record(self, dest: str, path: Path) -> str:
        """A file made straight in the run directory (not from the store): record and return its hash."""
        from mvgen.util import sha256_file

        self.outputs[dest] = sha256_file(path)
        return self.outputs[dest]

    @contextmanager
    def stage(self, name: str) -> Iterator[StageStats]:
        from mvgen.models import release_models

        stats = self.stats.setdefault(name, StageStats())
        start = time.perf_counter()
        try:
            yield stats
        finally:
            release_models()  # a stage's models leave the GPU before the next stage loads its own
            stats.seconds += time.perf_counter() - start
            log.info("%-9s %6.2f s  hits %d  misses %d", name, stats.seconds, stats.hits, stats.misses)

    def per_segment(self, stage: str, jobs: list[Job], backend: Any,
                    stats: StageStats) -> Iterator[tuple[dict[str, Any], Entry]]:
        """One loop for frames and render: fan out across processes if asked, then each segment's entry under
        the retry policy (a segment that still fails is recorded and skipped; the others go on). With
        ``nodes`` > 1 the workers build this node's share (every nodes-th segment) first; the loop then takes
        the other nodes' segments from the store, waits on the ones they are building, and builds any that no
        node has started, so a slow or lost node delays the run but does not break it."""
        fanned: set[str] = set()
        if self.devices > 1 or self.nodes > 1:
            from mvgen.fanout import fan_out_pending

            share = jobs[self.node::self.nodes]
            if self.nodes > 1:
                log.info("%s: node %d of %d builds %d of %d segments first", stage, self.node + 1, self.nodes,
                         len(share), len(jobs))
            fanned = fan_out_pending(self.store, stage, [(key, build) for _, key, build in share], self.devices,
                                     self.accelerator)
        from mvgen.models import load_seconds
        from mvgen.progress import TimeLeft

        policy = RetryPolicy.from_config(self.retry.get(stage))
        timer = TimeLeft(len(jobs), sum(not self.store.exists(stage, key) for _, key, _ in jobs))
        with tqdm(total=len(jobs), desc=f"  {stage}", unit="seg", leave=False, disable=not self.progress,
                  file=sys.stderr, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
                  ) as bar:
            for segment, key, build in jobs:
                start, loaded = time.perf_counter(), load_seconds()
                entry = attempt(self.store, stage, segment["name"], key, build, backend, policy, self.failures)
                seconds, loading = time.perf_counter() - start, load_seconds() - loaded
                built = entry is None or not entry.hit or key in fanned
                timer.add(seconds, built and key not in fanned, loading)  # a worker's time is not measured here
                stats.load_seconds += loading
                stats.items[segment["name"]] = {"seconds": round(seconds, 3), "built": built}
                if key in fanned:
                    stats.items[segment["name"]]["in_worker"] = True
                self._report_time(stage, segment["name"], timer, bar, first=built and len(timer.built) == 1)
                if entry is not None:
                    if key in fanned:  # built moments ago by a worker process: computed by this run, not a hit
                        entry.hit = False
                    yield segment, stats.count(entry)

    def _report_time(self, stage: str, name: str, timer: Any, bar: Any, first: bool) -> None:
        """Time left on the bar (or in the log without one); after the first built item, the projected total."""
        from mvgen.progress import format_seconds

        bar.set_postfix_str(timer.describe(counts=False), refresh=False)
        bar.update()
        if not self.progress:
            log.info("%s %s: %s", stage, name, timer.describe())
        if first and timer.to_build > 1:
            first = timer.built[0] + timer.loading
            log.info("%s: first %s built in %s (%s of it loading models); projected total for the %d to build: "
                     "about %s, %s left", stage, "clip" if stage == "render" else "segment", format_seconds(first),
                     format_seconds(timer.loading), timer.to_build, format_seconds(first + timer.left()),
                     format_seconds(timer.left()))
