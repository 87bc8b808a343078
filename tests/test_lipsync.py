"""Lip-sync QA on the animatic's singer: a mouth shifted by k frames is measured at k (+-1) and re-rolled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mvgen.lipsync import BoxMouthTracker, estimate_offset, vocal_envelope
from mvgen.media.video import read_frames
from mvgen.stages.render import AnimaticRenderer

SEGMENT = {"index": 0, "name": "seg_000", "kind": "lyric", "frames": 100, "generate_frames": 105, "start": 0.0,
           "end": 4.0, "words": []}


def _sung(seconds: float = 4.4, seed: int = 3) -> np.ndarray:
    """Syllables at irregular times: a voice-band tone in short bursts, over a steady bass outside the band."""
    rate = 48000
    t = np.arange(int(seconds * rate)) / rate
    gate = np.zeros_like(t)
    rng = np.random.default_rng(seed)
    at = 0.1
    while at < seconds - 0.3:
        length = rng.uniform(0.08, 0.3)
        gate[(t >= at) & (t < at + length)] = rng.uniform(0.4, 1.0)
        at += length + rng.uniform(0.05, 0.35)
    mono = 0.4 * gate * np.sin(2 * np.pi * 700 * t) + 0.2 * np.sin(2 * np.pi * 60 * t)
    return np.stack([mono, mono], axis=1).astype(np.float32)


class LateMouth(AnimaticRenderer):
    """The first ``late_takes`` takes draw the mouth ``lag`` frames late, as a drifting video model would."""

    def __init__(self, lag: int, late_takes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lag, self.late_takes = lag, late_takes

    def mouth_lag(self, segment: dict[str, Any], take: int) -> int:
        return self.lag if take < self.late_takes else 0


@pytest.fixture()
def frame(tmp_path: Path) -> Path:
    Image.fromarray((np.random.default_rng(0).random((192, 320, 3)) * 255).astype("uint8")).save(tmp_path / "f.png")
    return tmp_path / "f.png"


@pytest.mark.parametrize("lag", [3, -4, 6])
def test_a_shifted_mouth_is_measured_and_rerolled(frame: Path, tmp_path: Path, lag: int) -> None:
    renderer = LateMouth(lag, late_takes=1, width=320, height=192, captions=False)
    info = renderer.render(SEGMENT, frame, _sung(), tmp_path / "clip.mp4")
    first, kept = info["sync"]["attempts"][0], info["sync"]
    assert abs(first["offset_frames"] - lag) <= 1, info["sync"]  # measured k +- 1
    assert kept["rerolls"] == 1 and kept["take"] == 1 and kept["offset_frames"] == 0 and kept["in_sync"]
    assert (tmp_path / "sync.png").is_file()
    # and the clip really carries the kept take: its mouth, read back from the decoded video, follows the voice
    tracker = BoxMouthTracker(renderer.mouth_box())
    mouth = tracker.openness(read_frames(tmp_path / "clip.mp4"))
    envelope = vocal_envelope(_sung(), 48000, 25, SEGMENT["frames"])
    assert estimate_offset(mouth, envelope)["offset_frames"] == 0


def test_a_mouth_that_stays_off_is_reported_after_the_last_reroll(frame: Path, tmp_path: Path) -> None:
    renderer = LateMouth(5, late_takes=99, width=320, height=192, captions=False, sync_rerolls=2)
    sync = renderer.render(SEGMENT, frame, _sung(), tmp_path / "clip.mp4")["sync"]
    assert sync["rerolls"] == 2 and not sync["in_sync"] and abs(sync["offset_frames"] - 5) <= 1


def test_instrumental_clips_are_not_checked(frame: Path, tmp_path: Path) -> None:
    info = AnimaticRenderer(width=320, height=192).render({**SEGMENT, "kind": "instrumental"}, frame, _sung(),
                                                          tmp_path / "clip.mp4")
    assert "sync" not in info  # no singer on screen: nothing to check


def test_without_the_face_weights_real_clips_say_why_they_are_not_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from mvgen import face

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "facenet_pytorch" else real(name, *a))
    reason = face.face_model_available()
    assert reason is not None and "facenet-pytorch" in reason and "scripts/setup.sh" in reason
