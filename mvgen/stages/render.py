"""Stage 5a, render: approved frame + the segment's slice of the song -> ``clips/<segment>.mp4``.

Every renderer generates ``segment["generate_frames"]`` frames (the video model's frame rule, LTX's
8k+1), and the clip keeps exactly the ``segment["frames"]`` it covers, so clips tile the song
frame-exactly. Each clip carries its slice of the original song as AAC, for reviewing clips alone.

``LtxRenderer`` (``render_ltx.py``): LTX-2.3 audio-conditioned image-to-video on Lightricks' two-stage recipe.

``AnimaticRenderer`` (CPU preview): a slow camera move on the approved frame (push in, pull out, pan,
rise; chosen per segment from the seed) with the current lyric line as a caption whose words light up
at their aligned times. What directors check timing with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from mvgen.errors import MvgenError
from mvgen.framing import FrameRule
from mvgen.media.captions import CaptionPainter
from mvgen.media.video import AUDIO_RATE, check_preset, write_clip
from mvgen.util import derive_seed
from mvgen.stages.protocols import RenderStage

CAMERA_MOVES = ("push_in", "pull_out", "pan_right", "pan_left", "rise")


def _ease(t: float) -> float:
    return t * t * (3.0 - 2.0 * t)


class AnimaticRenderer(RenderStage):
    def __init__(self, fps: int = 25, width: int = 960, height: int = 544, frame_step: int = 8,
                 max_frames: int = 257, zoom: float = 0.12, captions: bool = True, preset: str = "veryfast",
                 crf: int = 20, seed: int = 0) -> None:
        check_fps(fps)
        if width % 32 or height % 32:
            raise MvgenError(f"render size {width}x{height} must be multiples of 32 (the video model's grid); "
                             "e.g. 960x544 or 1920x1088")
        if not 0 <= zoom < 1:
            raise MvgenError(f"render.zoom={zoom}; use a value in [0, 1)")
        if frame_step > 1 and (max_frames - 1) % frame_step:
            raise MvgenError(f"render.max_frames={max_frames} breaks the frame rule {frame_step}k+1; "
                             f"use e.g. {frame_step * ((max_frames - 1) // frame_step) + 1}")
        self.fps, self.width, self.height = fps, width, height
        self.frame_step, self.max_frames = frame_step, max_frames
        self.zoom, self.captions = zoom, captions
        self.preset, self.crf, self.seed = preset, crf, seed
        check_preset(preset, "render.preset")

    def frame_rule(self) -> FrameRule:
        """The animatic stands in for the video model: its frame rule is the one its config names."""
        return FrameRule(step=max(1, self.frame_step), grid=32, max_frames=self.max_frames,
                         source="render.frame_step (animatic)")

    def prepare(self, prompts: list[str]) -> None:
        """Nothing to encode ahead: the animatic does not read prompts."""

    def camera_move(self, segment: dict[str, Any]) -> str:
        return CAMERA_MOVES[derive_seed(self.seed, "camera", segment["index"]) % len(CAMERA_MOVES)]

    def render(self, segment: dict[str, Any], image_path: Path, audio: np.ndarray, out_path: Path,
               prompt: str = "") -> dict[str, Any]:
        """audio: the song from the segment's start, covering every generated frame (48 kHz stereo)."""
        self.frame_rule().check_segment(segment)
        generated = self.generate(segment, image_path)
        covered = segment["frames"]
        count = write_clip(out_path, _take(generated, covered), self.fps, self.width, self.height,
                           self.preset, self.crf, audio=covered_audio(audio, covered, self.fps))
        if count != covered:
            raise RuntimeError(f"{segment['name']}: renderer produced {count} of {covered} frames")
        return {"frames": count, "generated": segment["generate_frames"], "camera": self.camera_move(segment)}

    def generate(self, segment: dict[str, Any], image_path: Path) -> Iterator[np.ndarray]:
        """Yield ``segment["generate_frames"]`` RGB frames."""
        source = Image.open(image_path).convert("RGB").resize((self.width, self.height), Image.LANCZOS)
        move = self.camera_move(segment)
        total = segment["generate_frames"]
        captions = CaptionPainter(segment, self.width, self.height) if self.captions else None
        for i in range(total):
            progress = _ease(i / max(total - 1, 1))
            frame = source.resize((self.width, self.height), Image.BILINEAR, box=self._box(move, progress))
            if captions is not None:
                captions.paint(frame, segment["start"] + i / self.fps)
            yield np.asarray(frame)

    def _box(self, move: str, p: float) -> tuple[float, float, float, float]:
        w, h, z = self.width, self.height, self.zoom
        scale = {"push_in": 1 + z * p, "pull_out": 1 + z * (1 - p)}.get(move, 1 + z)
        bw, bh = w / scale, h / scale
        slack_x, slack_y = w - bw, h - bh
        x = {"pan_right": slack_x * p, "pan_left": slack_x * (1 - p)}.get(move, slack_x / 2)
        y = slack_y * (1 - p) if move == "rise" else slack_y / 2
        return (x, y, x + bw, y + bh)


def check_fps(fps: int) -> None:
    if fps <= 0:
        raise MvgenError(f"render.fps={fps}; use a positive frame rate such as 25")


def covered_audio(audio: np.ndarray, frames: int, fps: int) -> np.ndarray:
    """The part of the generation audio (48 kHz) under the ``frames`` a clip keeps."""
    return audio[: int(round(frames / fps * AUDIO_RATE))]


def generation_audio(samples: np.ndarray, rate: int, segment: dict[str, Any], fps: int) -> np.ndarray:
    """The song from the segment's start, long enough for every frame the renderer generates (zero-padded past
    the song's end); renderers keep only the covered part for the clip itself."""
    a = int(round(segment["start"] * rate))
    b = a + int(round(segment["generate_frames"] / fps * rate))
    chunk = samples[a:b]
    if len(chunk) < b - a:
        chunk = np.concatenate([chunk, np.zeros((b - a - len(chunk), samples.shape[1]), samples.dtype)])
    return chunk


def build_clip(render: RenderStage, segment: dict[str, Any], image: Path, prompt: str, song_wav: Path,
               tmp: Path) -> dict[str, Any]:
    """One segment's clip, validated (a top-level function: picklable for fan-out workers)."""
    from mvgen.media.audio import read_wav
    from mvgen.validate import check_clip

    samples, rate = read_wav(song_wav)
    info = render.render(segment, image, generation_audio(samples, rate, segment, render.fps), tmp / "clip.mp4",
                         prompt=prompt)
    return {**info, "flags": check_clip(tmp / "clip.mp4", segment["frames"], (render.width, render.height),
                                        render.fps)}


def _take(frames: Iterator[np.ndarray], count: int) -> Iterator[np.ndarray]:
    """Normalization: keep the first ``count`` of the generated frames (the covered window)."""
    for i, frame in enumerate(frames):
        if i >= count:
            return
        yield frame
