"""The coordinator: the stages in order, and what flows between them, through the artifact store.

music -> annotate (+ hand edits) -> segment -> frames -> review -> render -> assemble -> reports

Each step keys its store entry on (stage, the stage's resolved config, the hashes of its inputs), takes it
from the store or builds it, and copies its files into the run directory. Frames and clips are keyed per
segment, so one changed prompt rebuilds one segment and a killed run resumes where it stopped. The stage
interfaces are in ``stages/protocols.py``; the retry policy in ``retry.py``; ``review.json`` in
``review_record.py``; ``manifest.json`` in ``manifest.py``. Nothing here knows Hydra.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from tqdm import tqdm

from mvgen.manifest import MANIFEST_JSON, StageStats, write_manifest
from mvgen.retry import RetryPolicy, attempt
from mvgen.review_record import REVIEW_JSON, ReviewPending, ReviewRecord, pending
from mvgen.stages.protocols import (AnnotateStage, AssembleStage, FramesStage, MusicStage, RenderStage, ReviewStage,
                                    SegmentStage)
from mvgen.store import ArtifactStore, Entry
from mvgen.util import read_json, sha256_file, write_json
from mvgen.validate import check_annotation, check_plan, check_song

log = logging.getLogger("mvgen")

# Song fields each stage depends on: editing the visual bible must not regenerate the song.
SONG_FIELDS = {"music": ("lyrics", "style", "bpm", "language", "title"), "annotate": ("lyrics", "language")}
SHOT_FIELDS = ("index", "name", "kind", "section", "section_index", "text", "start", "end")


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
    previous_review: dict[str, Any] | None = None  # review.json of the run being continued
    lyrics_edits: dict[str, Any] | None = None  # lyrics_edits.json of the run being continued
    devices: int = 1  # processes for frames and render (Lightning Fabric, spawn)
    accelerator: str = "cpu"
    retry: dict[str, dict[str, float]] = field(default_factory=dict)  # per stage: attempts, backoff, timeout
    manifest_extra: dict[str, Any] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, StageStats] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # run-dir relative path -> sha256

    STEPS = ("music", "annotate", "segment", "frames", "review", "render", "assemble", "report")

    def run(self) -> dict[str, Any]:
        started, status, error = time.perf_counter(), "ok", None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(self.STEPS), desc="mvgen", unit="stage", disable=not self.progress, file=sys.stderr)
        try:
            song = self._music(); bar.update()
            annotation = self._annotate(song); bar.update()
            plan = self._segment(song, annotation); bar.update()
            candidates = self._frames(plan); bar.update()
            try:
                review = self._review(plan, candidates); bar.update()
            except ReviewPending as waiting:
                self._reports(song, annotation, plan, candidates, read_json(self.run_dir / REVIEW_JSON))
                status, error = "awaiting_review", str(waiting)
                self.manifest_extra["awaiting_review"] = waiting.pending
            else:
                clips = self._render(plan, review, song); bar.update()
                allow_gaps = self.stages.assemble.allow_gaps
                if not self.failures or allow_gaps:
                    self._assemble(plan, clips, song, annotation, review); bar.update()
                self._reports(song, annotation, plan, candidates, review["data"]); bar.update()
                if self.failures:
                    status = "gaps" if allow_gaps else "failed_segments"
                    error = "; ".join(f"{f['stage']} {f['segment']}: {f['error']}" for f in self.failures)
        except BaseException as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            bar.close()
            write_manifest(self.run_dir, self.store.root, self.configs, status, error, time.perf_counter() - started,
                           self.stats, self.outputs, self.failures, self.warnings, self.manifest_extra)
        return read_json(self.run_dir / MANIFEST_JSON)

    # ------------------------------------------------------------------------------------- stages
    def _music(self) -> dict[str, Any]:
        with self._stage("music") as stats:
            backend = self.stages.music
            inputs = {"song": self._song_part("music"), **backend.fingerprint()}

            def build(tmp: Path) -> dict[str, Any]:
                info = backend.make(self.song, tmp)
                check_song(tmp / "song.wav")
                return info

            entry = stats.count(self._get("music", self.configs["music"], inputs, build))
            self.warnings += entry.info.get("warnings", [])
            self._place_all(entry)
            return {"wav": self.run_dir / "song.wav", "hash": entry.files["song.wav"]}

    def _annotate(self, song: dict[str, Any]) -> dict[str, Any]:
        from mvgen.stages.annotate import mismatch_summary

        with self._stage("annotate") as stats:
            backend = self.stages.annotate
            inputs = {"song.wav": song["hash"], "song": self._song_part("annotate"), **backend.fingerprint()}

            def build(tmp: Path) -> dict[str, Any]:
                info = backend.annotate(self.song, song["wav"], tmp)
                check_annotation(read_json(tmp / "annotation.json"))
                return info

            entry = stats.count(self._get("annotate", self.configs["annotate"], inputs, build))
            if (self.lyrics_edits or {}).get("lines"):
                entry = stats.count(self._edited_annotation(entry))
            self._place_all(entry)
            data = read_json(self.run_dir / "annotation.json")
            if data.get("lyrics_mismatch"):
                self.warnings.append(str(mismatch_summary(data)))
            return {"data": data, "hash": entry.files["annotation.json"]}

    def _edited_annotation(self, aligned: Entry) -> Entry:
        """The reviewer's hand-set line times, as an entry of their own (keyed on the aligned annotation and
        the edits), so only the segments whose timing changed are planned and made again."""
        from mvgen.stages.annotate import LYRICS_EDITS_JSON, apply_line_edits, write_annotation

        edits = {"version": 1, "lines": dict(sorted((self.lyrics_edits or {}).get("lines", {}).items()))}
        min_gap = float(self.configs["annotate"].get("instrumental_min_gap", 2.0))

        def build(tmp: Path) -> dict[str, Any]:
            edited = apply_line_edits(read_json(aligned.file("annotation.json")), edits, min_gap)
            check_annotation(edited)
            write_annotation(edited, tmp)
            write_json(tmp / LYRICS_EDITS_JSON, edits)
            return {"edited_lines": len(edits["lines"])}

        return self._get("annotate_edits", {}, {"annotation": aligned.files["annotation.json"], "edits": edits},
                         build)

    def _segment(self, song: dict[str, Any], annotation: dict[str, Any]) -> dict[str, Any]:
        from mvgen.stages.segment import format_report

        with self._stage("segment") as stats:
            cuts = self.song.get("cuts") or {}
            rule = self.stages.render.frame_rule()  # read from the render model's configs, no weights

            def build(tmp: Path) -> dict[str, Any]:
                plan = self.stages.segment.plan(annotation["data"], tmp, song_wav=song["wav"], bpm=self.song.get(
                    "bpm"), pins=cuts.get("pin", []), forbid=cuts.get("forbid", []), rule=rule)
                check_plan(plan)
                return plan["report"]

            inputs = {"annotation": annotation["hash"], "song.wav": song["hash"],
                      "song": {"bpm": self.song.get("bpm"), "cuts": cuts}, "frame_rule": rule.to_dict()}
            entry = stats.count(self._get("segment", self.configs["segment"], inputs, build))
            plan = read_json(self._place(entry, "segments.json", "segments.json"))
            log.info(format_report(plan))
            return {"data": plan, "hash": entry.files["segments.json"]}

    def _frames(self, plan: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Per segment: candidate PNGs + prompts.json. Returns {segment name: [candidate records]}."""
        from mvgen.stages.frames import build_frames

        with self._stage("frames") as stats:
            frames, reviewed = self.stages.frames, ReviewRecord(self.song, self.previous_review)
            reference = self._reference(stats)
            jobs, prompts = [], {}
            for segment in plan["data"]["segments"]:
                specs = self.stages.prompts.build(self.song, segment, frames.candidates,
                                                  reseed=reviewed.reseed(segment["name"]))
                prompts[segment["name"]] = specs
                key = self.store.key("frames", self.configs["frames"], {
                    "prompts": specs, "segment": {k: segment[k] for k in SHOT_FIELDS},
                    "palette": (self.song.get("visual") or {}).get("palette"),
                    "reference": reference["hash"] if reference else None})
                jobs.append((segment, key, partial(build_frames, frames, self.song, segment, specs,
                                                   reference["path"] if reference else None)))
            out: dict[str, list[dict[str, Any]]] = {}
            for segment, entry in self._per_segment("frames", jobs, frames, stats):
                name = segment["name"]
                out[name] = [{**spec, "hash": entry.files[f"cand_{spec['candidate']}.png"],
                              "path": self._place(entry, f"cand_{spec['candidate']}.png",
                                                  f"frames/{name}/cand_{spec['candidate']}.png")}
                             for spec in prompts[name]]
                self._place(entry, "prompts.json", f"frames/{name}/prompts.json")
            return out

    def _reference(self, stats: StageStats) -> dict[str, Any] | None:
        """The identity reference image (given, or generated once from the visual bible), or None."""
        frames = self.stages.frames
        if frames.reference_mode() == "none":
            return None
        if frames.reference_mode() == "given":
            from PIL import Image

            target = self.run_dir / "frames" / "reference.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.open(frames.reference_image_path()).convert("RGB").save(target)
            self.outputs["frames/reference.png"] = digest = sha256_file(target)
            return {"path": target, "hash": digest}
        visual = self.song.get("visual") or {}
        entry = stats.count(self._get("reference", self.configs["frames"], {
            "characters": visual.get("characters"), "era": visual.get("era")},
            lambda tmp: frames.make_reference(self.song, tmp / "reference.png")))
        return {"path": self._place(entry, "reference.png", "frames/reference.png"),
                "hash": entry.files["reference.png"]}

    def _review(self, plan: dict[str, Any], candidates: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        from mvgen.stages.review import SCORE_FORMULA

        with self._stage("review") as stats:
            segments, record = plan["data"]["segments"], ReviewRecord(self.song, self.previous_review)
            if self.stages.review.manual:
                review = record.manual(segments, candidates)
                write_json(self.run_dir / REVIEW_JSON, review)
                self.outputs[REVIEW_JSON] = sha256_file(self.run_dir / REVIEW_JSON)
                if pending(review):
                    raise ReviewPending(pending(review))
            else:
                inputs = {"candidates": {n: [c["hash"] for c in r] for n, r in candidates.items()}, "pins": record.pins}
                entry = stats.count(self._get("review", self.configs["review"], inputs, lambda tmp: write_json(
                    tmp / REVIEW_JSON, record.automatic(segments, candidates, self.stages.review, SCORE_FORMULA))))
                review = read_json(self._place(entry, REVIEW_JSON, REVIEW_JSON))
            approved = {name: next(c for c in candidates[name] if c["candidate"] == verdict["approved"])
                        for name, verdict in review["segments"].items()}
            return {"data": review, "approved": approved}

    def _render(self, plan: dict[str, Any], review: dict[str, Any], song: dict[str, Any]) -> dict[str, Path]:
        from mvgen.stages.render import build_clip

        with self._stage("render") as stats:
            backend = self.stages.render
            backend.frame_rule().check_plan(plan["data"]["segments"])  # before any model loads or denoises
            jobs = []
            for segment in plan["data"]["segments"]:
                image = review["approved"].get(segment["name"])
                if image is not None:  # else its frames failed: nothing to render from
                    key = self.store.key("render", self.configs["render"], {
                        "image": image["hash"], "segment": segment, "song.wav": song["hash"], "prompt": image["prompt"]})
                    jobs.append((segment, key, partial(build_clip, backend, segment, image["path"], image["prompt"],
                                                       song["wav"])))
            todo = [review["approved"][s["name"]]["prompt"] for s, key, _ in jobs if self.store.get("render", key) is None]
            if self.devices <= 1 and todo:
                backend.prepare(todo)  # LTX: each prompt encoded once, then the text encoder leaves the GPU
            clips: dict[str, Path] = {}
            for segment, entry in self._per_segment("render", jobs, backend, stats):
                clips[segment["name"]] = self._place(entry, "clip.mp4", f"clips/{segment['name']}.mp4")
                self.warnings += [f"{segment['name']}: {flag}" for flag in entry.info.get("flags", [])]
            return clips

    def _assemble(self, plan: dict[str, Any], clips: dict[str, Path], song: dict[str, Any],
                  annotation: dict[str, Any], review: dict[str, Any]) -> None:
        with self._stage("assemble") as stats:
            backend, render, fps = self.stages.assemble, self.stages.render, plan["data"]["fps"]
            size = (render.width, render.height)
            ordered = []
            for segment in plan["data"]["segments"]:
                if segment["name"] not in clips:  # allow_gaps: hold the approved frame (or black) as a still
                    image = review["approved"].get(segment["name"])
                    path = backend.gap_clip(segment, image["path"] if image else None, song["wav"], fps, size,
                                            render.preset, render.crf, self.run_dir / "clips" / f"{segment['name']}.mp4")
                    self.outputs[f"clips/{segment['name']}.mp4"] = sha256_file(path)
                    self.manifest_extra.setdefault("gaps", []).append(
                        {"segment": segment["name"], "start": segment["start"], "end": segment["end"],
                         "filled_with": "approved frame" if image else "black"})
                ordered.append(self.run_dir / "clips" / f"{segment['name']}.mp4")
            inputs = {"clips": [self.outputs[f"clips/{s['name']}.mp4"] for s in plan["data"]["segments"]],
                      "song.wav": song["hash"], "plan": plan["hash"], "annotation": annotation["hash"]}
            entry = stats.count(self._get("assemble", {**self.configs["assemble"], "size": size}, inputs,
                                          lambda tmp: backend.assemble(ordered, song["wav"], plan["data"], *size, tmp,
                                                                       annotation=annotation["data"])))
            self._place_all(entry)
            self.manifest_extra["master"] = entry.info

    def _reports(self, song: dict[str, Any], annotation: dict[str, Any], plan: dict[str, Any],
                 candidates: dict[str, list[dict[str, Any]]], review: dict[str, Any]) -> None:
        """timeline.png and contact_sheet.png. ``review`` is review.json's content."""
        from mvgen.report.contact_sheet import contact_sheet, sheet_rows
        from mvgen.report.timeline import plot_timeline

        with self._stage("report") as stats:
            title = f"{self.song.get('title') or self.song.get('id')} — {plan['data']['report']['count']} clips"
            entry = self._get("timeline", {"title": title}, {"song.wav": song["hash"], "annotation": annotation["hash"],
                                                             "plan": plan["hash"]},
                              lambda tmp: plot_timeline(song["wav"], annotation["data"], plan["data"],
                                                        tmp / "timeline.png", title))
            self._place(stats.count(entry), "timeline.png", "timeline.png")
            inputs = {"frames": {n: [c["hash"] for c in r] for n, r in candidates.items()},
                      "review": {n: r["approved"] for n, r in review["segments"].items()}, "plan": plan["hash"]}
            entry = self._get("contact_sheet", {}, inputs, lambda tmp: contact_sheet(
                sheet_rows(plan["data"]["segments"], candidates, review), tmp / "contact_sheet.png"))
            self._place(stats.count(entry), "contact_sheet.png", "contact_sheet.png")

    # ------------------------------------------------------------------------------------- helpers
    def _song_part(self, stage: str) -> dict[str, Any]:
        return {k: self.song.get(k) for k in SONG_FIELDS[stage]}

    def _get(self, stage: str, config: Any, inputs: dict[str, Any], build: Callable[[Path], Any]) -> Entry:
        return self.store.get_or_build(stage, self.store.key(stage, config, inputs), build)

    def _place(self, entry: Entry, name: str, dest: str) -> Path:
        """Copy one entry file into the run directory and record its hash."""
        path = entry.copy_to(name, self.run_dir / dest)
        self.outputs[dest] = entry.files[name]
        return path

    def _place_all(self, entry: Entry) -> None:
        for name in entry.files:
            self._place(entry, name, name)

    @contextmanager
    def _stage(self, name: str) -> Iterator[StageStats]:
        from mvgen.models import release_models

        stats = self.stats.setdefault(name, StageStats())
        start = time.perf_counter()
        try:
            yield stats
        finally:
            release_models()  # a stage's models leave the GPU before the next stage loads its own
            stats.seconds += time.perf_counter() - start
            log.info("%-9s %6.2f s  hits %d  misses %d", name, stats.seconds, stats.hits, stats.misses)

    def _per_segment(self, stage: str, jobs: list[tuple[dict[str, Any], str, Any]], backend: Any,
                     stats: StageStats) -> Iterator[tuple[dict[str, Any], Entry]]:
        """One loop for frames and render: fan out across processes if asked, then each segment's entry under
        the retry policy (a segment that still fails is recorded and skipped; the others go on)."""
        fanned: set[str] = set()
        if self.devices > 1:
            from mvgen.fanout import fan_out_pending

            fanned = fan_out_pending(self.store, stage, [(key, build) for _, key, build in jobs], self.devices,
                                     self.accelerator)
        policy = RetryPolicy.from_config(self.retry.get(stage))
        for segment, key, build in tqdm(jobs, desc=f"  {stage}", unit="seg", leave=False, disable=not self.progress,
                                        file=sys.stderr):
            entry = attempt(self.store, stage, segment["name"], key, build, backend, policy, self.failures)
            if entry is not None:
                if key in fanned:  # built moments ago by a worker process: computed by this run, not a hit
                    entry.hit = False
                yield segment, stats.count(entry)
