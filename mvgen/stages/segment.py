"""Stage 3, segment: annotation -> ``segments.json``, the clip windows every later stage renders.

``PhrasePlanner`` chooses cut points on the frame grid by dynamic programming (exact minimum of the
cost below over all cut sequences drawn from the candidate points), never by greedy patching.

Candidates: every ``fps // 5`` frames (a 0.2 s lattice at 25 fps) plus the ideal cut before every lyric
phrase (its onset minus ``lead_in``, so the clip's motion starts just before the singing).

Cost of a plan = sum over segments of ``((length - target) / target) ** 2``
               + sum over cuts of the cut's cost, where a cut
                 - inside a word costs ``WORD_CUT`` (effectively forbidden),
                 - inside a lyric phrase but between words costs ``PHRASE_CUT`` (used only to split a
                   phrase longer than the maximum: whole phrases outrank every other preference),
                 - within ``APPROACH`` seconds before a lyric phrase costs ``GAP_DRIFT`` x its distance
                   in seconds from the ideal cut (capped at 1 s), so cuts settle on the ideal point,
                 - anywhere else (instrumental stretches, after the last phrase) costs nothing: the
                   length term spaces those cuts evenly.
Hard limits: no segment longer than ``max_seconds`` or than the renderer's ``max_frames``; a segment
shorter than ``min_seconds`` costs ``SHORT`` (less than splitting a phrase: a song whose phrases leave
no room for the minimum gets a short clip, not a cut phrase).

Invariants (tested): segments are contiguous from frame 0 to ``round(duration * fps)``, boundaries on the
frame grid, frame counts sum exactly to the song's frame count.
"""

from __future__ import annotations

import bisect
import statistics
from pathlib import Path
from typing import Any

from mvgen.errors import MvgenError
from mvgen.util import write_json

SEGMENTS_JSON = "segments.json"
SEGMENTS_VERSION = 1

WORD_CUT = 1.0e6
PHRASE_CUT = 1.0e3
SHORT = 20.0
GAP_DRIFT = 0.5
APPROACH = 2.0

MOODS = {
    "intro": "anticipation", "verse": "intimate", "pre_chorus": "rising tension", "chorus": "euphoric",
    "bridge": "reflective", "break": "atmospheric", "outro": "resolution", "hook": "euphoric",
}


