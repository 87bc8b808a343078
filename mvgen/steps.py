"""How each stage meets the store: its inputs, its key, its build, and what it places in the run directory.

``pipeline.py`` holds the order of the stages and what flows between them; each function here is one step
of it, given the running ``Pipeline`` (its song, stages, configs, workspace and manifest notes).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvgen.manifest import StageStats
from mvgen.review_record import CLIP_REVIEW_JSON, REVIEW_JSON, ReviewPending, ReviewRecord, pending
from mvgen.store import Entry
from mvgen.util import read_json, write_json
from mvgen.validate import check_annotation, check_plan, check_song

if TYPE_CHECKING:
    from mvgen.pipeline import Pipeline

log = logging.getLogger("mvgen")

# Song fields each stage depends on: editing the visual bible must not regenerate the song.
SONG_FIELDS = {"music": ("lyrics", "style", "bpm", "language", "title"), "annotate": ("lyrics", "language")}
SHOT_FIELDS = ("index", "name", "kind", "section", "section_index", "text", "start", "end")


def music(p: Pipeline) -> dict[str, Any]:
    with p.ws.stage("music") as stats:
        backend = p.stages.music
        inputs = {"song": song_part(p, "music"), **backend.fingerprint()}

        def build(tmp: Path) -> dict[str, Any]:
            info = backend.make(p.song, tmp)
            check_song(tmp / "song.wav")
            return info

        entry = stats.count(p.ws.get("music", p.configs["music"], inputs, build))
        p.warnings += entry.info.get("warnings", [])
        p.ws.place_all(entry)
        return {"wav": p.run_dir / "song.wav", "hash": entry.files["song.wav"]}


def annotate(p: Pipeline, song: dict[str, Any]) -> dict[str, Any]:
    from mvgen.stages.annotate import mismatch_summary

    with p.ws.stage("annotate") as stats:
        backend = p.stages.annotate
        inputs = {"song.wav": song["hash"], "song": song_part(p, "annotate"), **backend.fingerprint()}

        def build(tmp: Path) -> dict[str, Any]:
            info = backend.annotate(p.song, song["wav"], tmp)
            check_annotation(read_json(tmp / "annotation.json"))
            return info

        entry = stats.count(p.ws.get("annotate", p.configs["annotate"], inputs, build))
        if (p.lyrics_edits or {}).get("lines"):
            entry = stats.count(edited_annotation(p, entry))
        p.ws.place_all(entry)
        data = read_json(p.run_dir / "annotation.json")
        if data.get("lyrics_mismatch"):
            p.warnings.append(str(mismatch_summary(data)))
        return {"data": data, "hash": entry.files["annotation.json"]}


def edited_annotation(p: Pipeline, aligned: Entry) -> Entry:
    """Hand-set line times as an entry of their own (keyed on the aligned annotation and the edits), so
    only the segments whose timing changed are planned and made again."""
    from mvgen.stages.annotate import build_edited_annotation

    edits = {"version": 1, "lines": dict(sorted((p.lyrics_edits or {}).get("lines", {}).items()))}
    build = partial(build_edited_annotation, aligned.file("annotation.json"), edits,
                    float(p.configs["annotate"].get("instrumental_min_gap", 2.0)))
    return p.ws.get("annotate_edits", {}, {"annotation": aligned.files["annotation.json"], "edits": edits},
                       build)


def segment(p: Pipeline, song: dict[str, Any], annotation: dict[str, Any]) -> dict[str, Any]:
    from mvgen.stages.segment import format_report

    with p.ws.stage("segment") as stats:
        cuts = p.song.get("cuts") or {}
        rule = p.stages.render.frame_rule()  # read from the render model's configs, no weights

        def build(tmp: Path) -> dict[str, Any]:
            plan = p.stages.segment.plan(annotation["data"], tmp, song_wav=song["wav"], bpm=p.song.get(
                "bpm"), pins=cuts.get("pin", []), forbid=cuts.get("forbid", []), rule=rule)
            check_plan(plan)
            return plan["report"]

        inputs = {"annotation": annotation["hash"], "song.wav": song["hash"],
                  "song": {"bpm": p.song.get("bpm"), "cuts": cuts}, "frame_rule": rule.to_dict()}
        entry = stats.count(p.ws.get("segment", p.configs["segment"], inputs, build))
        plan = read_json(p.ws.place(entry, "segments.json"))
        log.info(format_report(plan))
        return {"data": plan, "hash": entry.files["segments.json"]}


def frames(p: Pipeline, plan: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per segment: candidate PNGs + prompts.json. Returns {segment name: [candidate records]}."""
    from mvgen.stages.frames import build_frames

    with p.ws.stage("frames") as stats:
        frames, reviewed = p.stages.frames, ReviewRecord(p.song, p.previous_review)
        references = identity_reference(p, stats)
        jobs, prompts = [], {}
        for segment in plan["data"]["segments"]:
            specs = prompts[segment["name"]] = p.stages.prompts.build(
                p.song, segment, frames.candidates, reseed=reviewed.reseed(segment["name"]))
            singer = next((n for n in segment.get("performers", []) if n in references), "")
            reference = references.get(singer)  # the segment's (first) performer, else the song's own
            key = p.store.key("frames", p.configs["frames"], {
                "prompts": specs, "segment": {k: segment[k] for k in SHOT_FIELDS},
                "palette": (p.song.get("visual") or {}).get("palette"),
                "reference": reference["hash"] if reference else None})
            jobs.append((segment, key, partial(build_frames, frames, p.song, segment, specs,
                                               reference["path"] if reference else None)))
        out: dict[str, list[dict[str, Any]]] = {}
        for segment, entry in p.ws.per_segment("frames", jobs, frames, stats):
            name = segment["name"]
            out[name] = [{**spec, "hash": entry.files[f"cand_{spec['candidate']}.png"],
                          "path": p.ws.place(entry, f"cand_{spec['candidate']}.png",
                                                f"frames/{name}/cand_{spec['candidate']}.png")}
                         for spec in prompts[name]]
            p.ws.place(entry, "prompts.json", f"frames/{name}/prompts.json")
        return out


