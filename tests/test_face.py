"""The real-clip lip-sync tracker: MTCNN (weights from the facenet-pytorch wheel) on a real face photograph
whose mouth is made to open with a sung track, shifted by k frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mvgen.face import FaceMouthTracker, MtcnnDetector, face_model_available
from mvgen.lipsync import estimate_offset, vocal_envelope
from mvgen.stages.render_ltx import LtxRenderer
from tests.test_lipsync import _sung
from tests.test_render_ltx import _renderer

pytestmark = pytest.mark.skipif(face_model_available() is not None, reason=str(face_model_available()))

FPS = 25


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """Grace Hopper's portrait, which ships with matplotlib: a real face, no download."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return np.asarray(Image.open(path).convert("RGB"))


def _singing(photo: np.ndarray, envelope: np.ndarray, lag: int, shift: tuple[int, int] = (0, 0)) -> list[np.ndarray]:
    """Frames of the photo whose mouth opens with ``envelope``, ``lag`` frames late, the head drifting by ``shift``
    pixels over the clip."""
    (lx, ly), (rx, ry) = MtcnnDetector().detect(photo)[0].landmarks[3:5]
    frames = []
    for i in range(len(envelope)):
        image = Image.fromarray(photo)
        openness = float(envelope[min(max(i - lag, 0), len(envelope) - 1)])
        middle, half = (ly + ry) / 2 + 4, 1 + 14 * openness
        ImageDraw.Draw(image).ellipse((lx + 6, middle - half, rx - 6, middle + half), fill=(25, 10, 12))
        dx, dy = (round(shift[0] * i / len(envelope)), round(shift[1] * i / len(envelope)))
        frames.append(np.roll(np.asarray(image), (dy, dx), axis=(0, 1)))
    return frames


def test_mtcnn_finds_the_face_and_its_mouth(photo: np.ndarray) -> None:
    faces = MtcnnDetector().detect(photo)
    assert len(faces) == 1 and faces[0].score > 0.99
    eyes, nose, mouth = faces[0].landmarks[:2], faces[0].landmarks[2], faces[0].landmarks[3:]
    x0, y0, x1, y1 = faces[0].box
    assert x0 < eyes[0][0] < eyes[1][0] < x1 and y0 < eyes[:, 1].max() < nose[1] < mouth[:, 1].min() < y1
    assert MtcnnDetector().detect(np.full_like(photo, 128)) == []  # a blank frame has no face


@pytest.mark.parametrize("lag", [0, 3, -5])
def test_a_real_face_mouth_shifted_by_k_frames_is_measured_at_k(photo: np.ndarray, lag: int) -> None:
    envelope = vocal_envelope(_sung(3.2, seed=5), 48000, FPS, 80)
    tracker = FaceMouthTracker()
    mouth = tracker.openness(_singing(photo, envelope, lag, shift=(12, -6)))
    result = estimate_offset(mouth, envelope)
    assert tracker.faces_found == 80
    assert abs(result["offset_frames"] - lag) <= 1 and result["confidence"] > 0.5, result


def test_a_frozen_mouth_has_no_confidence(photo: np.ndarray) -> None:
    envelope = vocal_envelope(_sung(3.2, seed=5), 48000, FPS, 80)
    frozen = _singing(photo, np.full(80, 0.5, np.float32), 0)
    assert estimate_offset(FaceMouthTracker().openness(frozen), envelope)["confidence"] < 0.3


def test_an_ltx_clip_whose_mouth_is_late_is_rendered_again_with_new_seeds(photo: np.ndarray, tiny_ltx: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    """The LTX render loop: take 0's mouth trails the voice by 4 frames; take 1 (new seeds) is in sync and kept.
    The tiny random LTX-2 gives the frame rule and the audio latents; the frames are the singing photograph."""
    import torch

    from mvgen.media.video import read_frames

    audio = np.concatenate([_sung(3.6, seed=5), np.zeros((4800, 2), np.float32)])
    envelope = vocal_envelope(audio, 48000, FPS, 80)
    portrait = np.asarray(Image.fromarray(photo).resize((512, 576)))
    asked: list[int] = []

    class Singer(LtxRenderer):
        def frames_on_device(self, segment: dict, image_path: Path, audio_latents: object, prompt: str,
                             candidate: int = 0) -> torch.Tensor:
            asked.append(candidate)
            lag = 4 if candidate == 0 else 0
            frames = _singing(portrait, np.concatenate([envelope, envelope[-1:]]), lag)
            return torch.from_numpy(np.stack(frames))

    renderer = _renderer(tiny_ltx, Singer, width=512, height=576, two_stage=False)
    Image.fromarray(portrait).save(tmp_path / "frame.png")
    segment = {"index": 0, "name": "seg_000", "kind": "lyric", "frames": 80, "generate_frames": 81, "start": 0.0,
               "end": 3.2, "words": []}
    info = renderer.render(segment, tmp_path / "frame.png", audio, tmp_path / "clip.mp4", prompt="a singer")
    sync = info["sync"]
    assert asked == [0, 1]  # the re-roll drew a new candidate seed
    assert sync["checked"] and sync["tracker"] == "mtcnn" and sync["face_frames"] == 80
    assert abs(sync["attempts"][0]["offset_frames"] - 4) <= 1 and sync["take"] == 1 and sync["rerolls"] == 1
    assert abs(sync["offset_frames"]) <= 1 and sync["in_sync"]
    assert (tmp_path / "sync.png").is_file() and not list(tmp_path.glob("take_*"))
    assert len(read_frames(tmp_path / "clip.mp4")) == 80


def test_a_clip_from_a_frame_without_a_face_is_not_checked_or_rerolled(tiny_ltx: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    """A lyric segment may show a landscape: no face in the approved frame means no mouth to check, not a
    clip to render three times."""
    import torch

    asked: list[int] = []

    class Landscape(LtxRenderer):
        def frames_on_device(self, segment: dict, image_path: Path, audio_latents: object, prompt: str,
                             candidate: int = 0) -> torch.Tensor:
            asked.append(candidate)
            return torch.full((17, 64, 64, 3), 90, dtype=torch.uint8)

    renderer = _renderer(tiny_ltx, Landscape, two_stage=False)
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "frame.png")
    segment = {"index": 0, "name": "seg_000", "kind": "lyric", "frames": 16, "generate_frames": 17, "start": 0.0,
               "end": 0.64, "words": []}
    info = renderer.render(segment, tmp_path / "frame.png", _sung(0.8), tmp_path / "clip.mp4", prompt="a valley")
    assert asked == [0] and info["sync"] == {"checked": False, "reason": "no face in the approved frame: no mouth "
                                                                         "to check"}
