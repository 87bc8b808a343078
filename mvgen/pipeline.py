"""The coordinator: the stages in order, and what flows between them, through the artifact store.

1 music -> 2 annotate (+ hand edits) -> 3 segment -> 4 frames + review -> 5 render + assemble -> pictures

Each step (``steps.py``) keys its store entry on (stage, the stage's resolved config, the hashes of its
inputs), takes it from the store or builds it, and copies its files into the run directory (``workspace.py``).
Frames and clips are keyed per segment, so one changed prompt rebuilds one segment and a killed run resumes
where it stopped. Stage interfaces: ``stages/protocols.py``; ``review.json``: ``review_record.py``;
``manifest.json``: ``manifest.py``. Nothing here knows Hydra.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mvgen import steps
from mvgen.manifest import MANIFEST_JSON, write_manifest
from mvgen.review_record import REVIEW_JSON, ReviewPending
from mvgen.stages.protocols import (AnnotateStage, AssembleStage, FramesStage, MusicStage, RenderStage, ReviewStage,
                                    SegmentStage)
from mvgen.store import ArtifactStore
from mvgen.util import read_json
from mvgen.workspace import Workspace


@dataclass
class Stages:
    music: MusicStage
    annotate: AnnotateStage
    segment: SegmentStage
    prompts: Any  # mvgen.stages.prompts.PromptBuilder
    frames: FramesStage
    review: ReviewStage
    render: RenderStage
    assemble: AssembleStage


@dataclass
class Pipeline:
    song: dict[str, Any]
    stages: Stages
    configs: dict[str, Any]  # resolved config per stage group: part of the store keys and the manifest
    store: ArtifactStore
    run_dir: Path
    progress: bool = True
    devices: int = 1  # worker processes for frames and render (mvgen/fanout.py)
    accelerator: str = "cpu"
    retry: dict[str, dict[str, float]] = field(default_factory=dict)  # per stage: attempts, backoff, timeout
    nodes: int = 1  # machines sharing this run through the store; this one builds its share first
    node: int = 0
    previous_review: dict[str, Any] | None = None  # review.json of the run being continued
    lyrics_edits: dict[str, Any] | None = None  # lyrics_edits.json of the run being continued
    clip_review: dict[str, Any] | None = None  # clip_review.json of the run being continued (clip re-rolls)
    manifest_extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    STEPS = ("music", "annotate", "segment", "frames", "review", "render", "assemble", "pictures")

    def __post_init__(self) -> None:
        self.ws = Workspace(self.store, self.run_dir, self.progress, self.devices, self.accelerator, self.retry,
                            nodes=self.nodes, node=self.node)

    def run(self) -> dict[str, Any]:
        started, status, error = time.perf_counter(), "ok", None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(self.STEPS), desc="mvgen", unit="stage", disable=not self.progress, file=sys.stderr,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} stages [{elapsed}]")  # stages differ too much for a rate
        failures = self.ws.failures
        try:
            song = steps.music(self); bar.update()
            annotation = steps.annotate(self, song); bar.update()
            plan = steps.segment(self, song, annotation); bar.update()
            candidates = steps.frames(self, plan); bar.update()
            try:
                review = steps.review(self, plan, candidates); bar.update()
            except ReviewPending as waiting:
                steps.pictures(self, song, annotation, plan, candidates, read_json(self.run_dir / REVIEW_JSON))
                status, error = "awaiting_review", str(waiting)
                self.manifest_extra["awaiting_review"] = waiting.pending
            else:
                clips = steps.render(self, plan, review, song); bar.update()
                allow_gaps = self.stages.assemble.allow_gaps
                if not failures or allow_gaps:
                    steps.assemble(self, plan, clips, song, annotation, review); bar.update()
                steps.pictures(self, song, annotation, plan, candidates, review["data"]); bar.update()
                if failures:
                    status = "gaps" if allow_gaps else "failed_segments"
                    error = "; ".join(f"{f['stage']} {f['segment']}: {f['error']}" for f in failures)
        except BaseException as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            bar.close()
            write_manifest(self.run_dir, self.store.root, self.configs, status, error, time.perf_counter() - started,
                           self.ws.stats, self.ws.outputs, failures, self.warnings, self.manifest_extra)
        return read_json(self.run_dir / MANIFEST_JSON)