def identity_reference(p: Pipeline, stats: StageStats) -> dict[str, dict[str, Any]]:
    """The identity references, by performer ("" for the song's own): a performer's ``reference_image``, else
    one generated once from their description; the song's own from ``frames.reference_image`` or its first
    character. Empty when the frame backend takes no reference."""
    from mvgen.util import safe_name

    frames, visual = p.stages.frames, p.song.get("visual") or {}
    mode = frames.reference_mode()
    if mode == "none":
        return {}

    def copy(source: Path, dest: str) -> dict[str, Any]:
        from PIL import Image

        (p.run_dir / dest).parent.mkdir(parents=True, exist_ok=True)
        Image.open(source).convert("RGB").save(p.run_dir / dest)
        return {"path": p.run_dir / dest, "hash": p.ws.record(dest, p.run_dir / dest)}

    def generate(character: str, dest: str) -> dict[str, Any]:
        entry = stats.count(p.ws.get("reference", p.configs["frames"], {"characters": [character],
                                                                      "era": visual.get("era")},
                                     lambda tmp: frames.make_reference(p.song, tmp / "reference.png", character)))
        return {"path": p.ws.place(entry, "reference.png", dest), "hash": entry.files["reference.png"]}

    given = frames.reference_image_path()
    references = {"": copy(given, "frames/reference.png") if mode == "given" and given else
                  generate((visual.get("characters") or ["a singer"])[0], "frames/reference.png")}
    for performer in visual.get("performers") or []:
        dest = f"frames/reference_{safe_name(performer['name'], fallback='performer')}.png"
        if performer.get("reference_image"):
            references[performer["name"]] = copy(Path(performer["reference_image"]).expanduser(), dest)
        elif mode == "generate":
            references[performer["name"]] = generate(performer.get("description") or performer["name"], dest)
    return references


