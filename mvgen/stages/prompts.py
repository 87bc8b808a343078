"""Prompt building: a segment + the song's visual bible + templates -> one prompt per candidate frame.

Lyric segments get performance framing (readable face, visible mouth: the clip will be lip-synced);
instrumental segments get atmosphere. Shots and locations rotate through the song from an offset
derived from the seed, so neighbouring segments differ and the same seed always gives the same plan.
A song may override any segment's prompt, negative prompt or seed, or pin the approved candidate, in
``song.overrides.<segment name>`` (keys: prompt, negative, seed, candidate).
"""

from __future__ import annotations

from typing import Any

from mvgen.errors import MvgenError
from mvgen.util import derive_seed

OVERRIDE_KEYS = ("prompt", "negative", "seed", "candidate")
FIELDS = ("character", "location", "palette", "era", "camera", "shot", "lyric", "section", "mood", "style", "title")

# The mood a section asks of its pictures (segments.json carries it; the prompt templates use it).
MOODS = {
    "intro": "anticipation", "verse": "intimate", "pre_chorus": "rising tension", "chorus": "euphoric",
    "bridge": "reflective", "break": "atmospheric", "outro": "resolution", "hook": "euphoric",
}


class _Fields(dict):
    def __missing__(self, key: str) -> str:
        raise MvgenError(f"prompt template uses {{{key}}}, which is not a field; use one of: {', '.join(FIELDS)}")


class PromptBuilder:
    def __init__(self, lyric: str, instrumental: str, negative: str = "", lyric_shots: list[str] | None = None,
                 instrumental_shots: list[str] | None = None, seed: int = 0) -> None:
        self.templates = {"lyric": lyric, "instrumental": instrumental}
        self.negative = negative
        self.shots = {"lyric": list(lyric_shots or ["medium shot"]),
                      "instrumental": list(instrumental_shots or ["wide shot"])}
        self.seed = seed

    def build(self, song: dict[str, Any], segment: dict[str, Any], candidates: int,
              reseed: int = 0) -> list[dict[str, Any]]:
        """One prompt record per candidate. ``reseed`` > 0 (a reviewer asked for new frames) draws new seeds."""
        visual = song.get("visual") or {}
        override = (song.get("overrides") or {}).get(segment["name"]) or {}
        unknown = sorted(set(override) - set(OVERRIDE_KEYS))
        if unknown:
            raise MvgenError(f"song.overrides.{segment['name']} has unknown key(s) {', '.join(unknown)}; "
                             f"use {', '.join(OVERRIDE_KEYS)}")
        kind = segment["kind"]
        shots = self.shots[kind]
        locations = list(visual.get("locations") or ["an open space"])
        characters = list(visual.get("characters") or ["a singer"])
        listed = {x.get("name"): x for x in visual.get("performers") or []}
        singing = [listed[name] for name in segment.get("performers", []) if name in listed]
        duet = kind == "lyric" and len(segment.get("performers", [])) > 1
        offset = derive_seed(self.seed, "rotation") % 997
        out = []
        for k in range(candidates):
            shot = "two-shot of both singers" if duet else shots[(offset + segment["index"] + k) % len(shots)]
            location = locations[(offset + segment["index"] // 2 + k) % len(locations)]
            fields = _Fields(
                character=" and ".join(x.get("description") or x["name"] for x in singing) if singing
                else characters[segment["index"] % len(characters)], location=location,
                palette=", ".join(visual.get("palette") or []), era=visual.get("era", ""),
                camera=visual.get("camera", ""), shot=shot, lyric=segment["text"],
                section=segment["section"], mood=segment["mood"], style=song.get("style", ""),
                title=song.get("title", ""),
            )
            prompt = override.get("prompt") or self.templates[kind].format_map(fields)
            base_seed = override.get("seed") if override.get("seed") is not None else self.seed
            out.append({
                "candidate": k,
                "seed": derive_seed(base_seed, segment["index"], k, *(("reseed", reseed) if reseed else ())),
                "prompt": " ".join(prompt.split()),
                "negative": override.get("negative") or self.negative,
                "shot": shot,
                "location": location,
                "kind": kind,
            })
        return out
