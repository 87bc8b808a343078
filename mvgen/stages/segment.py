"""Stage 3, segment: annotation -> ``segments.json``, the clip windows every later stage renders.

Strategies (``segment.strategy``):
- ``phrase`` (default): cuts chosen by dynamic programming (the exact minimum of the cost below over every
  sequence of cuts drawn from the candidate points), never by greedy patching;
- ``beat``: cuts on the bar grid only (downbeats; beats when no bar phase is known), lengths near the
  target, never inside a word;
- ``fixed``: even windows near the target length, on the frame grid.

Candidates (phrase): every ``fps // 5`` frames (a 0.2 s lattice at 25 fps), the ideal cut before every
lyric phrase (its onset minus ``lead_in``, so the clip's motion starts just before the singing), and every
beat and downbeat.

Cost of a plan = sum over segments of ``((length - target) / target) ** 2``
               + sum over cuts of the cut's cost, where a cut
                 - inside a word, or inside a range the song forbids, costs ``WORD_CUT`` (never taken
                   while any other plan exists),
                 - inside a lyric phrase but between words costs ``PHRASE_CUT`` (used only to split a
                   phrase longer than the maximum: whole phrases outrank every other preference),
                 - within ``APPROACH`` seconds before a lyric phrase costs ``GAP_DRIFT`` x its distance
                   in seconds from the ideal cut (capped at 1 s), so cuts settle on the ideal point,
                 - anywhere else (instrumental stretches, after the last phrase) costs nothing here,
               + the snap cost of every cut (``snap`` = downbeat or beat): ``SNAP_MISS`` x its distance to
                 the nearest downbeat (or beat) as a fraction of ``snap_tolerance``, capped at
                 ``SNAP_MISS``; with ``snap=downbeat`` a cut on a plain beat costs ``SNAP_BEAT`` plus its
                 distance, so bars win over beats and beats over nothing. In instrumental stretches this
                 makes windows of whole bars.
Hard limits: no segment longer than ``max_seconds`` or than the longest clip of the renderer's frame rule
(``mvgen.framing.FrameRule``, derived from its model); cuts the song
pins (``song.cuts.pin``) are always taken. A segment shorter than ``min_seconds`` costs ``SHORT`` (less
than splitting a phrase: a song whose phrases leave no room for the minimum gets a short clip, not a cut
phrase).

Invariants (tested): segments are contiguous from frame 0 to ``round(duration * fps)``, boundaries on the
frame grid, frame counts sum exactly to the song's frame count; each segment records the frames it covers
and the frames the renderer must generate (the smallest count the model runs without canvas padding;
LTX-2 DFR: 8k+1 with k a multiple of 3 or 4).
"""

from __future__ import annotations

import bisect
import statistics
from pathlib import Path
from typing import Any

from mvgen.errors import MvgenError
from mvgen.framing import FrameRule
from mvgen.stages.beats import BeatGrid, detect_beats
from mvgen.stages.prompts import MOODS
from mvgen.util import write_json
from mvgen.stages.protocols import SegmentStage

SEGMENTS_JSON = "segments.json"
SEGMENTS_VERSION = 1

WORD_CUT = 1.0e6
PHRASE_CUT = 1.0e3
SHORT = 20.0
GAP_DRIFT = 0.5
APPROACH = 2.0
SNAP_MISS = 0.3
SNAP_BEAT = 0.1
STRATEGIES = ("phrase", "beat", "fixed")
SNAPS = ("downbeat", "beat", "none")

def frames_to_generate(covered: int, frame_step: int) -> int:
    """Smallest count of the form ``frame_step * k + 1`` that covers ``covered`` frames (LTX: 8k+1)."""
    return FrameRule(step=max(1, frame_step), max_frames=10**6).frames_for(covered)


