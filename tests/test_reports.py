"""Pictures: the timeline stays readable for a 4-minute song; the contact sheet marks approvals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mvgen.media.audio import write_wav
from mvgen.report.contact_sheet import contact_sheet
from mvgen.report.timeline import plot_timeline
from mvgen.stages.beats import BeatGrid

from .test_segment import _annotation, _grid


def test_timeline_of_a_four_minute_song(tmp_path: Path) -> None:
    from mvgen.stages.segment import SegmentPlanner

    duration = 240.0
    t = np.arange(int(duration * 8000)) / 8000
    audio = np.stack([0.2 * np.sin(2 * np.pi * 110 * t)] * 2, axis=1).astype(np.float32)
    write_wav(tmp_path / "song.wav", audio, 8000)
    spans = [(6.0 + 8.0 * k, 10.5 + 8.0 * k) for k in range(28)]
    annotation = _annotation(duration, spans)
    plan = SegmentPlanner(fps=25).plan(annotation, beats=_grid(duration, 100.0, 0.0))
    plot_timeline(tmp_path / "song.wav", annotation, plan, tmp_path / "timeline.png", "four minutes")
    with Image.open(tmp_path / "timeline.png") as image:
        # 40 inches at 100 dpi: about 17 px per second of song, so each clip label has room
        assert image.width >= 3500 and image.height >= 600


def test_contact_sheet_marks_the_approved_candidate(tmp_path: Path) -> None:
    paths = []
    for k in range(3):
        path = tmp_path / f"c{k}.png"
        Image.new("RGB", (96, 54), (40 * k, 40, 40)).save(path)
        paths.append(path)
    contact_sheet([{"label": "seg_000\n0.00-4.80 s", "paths": paths, "approved": 1}], tmp_path / "sheet.png")
    sheet = np.asarray(Image.open(tmp_path / "sheet.png").convert("RGB"))
    green = (sheet[..., 1] > 180) & (sheet[..., 0] < 100) & (sheet[..., 2] < 150)
    columns = np.flatnonzero(green.any(axis=0))
    assert columns.size and 260 + 240 < columns.mean() < 260 + 2 * 246 + 10  # the outline sits on candidate 1


def test_beat_grid_serialises() -> None:
    assert BeatGrid(100.0, [0.6, 1.2], [0.6]).to_dict() == {"tempo": 100.0, "beats": [0.6, 1.2], "downbeats": [0.6]}


def test_flagged_lines_are_marked_on_the_timeline(tmp_path: Path) -> None:
    from mvgen.stages.segment import SegmentPlanner

    duration = 30.0
    t = np.arange(int(duration * 8000)) / 8000
    write_wav(tmp_path / "song.wav", np.stack([0.2 * np.sin(2 * np.pi * 110 * t)] * 2, axis=1).astype(np.float32), 8000)
    annotation = _annotation(duration, [(2.0, 6.0), (8.0, 12.0), (14.0, 18.0)])
    plan = SegmentPlanner(fps=25).plan(annotation, beats=_grid(duration, 100.0, 0.0))
    plot_timeline(tmp_path / "song.wav", annotation, plan, tmp_path / "plain.png")
    lyric = next(p for p in annotation["phrases"] if p["kind"] == "lyric" and p["start"] >= 8.0)
    flagged = {**annotation, "flags": [{"phrase": lyric["index"], "line": lyric["line"], "problem": "split line"}]}
    plot_timeline(tmp_path / "song.wav", flagged, plan, tmp_path / "flagged.png")
    plain = np.asarray(Image.open(tmp_path / "plain.png").convert("L"), np.int16)
    marked = np.asarray(Image.open(tmp_path / "flagged.png").convert("L"), np.int16)
    columns = np.nonzero(np.abs(plain - marked).max(axis=0) > 60)[0] / plain.shape[1]
    assert columns.size and 0.2 < np.median(columns) < 0.5  # the hatch sits over the flagged line (8-12 s of 30)


def test_the_voiced_stretches_show_on_the_timeline(tmp_path: Path) -> None:
    from mvgen.stages.segment import SegmentPlanner

    duration = 30.0
    t = np.arange(int(duration * 8000)) / 8000
    write_wav(tmp_path / "song.wav", np.stack([0.2 * np.sin(2 * np.pi * 110 * t)] * 2, axis=1).astype(np.float32), 8000)
    annotation = _annotation(duration, [(2.0, 6.0), (20.0, 24.0)])
    plan = SegmentPlanner(fps=25).plan(annotation, beats=_grid(duration, 100.0, 0.0))
    plot_timeline(tmp_path / "song.wav", annotation, plan, tmp_path / "plain.png")
    voiced = {**annotation, "aligner": {"voiced": [[20.0, 24.0]]}}
    plot_timeline(tmp_path / "song.wav", voiced, plan, tmp_path / "voiced.png")
    plain = np.asarray(Image.open(tmp_path / "plain.png").convert("RGB"), np.int16)
    shown = np.asarray(Image.open(tmp_path / "voiced.png").convert("RGB"), np.int16)
    green = (shown[..., 1] - shown[..., 0] > 40) & (np.abs(shown - plain).max(axis=2) > 40)
    columns = np.flatnonzero(green.any(axis=0)) / plain.shape[1]
    # the band sits over 20-24 s of 30 (the legend swatch, top right, is the rest)
    assert columns.size and 0.6 < np.median(columns) < 0.85
