"""The phrase planner: frame rule, invariants on random layouts (hypothesis), phrase integrity, limits."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mvgen.errors import MvgenError
from mvgen.framing import FrameRule
from mvgen.stages.annotate import with_instrumentals
from mvgen.stages.beats import BeatGrid
from mvgen.stages.segment import SegmentPlanner, frames_to_generate


# LTX-2 DFR: 8k+1 frames whose canvas (n - 1 in whole 24- or 32-frame segments) needs no padding
LTX_RULE = FrameRule(step=8, canvas=(24, 32), max_frames=257)


@pytest.mark.parametrize("covered,expected", [(1, 25), (2, 25), (25, 25), (26, 33), (34, 49), (120, 121),
                                              (122, 129), (130, 145), (186, 193), (200, 217), (257, 257)])
def test_ltx_canvas_rule_wastes_no_padding(covered: int, expected: int) -> None:
    from diffusers.pipelines.ltx2.dfr_layout import resolve_canvas

    assert LTX_RULE.frames_for(covered) == expected
    assert resolve_canvas(expected, 8)[0] == expected  # the pipeline's own canvas: nothing padded
    assert LTX_RULE.largest() == 257 and FrameRule(step=8, canvas=(24, 32), max_frames=250).largest() == 241


def test_a_rule_too_short_for_min_seconds_is_one_line() -> None:
    with pytest.raises(MvgenError, match="shorter than segment.min_seconds") as info:
        SegmentPlanner(min_seconds=4.0, fps=25).plan(_annotation(20.0, [(1.0, 3.0)]), beats=BeatGrid(),
                                                     rule=FrameRule(step=8, max_frames=49))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("covered,expected", [(1, 1), (2, 9), (9, 9), (10, 17), (120, 121), (121, 121),
                                              (193, 193), (200, 201), (257, 257)])
def test_ltx_frame_rule(covered: int, expected: int) -> None:
    assert frames_to_generate(covered, 8) == expected
    assert (expected - 1) % 8 == 0 and expected >= covered


def test_frame_step_one_means_any_count() -> None:
    assert frames_to_generate(200, 1) == 200


def _annotation(duration: float, spans: list[tuple[float, float]]) -> dict[str, Any]:
    lyric = []
    for i, (start, end) in enumerate(spans):
        n = max(1, int((end - start) / 0.4))
        step = (end - start) / n
        words = [{"word": f"w{k}", "start": start + k * step, "end": start + (k + 0.8) * step, "probability": 0.9}
                 for k in range(n)]
        lyric.append({"kind": "lyric", "text": f"line {i}", "line": i, "section": "verse", "section_index": 1,
                      "start": start, "end": end, "confidence": 0.9, "words": words})
    return {"duration": duration, "phrases": with_instrumentals(lyric, duration, 2.0)}


@st.composite
def layouts(draw: st.DrawFn) -> dict[str, Any]:
    duration = draw(st.floats(min_value=0.5, max_value=240.0))
    spans, cursor = [], draw(st.floats(min_value=0.0, max_value=8.0))
    for _ in range(draw(st.integers(min_value=0, max_value=40))):
        length = draw(st.floats(min_value=0.3, max_value=12.0))
        if cursor + length > duration:
            break
        spans.append((cursor, cursor + length))
        cursor += length + draw(st.floats(min_value=0.05, max_value=10.0))
    return _annotation(duration, spans)


def _grid(duration: float, bpm: float, phase: float) -> BeatGrid:
    beat = 60.0 / bpm
    beats = [phase + k * beat for k in range(int((duration - phase) / beat) + 1) if phase + k * beat < duration]
    return BeatGrid(bpm, beats, beats[::4])


@given(layout=layouts(), fps=st.sampled_from([24, 25, 30]), max_seconds=st.floats(min_value=4.0, max_value=10.0),
       strategy=st.sampled_from(["phrase", "beat", "fixed"]), bpm=st.floats(min_value=60, max_value=180),
       phase=st.floats(min_value=0.0, max_value=0.5), with_beats=st.booleans(),
       rule=st.sampled_from([FrameRule(step=8, max_frames=257), LTX_RULE]))
@settings(max_examples=80, deadline=None)
def test_plan_invariants(layout: dict[str, Any], fps: int, max_seconds: float, strategy: str, bpm: float,
                         phase: float, with_beats: bool, rule: FrameRule) -> None:
    planner = SegmentPlanner(min_seconds=2.0, target_seconds=min(5.0, max_seconds), max_seconds=max_seconds,
                            fps=fps, strategy=strategy)
    beats = _grid(layout["duration"], bpm, phase) if with_beats else BeatGrid()
    plan = planner.plan(layout, beats=beats, rule=rule)
    segments = plan["segments"]
    total = round(layout["duration"] * fps)
    assert plan["total_frames"] == total
    assert sum(s["frames"] for s in segments) == total  # exact frame sum
    assert segments[0]["start_frame"] == 0 and segments[-1]["end_frame"] == total  # covers the song
    for a, b in zip(segments, segments[1:]):
        assert a["end_frame"] == b["start_frame"]  # contiguous: no gaps, no overlaps
    for s in segments:
        assert s["frames"] == s["end_frame"] - s["start_frame"] >= 1
        # times are rounded to 6 decimals: within half a microsecond of the frame boundary, at any size
        assert s["start"] == pytest.approx(s["start_frame"] / fps, rel=0, abs=5e-7)
        assert s["end"] == pytest.approx(s["end_frame"] / fps, rel=0, abs=5e-7)
        assert s["frames"] <= planner.max_len  # within max_seconds and the frame budget
        assert s["generate_frames"] == rule.frames_for(s["frames"]) <= 257
        assert rule.allowed(s["generate_frames"]) and rule.canvas_frames(s["generate_frames"]) == s["generate_frames"]
    if strategy != "phrase":
        return
    # phrase integrity: every phrase that fits the maximum lies inside one segment (to the frame)
    for phrase in layout["phrases"]:
        if phrase["kind"] != "lyric":
            continue
        a, b = round(phrase["start"] * fps), round(phrase["end"] * fps)
        if b - a <= planner.max_len - 2 * planner.lead_in_frames:
            holders = [s for s in segments if s["start_frame"] <= a and b <= s["end_frame"]]
            cut_inside = [s["start_frame"] for s in segments if a < s["start_frame"] < b]
            assert holders or not cut_inside, f"phrase {phrase['start']:.2f}-{phrase['end']:.2f} was cut"


def test_cuts_move_to_downbeats_within_tolerance() -> None:
    # phrases at 5.1, 10.3, 15.2 s; downbeats every 2.4 s from 0: 4.8, 9.6/12.0, 14.4
    layout = _annotation(24.0, [(5.1, 8.0), (10.3, 13.0), (15.2, 18.0)])
    beats = _grid(24.0, 100.0, 0.0)
    plan = SegmentPlanner(min_seconds=1.0, target_seconds=5.0, max_seconds=8.0, fps=25, snap="downbeat",
                         snap_tolerance=0.4).plan(layout, beats=beats)
    cuts = [s["start"] for s in plan["segments"][1:]]
    assert 4.8 in cuts  # 5.1 - 0.24 = 4.86 -> the downbeat at 4.8
    assert plan["report"]["cuts_on_downbeats"] >= 2
    no_snap = SegmentPlanner(min_seconds=1.0, target_seconds=5.0, max_seconds=8.0, fps=25, snap="none").plan(
        layout, beats=beats)
    assert 4.8 not in [s["start"] for s in no_snap["segments"][1:]]


def test_beat_strategy_cuts_whole_bars() -> None:
    layout = _annotation(48.0, [(5.0, 8.0), (20.0, 23.0)])
    plan = SegmentPlanner(target_seconds=4.8, max_seconds=8.0, fps=25, strategy="beat").plan(
        layout, beats=_grid(48.0, 100.0, 0.0))
    for segment in plan["segments"]:
        assert segment["start_frame"] % 60 == 0  # 2.4 s bars at 25 fps = 60 frames


def test_fixed_strategy_is_even() -> None:
    plan = SegmentPlanner(target_seconds=5.0, fps=25, strategy="fixed", snap="none").plan(_annotation(60.0, []))
    assert [s["frames"] for s in plan["segments"]] == [125] * 12


def test_song_pins_and_forbidden_ranges() -> None:
    layout = _annotation(40.0, [(3.0, 6.0), (12.0, 15.0), (25.0, 28.0)])
    planner = SegmentPlanner(fps=25)
    plan = planner.plan(layout, pins=[20.0, 33.0], forbid=[[8.0, 11.0]])
    starts = [s["start"] for s in plan["segments"]]
    assert 20.0 in starts and 33.0 in starts
    assert not any(8.0 <= t <= 11.0 for t in starts)
    assert plan["pins"] == [500, 825]
    with pytest.raises(MvgenError, match="outside the song"):
        planner.plan(layout, pins=[41.0])
    with pytest.raises(MvgenError, match="start < end"):
        planner.plan(layout, forbid=[[5.0, 4.0]])


def test_long_phrase_is_split_between_words_not_inside() -> None:
    layout = _annotation(30.0, [(2.0, 20.0)])  # 18 s phrase, max 8 s
    plan = SegmentPlanner(max_seconds=8.0, fps=25).plan(layout)
    words = layout["phrases"][1]["words"]
    for segment in plan["segments"][1:]:
        t = segment["start"]
        assert not any(w["start"] < t < w["end"] for w in words), f"cut at {t} inside a word"
    assert plan["report"]["phrases_split"] == 1


def test_cuts_land_just_before_phrases() -> None:
    layout = _annotation(20.0, [(5.0, 8.0), (10.0, 13.0), (15.0, 18.0)])
    plan = SegmentPlanner(min_seconds=1.0, target_seconds=5.0, max_seconds=8.0, lead_in=0.24, fps=25).plan(layout)
    starts = {s["start"] for s in plan["segments"]}
    for onset in (5.0, 10.0, 15.0):
        assert any(abs(onset - 0.24 - t) < 0.05 for t in starts), (onset, sorted(starts))


@pytest.mark.parametrize("kwargs,match", [
    ({"min_seconds": 6.0, "target_seconds": 5.0, "max_seconds": 8.0}, "min_seconds <= target_seconds"),
    ({"fps": 0}, "fps must be positive"),
    ({"strategy": "random"}, "segment.strategy"),
    ({"snap": "bar"}, "segment.snap"),
])
def test_invalid_limits_fail_with_one_line(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(MvgenError, match=match) as info:
        SegmentPlanner(**kwargs)
    assert "\n" not in str(info.value)