def frames_to_generate(covered: int, frame_step: int) -> int:
    """Smallest count of the form ``frame_step * k + 1`` that covers ``covered`` frames (LTX: 8k+1)."""
    if covered < 1:
        raise ValueError(f"a segment must cover at least one frame, got {covered}")
    if frame_step <= 1:
        return covered
    k = -(-(covered - 1) // frame_step)  # ceil division
    return frame_step * k + 1


class PhrasePlanner:
    def __init__(self, min_seconds: float = 2.0, target_seconds: float = 5.0, max_seconds: float = 8.0,
                 lead_in: float = 0.24, fps: int = 25, frame_step: int = 8, max_frames: int = 257) -> None:
        if fps <= 0:
            raise MvgenError(f"fps must be positive, got {fps}; set render.fps (e.g. 25)")
        if not 0 < min_seconds <= target_seconds <= max_seconds:
            raise MvgenError(f"segment limits must satisfy 0 < min_seconds <= target_seconds <= max_seconds, got "
                             f"{min_seconds}, {target_seconds}, {max_seconds}; fix segment.*_seconds")
        if frame_step > 1 and (max_frames - 1) % frame_step:
            raise MvgenError(f"render.max_frames={max_frames} breaks the frame rule {frame_step}k+1; "
                             f"use e.g. {frame_step * ((max_frames - 1) // frame_step) + 1}")
        self.fps = fps
        self.frame_step = frame_step
        self.max_frames = max_frames
        self.min_frames = max(1, round(min_seconds * fps))
        self.target_frames = max(1, round(target_seconds * fps))
        self.max_len = min(round(max_seconds * fps), max_frames)
        if self.max_len < self.min_frames:
            raise MvgenError(f"render.max_frames={max_frames} ({max_frames / fps:.2f} s) is shorter than "
                             f"segment.min_seconds={min_seconds}; raise max_frames or lower min_seconds")
        self.lead_in_frames = round(lead_in * fps)

    # ---------------------------------------------------------------------------------------- API
    def plan(self, annotation: dict[str, Any], out_dir: Path | None = None) -> dict[str, Any]:
        duration = float(annotation["duration"])
        total = round(duration * self.fps)
        if total < 1:
            raise MvgenError(f"the song is {duration:.3f} s long: too short for one video frame")
        phrases = annotation["phrases"]
        cuts = self._best_cuts(total, phrases)
        segments = [self._describe(i, a, b, phrases) for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:]))]
        lengths = [s["frames"] / self.fps for s in segments]
        report = {
            "count": len(segments),
            "min_seconds": min(lengths), "median_seconds": statistics.median(lengths), "max_seconds": max(lengths),
            "phrases_split": sum(1 for p in phrases if p["kind"] == "lyric" and
                                 any(self._frame(p["start"]) < c < self._frame(p["end"]) for c in cuts[1:-1])),
        }
        plan = {"version": SEGMENTS_VERSION, "fps": self.fps, "duration": duration, "total_frames": total,
                "frame_rule": {"step": self.frame_step, "max_frames": self.max_frames},
                "segments": segments, "report": report}
        if out_dir is not None:
            write_json(out_dir / SEGMENTS_JSON, plan)
        return plan

    # ------------------------------------------------------------------------------------ planning
    def _frame(self, seconds: float) -> int:
        return round(seconds * self.fps)

    def _candidates(self, total: int, phrases: list[dict[str, Any]]) -> list[int]:
        stride = max(1, self.fps // 5)
        points = set(range(0, total + 1, stride)) | {0, total}
        previous_end = 0
        for phrase in phrases:
            if phrase["kind"] == "lyric":
                ideal = max(self._frame(phrase["start"]) - self.lead_in_frames, previous_end)
                points.add(min(max(ideal, 0), total))
                previous_end = self._frame(phrase["end"])
        return sorted(points)

    def _cut_costs(self, total: int, phrases: list[dict[str, Any]], candidates: list[int]) -> list[float]:
        lyric = [p for p in phrases if p["kind"] == "lyric"]
        words = sorted((self._frame(w["start"]), self._frame(w["end"])) for p in lyric for w in p["words"])
        word_starts = [a for a, _ in words]
        spans = [(self._frame(p["start"]), self._frame(p["end"])) for p in lyric]
        span_starts = [a for a, _ in spans]
        ideals = [max(s - self.lead_in_frames, spans[i - 1][1] if i else 0) for i, (s, _) in enumerate(spans)]
        approach = APPROACH * self.fps
        costs = []
        for c in candidates:
            if c in (0, total):
                costs.append(0.0)
                continue
            i = bisect.bisect_right(word_starts, c) - 1
            if i >= 0 and words[i][0] < c < words[i][1]:
                costs.append(WORD_CUT)
                continue
            j = bisect.bisect_right(span_starts, c) - 1  # the last lyric phrase starting at or before c
            if j >= 0 and spans[j][0] < c < spans[j][1]:
                costs.append(PHRASE_CUT)
                continue
            following = j if j >= 0 and c == spans[j][0] else j + 1  # the phrase this cut approaches
            if following < len(spans) and spans[following][0] - c <= approach:
                costs.append(GAP_DRIFT * min(1.0, abs(c - ideals[following]) / self.fps))
            else:
                costs.append(0.0)
        return costs

    def _best_cuts(self, total: int, phrases: list[dict[str, Any]]) -> list[int]:
        candidates = self._candidates(total, phrases)
        cut_cost = self._cut_costs(total, phrases, candidates)
        n = len(candidates)
        best = [float("inf")] * n
        back = [-1] * n
        best[0] = 0.0
        for j in range(1, n):
            end = candidates[j]
            i = j - 1
            while i >= 0 and end - candidates[i] <= self.max_len:
                if best[i] < float("inf"):
                    length = end - candidates[i]
                    cost = best[i] + ((length - self.target_frames) / self.target_frames) ** 2 + cut_cost[j]
                    if length < self.min_frames and not (i == 0 and j == n - 1):
                        cost += SHORT
                    if cost < best[j]:
                        best[j], back[j] = cost, i
                i -= 1
        cuts, j = [], n - 1
        while j > 0:
            cuts.append(candidates[j])
            j = back[j]
        cuts.append(0)
        return cuts[::-1]

    # ---------------------------------------------------------------------------------- describing
    def _describe(self, index: int, start: int, end: int, phrases: list[dict[str, Any]]) -> dict[str, Any]:
        t0, t1 = start / self.fps, end / self.fps
        inside = [p for p in phrases if min(p["end"], t1) - max(p["start"], t0) > 0]

        def overlap(p: dict[str, Any]) -> float:
            return min(p["end"], t1) - max(p["start"], t0)

        lyric = [p for p in inside if p["kind"] == "lyric" and overlap(p) >= 0.5 * max(p["end"] - p["start"], 1e-6)]
        main = max(lyric or inside, key=overlap) if (lyric or inside) else None
        section = main["section"] if main else "intro"
        words = [{**w, "line": p["line"]} for p in lyric for w in p["words"] if t0 <= (w["start"] + w["end"]) / 2 < t1]
        covered = end - start
        return {
            "index": index,
            "name": f"seg_{index:03d}",
            "start": round(t0, 6), "end": round(t1, 6),
            "start_frame": start, "end_frame": end,
            "frames": covered,
            "generate_frames": frames_to_generate(covered, self.frame_step),
            "kind": "lyric" if lyric else "instrumental",
            "section": section,
            "section_index": main["section_index"] if main else 1,
            "text": " / ".join(p["text"] for p in lyric),
            "lines": [p["line"] for p in lyric],
            "words": words,
            "mood": MOODS.get(section, "atmospheric"),
        }


def format_report(plan: dict[str, Any]) -> str:
    r = plan["report"]
    return (f"segments: {r['count']} clips, length min {r['min_seconds']:.2f} s / median {r['median_seconds']:.2f} s "
            f"/ max {r['max_seconds']:.2f} s, {r['phrases_split']} phrases split, "
            f"{plan['total_frames']} frames at {plan['fps']} fps")