def review(p: Pipeline, plan: dict[str, Any], candidates: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    from mvgen.stages.review import SCORE_FORMULA

    with p.ws.stage("review") as stats:
        segments, record = plan["data"]["segments"], ReviewRecord(p.song, p.previous_review)
        if p.stages.review.manual:
            review = record.manual(segments, candidates)
            write_json(p.run_dir / REVIEW_JSON, review)
            p.ws.record(REVIEW_JSON, p.run_dir / REVIEW_JSON)
            if pending(review):
                raise ReviewPending(pending(review))
        else:
            inputs = {"candidates": {n: [c["hash"] for c in r] for n, r in candidates.items()}, "pins": record.pins}
            entry = stats.count(p.ws.get("review", p.configs["review"], inputs, lambda tmp: write_json(
                tmp / REVIEW_JSON, record.automatic(segments, candidates, p.stages.review, SCORE_FORMULA))))
            review = read_json(p.ws.place(entry, REVIEW_JSON))
        approved = {name: next(c for c in candidates[name] if c["candidate"] == verdict["approved"])
                    for name, verdict in review["segments"].items()}
        return {"data": review, "approved": approved}


def render(p: Pipeline, plan: dict[str, Any], review: dict[str, Any], song: dict[str, Any]) -> dict[str, Path]:
    from mvgen.stages.render import build_clip

    with p.ws.stage("render") as stats:
        backend = p.stages.render
        backend.frame_rule().check_plan(plan["data"]["segments"])  # before any model loads or denoises
        jobs, prompts = [], {}
        decisions = (p.clip_review or {}).get("segments") or {}
        if decisions:  # the reviewer's clip decisions carry on into this run directory
            write_json(p.run_dir / CLIP_REVIEW_JSON, p.clip_review)
        for segment in plan["data"]["segments"]:
            image = review["approved"].get(segment["name"])
            if image is not None:  # else its frames failed: nothing to render from
                decision = decisions.get(segment["name"]) or {}
                take = {**segment, "take": int(decision["take"])} if decision.get("take") else segment
                prompt = decision.get("prompt") or image["prompt"]
                key = p.store.key("render", p.configs["render"], {
                    "image": image["hash"], "segment": take, "song.wav": song["hash"], "prompt": prompt})
                prompts[key] = prompt
                jobs.append((take, key, partial(build_clip, backend, take, image["path"], prompt, song["wav"])))
        todo = [prompts[key] for _, key, _ in jobs if not p.store.exists("render", key)]  # verified when built
        if p.devices <= 1 and p.nodes <= 1 and todo:
            backend.prepare(todo)  # LTX: each prompt encoded once, then the text encoder leaves the GPU
        clips: dict[str, Path] = {}
        for segment, entry in p.ws.per_segment("render", jobs, backend, stats):
            clips[segment["name"]] = p.ws.place(entry, "clip.mp4", f"clips/{segment['name']}.mp4")
            p.warnings += [f"{segment['name']}: {flag}" for flag in entry.info.get("flags", [])]
            sync = entry.info.get("sync")
            if sync:  # lip-sync QA: offsets, confidences and re-rolls in the manifest, the figure beside the clip
                p.manifest_extra.setdefault("lipsync", {})[segment["name"]] = sync
                if "sync.png" in entry.files:
                    p.ws.place(entry, "sync.png", f"sync/{segment['name']}.png")
                if sync.get("checked") and not sync.get("in_sync"):
                    p.warnings.append(f"{segment['name']}: lip sync still off after {sync['rerolls']} re-roll(s) "
                                      f"({sync['offset_frames']:+d} frames, confidence {sync['confidence']:.2f})")
        return clips


def assemble(p: Pipeline, plan: dict[str, Any], clips: dict[str, Path], song: dict[str, Any],
              annotation: dict[str, Any], review: dict[str, Any]) -> None:
    with p.ws.stage("assemble") as stats:
        backend, render, segments = p.stages.assemble, p.stages.render, plan["data"]["segments"]
        size = (render.width, render.height)
        for segment in (s for s in segments if s["name"] not in clips):  # allow_gaps: a still over the window
            image, dest = review["approved"].get(segment["name"]), f"clips/{segment['name']}.mp4"
            p.ws.record(dest, backend.gap_clip(segment, image["path"] if image else None, song["wav"], render.fps,
                                                  size, render.preset, render.crf, p.run_dir / dest))
            p.manifest_extra.setdefault("gaps", []).append({"segment": segment["name"], "start": segment[
                "start"], "end": segment["end"], "filled_with": "approved frame" if image else "black"})
        ordered = [p.run_dir / "clips" / f"{s['name']}.mp4" for s in segments]
        inputs = {"clips": [p.ws.outputs[f"clips/{s['name']}.mp4"] for s in segments], "song.wav": song["hash"],
                  "plan": plan["hash"], "annotation": annotation["hash"]}
        entry = stats.count(p.ws.get("assemble", {**p.configs["assemble"], "size": size}, inputs,
                                        lambda tmp: backend.assemble(ordered, song["wav"], plan["data"], *size, tmp,
                                                                     annotation=annotation["data"])))
        p.ws.place_all(entry)
        p.manifest_extra["master"] = entry.info


def pictures(p: Pipeline, song: dict[str, Any], annotation: dict[str, Any], plan: dict[str, Any],
              candidates: dict[str, list[dict[str, Any]]], review: dict[str, Any]) -> None:
    """timeline.png and contact_sheet.png. ``review`` is review.json's content."""
    from mvgen.report import run_pictures

    with p.ws.stage("report") as stats:
        title = f"{p.song.get('title') or p.song.get('id')} — {plan['data']['report']['count']} clips"
        for name, config, inputs, build in run_pictures(song, annotation, plan, candidates, review, title):
            p.ws.place(stats.count(p.ws.get(name, config, inputs, build)), f"{name}.png")


def song_part(p: Pipeline, stage: str) -> dict[str, Any]:
    """The song fields a stage depends on, with the performers it reads (names; voices for the demo song)."""
    performers = (p.song.get("visual") or {}).get("performers") or []
    return {**{k: p.song.get(k) for k in SONG_FIELDS[stage]},
            "performers": [{"name": x.get("name"), "voice": x.get("voice")} if stage == "music" else x.get("name")
                           for x in performers]}