class SegmentPlanner(SegmentStage):
    def __init__(self, min_seconds: float = 2.0, target_seconds: float = 5.0, max_seconds: float = 8.0,
                 lead_in: float = 0.24, fps: int = 25,
                 strategy: str = "phrase", snap: str = "downbeat", snap_tolerance: float = 0.25,
                 beats_per_bar: int = 4) -> None:
        if fps <= 0:
            raise MvgenError(f"fps must be positive, got {fps}; set render.fps (e.g. 25)")
        if not 0 < min_seconds <= target_seconds <= max_seconds:
            raise MvgenError(f"segment limits must satisfy 0 < min_seconds <= target_seconds <= max_seconds, got "
                             f"{min_seconds}, {target_seconds}, {max_seconds}; fix segment.*_seconds")
        if strategy not in STRATEGIES:
            raise MvgenError(f"segment.strategy={strategy!r}; use one of {', '.join(STRATEGIES)}")
        if snap not in SNAPS:
            raise MvgenError(f"segment.snap={snap!r}; use one of {', '.join(SNAPS)}")
        if snap_tolerance < 0 or beats_per_bar < 1:
            raise MvgenError("segment.snap_tolerance must be >= 0 and segment.beats_per_bar >= 1")
        self.fps = fps
        self.min_seconds = min_seconds
        self.min_frames = max(1, round(min_seconds * fps))
        self.target_frames = max(1, round(target_seconds * fps))
        self.max_seconds_frames = round(max_seconds * fps)
        self.rule = FrameRule()
        self.max_len = self.max_seconds_frames
        self.lead_in_frames = round(lead_in * fps)
        self.strategy, self.snap = strategy, snap
        self.snap_tolerance, self.beats_per_bar = snap_tolerance, beats_per_bar

    def _use_rule(self, rule: FrameRule) -> None:
        """The longest clip is the shorter of segment.max_seconds and the longest the model can generate."""
        longest = rule.largest()
        if longest < self.min_frames:
            raise MvgenError(f"the render model's longest clip is {longest} frames ({longest / self.fps:.2f} s; "
                             f"{rule.describe()}), shorter than segment.min_seconds={self.min_seconds}; "
                             "raise render.max_frames or lower segment.min_seconds")
        self.rule = rule
        self.max_len = min(self.max_seconds_frames, longest)

    @property
    def needs_beats(self) -> bool:
        return self.strategy == "beat" or (self.strategy == "phrase" and self.snap != "none")

    # ---------------------------------------------------------------------------------------- API
    def plan(self, annotation: dict[str, Any], out_dir: Path | None = None, song_wav: Path | None = None,
             bpm: float | None = None, pins: list[float] | tuple = (), forbid: list[list[float]] | tuple = (),
             beats: BeatGrid | None = None, rule: FrameRule | None = None) -> dict[str, Any]:
        """Plan the clip windows. Beats come from ``beats`` or are detected on ``song_wav`` when needed.
        ``rule`` is the renderer's frame rule (derived from its model); every clip's generated frame count
        satisfies it, with no canvas padding."""
        self._use_rule(rule or FrameRule())
        duration = float(annotation["duration"])
        total = round(duration * self.fps)
        if total < 1:
            raise MvgenError(f"the song is {duration:.3f} s long: too short for one video frame")
        if beats is None:
            beats = detect_beats(song_wav, bpm, self.beats_per_bar) if (self.needs_beats and song_wav) else BeatGrid()
        pinned = self._pins(pins, total)
        forbidden = self._forbidden(forbid)
        phrases = annotation["phrases"]
        if self.strategy == "fixed":
            cuts = self._fixed_cuts(total, pinned)
        else:
            cuts = self._best_cuts(total, phrases, beats, pinned, forbidden)
        segments = [self._describe(i, a, b, phrases) for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:]))]
        plan = {"version": SEGMENTS_VERSION, "fps": self.fps, "duration": duration, "total_frames": total,
                "strategy": self.strategy, "snap": self.snap,
                "frame_rule": self.rule.to_dict(),
                "beats": beats.to_dict(), "pins": sorted(pinned), "segments": segments,
                "report": self._report(segments, cuts, phrases, beats)}
        if out_dir is not None:
            write_json(out_dir / SEGMENTS_JSON, plan)
        return plan

    def _pins(self, pins: list[float] | tuple, total: int) -> set[int]:
        frames = set()
        for t in pins:
            frame = self._frame(float(t))
            if not 0 < frame < total:
                raise MvgenError(f"song.cuts.pin has {t} s, outside the song (0 to {total / self.fps:.2f} s)")
            frames.add(frame)
        return frames

    def _forbidden(self, forbid: list[list[float]] | tuple) -> list[tuple[int, int]]:
        ranges = []
        for pair in forbid:
            if len(pair) != 2 or float(pair[0]) >= float(pair[1]):
                raise MvgenError(f"song.cuts.forbid entries are [start, end] with start < end; got {list(pair)}")
            ranges.append((self._frame(float(pair[0])), self._frame(float(pair[1]))))
        return ranges

    def _report(self, segments: list[dict[str, Any]], cuts: list[int], phrases: list[dict[str, Any]],
                beats: BeatGrid) -> dict[str, Any]:
        lengths = [s["frames"] / self.fps for s in segments]
        inner = cuts[1:-1]

        def near(grid: list[float]) -> int:
            return sum(1 for c in inner if grid and min(abs(c / self.fps - g) for g in grid) <= 1.0 / self.fps)

        return {
            "count": len(segments),
            "min_seconds": min(lengths), "median_seconds": statistics.median(lengths), "max_seconds": max(lengths),
            "phrases_split": sum(1 for p in phrases if p["kind"] == "lyric" and
                                 any(self._frame(p["start"]) < c < self._frame(p["end"]) for c in inner)),
            "cuts": len(inner),
            "cuts_on_downbeats": near(beats.downbeats),
            "cuts_on_beats": near(beats.beats),
        }

    # ------------------------------------------------------------------------------------ planning
    def _frame(self, seconds: float) -> int:
        return round(seconds * self.fps)

    def _candidates(self, total: int, phrases: list[dict[str, Any]], beats: BeatGrid, pinned: set[int]) -> list[int]:
        grid = [self._frame(t) for t in (beats.downbeats if self.snap != "beat" and beats.downbeats else beats.beats)]
        if self.strategy == "beat" and grid:
            points = set(grid)
        else:
            points = set(range(0, total + 1, max(1, self.fps // 5)))
            points |= {self._frame(t) for t in beats.beats} | {self._frame(t) for t in beats.downbeats}
            previous_end = 0
            for phrase in phrases:
                if phrase["kind"] == "lyric":
                    points.add(max(self._frame(phrase["start"]) - self.lead_in_frames, previous_end))
                    previous_end = self._frame(phrase["end"])
        points = {p for p in points if 0 < p < total} | pinned | {0, total}
        return sorted(points)

    def _snap_costs(self, candidates: list[int], beats: BeatGrid) -> list[float]:
        if self.snap == "none" or not beats.beats or self.snap_tolerance <= 0:
            return [0.0] * len(candidates)
        tolerance = self.snap_tolerance

        def distance(c: int, grid: list[float]) -> float:
            if not grid:
                return float("inf")
            i = bisect.bisect_left(grid, c / self.fps)
            return min(abs(c / self.fps - g) for g in grid[max(0, i - 1):i + 1])

        costs = []
        for c in candidates:
            d_beat = distance(c, beats.beats)
            if self.snap == "downbeat" and beats.downbeats:
                d_down = distance(c, beats.downbeats)
                if d_down <= tolerance:
                    costs.append(SNAP_MISS * d_down / tolerance)
                    continue
                costs.append(min(SNAP_MISS, SNAP_BEAT + SNAP_MISS * d_beat / tolerance))
            else:
                costs.append(min(SNAP_MISS, SNAP_MISS * d_beat / tolerance))
        return costs

    def _cut_costs(self, total: int, phrases: list[dict[str, Any]], candidates: list[int],
                   forbidden: list[tuple[int, int]]) -> list[float]:
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
            if (i >= 0 and words[i][0] < c < words[i][1]) or any(a <= c <= b for a, b in forbidden):
                costs.append(WORD_CUT)
                continue
            if self.strategy == "beat":
                costs.append(0.0)  # the bar grid decides; phrases are not kept whole
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

    def _best_cuts(self, total: int, phrases: list[dict[str, Any]], beats: BeatGrid, pinned: set[int],
                   forbidden: list[tuple[int, int]]) -> list[int]:
        candidates = self._candidates(total, phrases, beats, pinned)
        cut_cost = [a + b for a, b in zip(self._cut_costs(total, phrases, candidates, forbidden),
                                          self._snap_costs(candidates, beats))]
        if self.strategy == "beat" and len(candidates) > 2 and any(
                b - a > self.max_len for a, b in zip(candidates, candidates[1:])):
            # bars longer than the maximum (very slow tempo or a gap in the grid): add the lattice back
            candidates = sorted(set(candidates) | set(range(0, total + 1, max(1, self.fps // 5))))
            cut_cost = [a + b for a, b in zip(self._cut_costs(total, phrases, candidates, forbidden),
                                              self._snap_costs(candidates, beats))]
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
                if candidates[i] in pinned:
                    break  # a pinned cut cannot be jumped over
                i -= 1
        if best[n - 1] == float("inf"):
            raise MvgenError("no plan satisfies the limits: pinned cuts further apart than segment.max_seconds; "
                             "add pins or raise max_seconds")
        cuts, j = [], n - 1
        while j > 0:
            cuts.append(candidates[j])
            j = back[j]
        cuts.append(0)
        return cuts[::-1]

    def _fixed_cuts(self, total: int, pinned: set[int]) -> list[int]:
        """Even windows near the target length between pinned cuts, none longer than the maximum."""
        anchors = [0, *sorted(pinned), total]
        cuts = [0]
        for a, b in zip(anchors, anchors[1:]):
            span = b - a
            count = max(1, round(span / self.target_frames), -(-span // self.max_len))
            cuts += [a + round(k * span / count) for k in range(1, count + 1)]
        return cuts

    # ---------------------------------------------------------------------------------- describing
    def _describe(self, index: int, start: int, end: int, phrases: list[dict[str, Any]]) -> dict[str, Any]:
        t0, t1 = start / self.fps, end / self.fps
        inside = [p for p in phrases if min(p["end"], t1) - max(p["start"], t0) > 0]

        def overlap(p: dict[str, Any]) -> float:
            return min(p["end"], t1) - max(p["start"], t0)

        # a phrase belongs to the segment holding most of it, and to each part of a split long phrase
        lyric = [p for p in inside if p["kind"] == "lyric" and
                 overlap(p) >= 0.5 * min(max(p["end"] - p["start"], 1e-6), t1 - t0)]
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
            "generate_frames": self.rule.frames_for(covered),
            "kind": "lyric" if lyric else "instrumental",
            "section": section,
            "section_index": main["section_index"] if main else 1,
            "text": " / ".join(p["text"] for p in lyric),
            "lines": [p["line"] for p in lyric],
            "performers": list(dict.fromkeys(name for p in lyric for name in p.get("performers", []))),
            "words": words,
            "mood": MOODS.get(section, "atmospheric"),
        }


def format_report(plan: dict[str, Any]) -> str:
    r = plan["report"]
    tempo = plan["beats"]["tempo"]
    beats = (f", {r['cuts_on_downbeats']}/{r['cuts']} cuts on downbeats, {r['cuts_on_beats']}/{r['cuts']} on beats "
             f"({tempo:.1f} bpm)") if tempo else ""
    return (f"segments ({plan['strategy']}): {r['count']} clips, length min {r['min_seconds']:.2f} s / median "
            f"{r['median_seconds']:.2f} s / max {r['max_seconds']:.2f} s, {r['phrases_split']} phrases split{beats}, "
            f"{plan['total_frames']} frames at {plan['fps']} fps")
