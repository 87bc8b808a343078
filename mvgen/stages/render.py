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
                 crf: int = 20, seed: int = 0, lipsync: bool = True, sync_max_offset: int = 2,
                 sync_min_confidence: float = 0.3, sync_rerolls: int = 2) -> None:
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
        self.lipsync, self.sync_max_offset = lipsync, sync_max_offset
        self.sync_min_confidence, self.sync_rerolls = sync_min_confidence, sync_rerolls

    def frame_rule(self) -> FrameRule:
        """The animatic stands in for the video model: its frame rule is the one its config names."""
        return FrameRule(step=max(1, self.frame_step), grid=32, max_frames=self.max_frames,
                         source="render.frame_step (animatic)")

    def prepare(self, prompts: list[str]) -> None:
        """Nothing to encode ahead: the animatic does not read prompts."""

    def camera_move(self, segment: dict[str, Any]) -> str:
        """Per segment from the seed; each new take (a reviewer's re-roll) moves differently."""
        base = derive_seed(self.seed, "camera", segment["index"])
        return CAMERA_MOVES[(base + int(segment.get("take", 0))) % len(CAMERA_MOVES)]

    def render(self, segment: dict[str, Any], image_path: Path, audio: np.ndarray, out_path: Path,
               prompt: str = "") -> dict[str, Any]:
        """audio: the song from the segment's start, covering every generated frame (48 kHz stereo).

        A lyric segment's singer gets a mouth that opens with the voice; the clip is then checked for lip sync
        (``mvgen.lipsync``) and rendered again, up to ``sync_rerolls`` times, when its mouth is more than
        ``sync_max_offset`` frames off or the match is weaker than ``sync_min_confidence``; the best is kept."""
        from mvgen.lipsync import (BoxMouthTracker, estimate_offset, in_sync, keep_take, sync_figure, sync_record,
                                   vocal_envelope)

        self.frame_rule().check_segment(segment)
        covered = segment["frames"]
        singing = self.lipsync and segment.get("kind") == "lyric"
        envelope = vocal_envelope(audio, AUDIO_RATE, self.fps, segment["generate_frames"]) if singing else None
        info = {"frames": covered, "generated": segment["generate_frames"], "camera": self.camera_move(segment)}
        if envelope is None:
            self._write(segment, image_path, audio, out_path)
            return info
        tracker = BoxMouthTracker(self.mouth_box())
        takes: list[dict[str, Any]] = []  # each take is kept in its own file until the best is known
        for take in range(1 + self.sync_rerolls):
            measured: list[float] = []
            path = out_path.with_name(f"take_{take}{out_path.suffix}")
            self._write(segment, image_path, audio, path, envelope, take, tracker, measured)
            mouth = np.array(measured[:covered], np.float32)
            result = estimate_offset(mouth, envelope[:covered])
            takes.append({"take": take, "path": path, "mouth": mouth, "result": result,
                          "in_sync": in_sync(result, self.sync_max_offset, self.sync_min_confidence)})
            if takes[-1]["in_sync"]:
                break
        best = max(takes, key=lambda t: (abs(t["result"]["offset_frames"]) <= self.sync_max_offset,
                                         t["result"]["confidence"]))
        keep_take(takes, best, out_path)
        sync_figure(best["mouth"], envelope[:covered], best["result"], self.fps, segment["name"],
                    out_path.with_name("sync.png"))
        info["sync"] = sync_record(takes, best)
        return info

    def _write(self, segment: dict[str, Any], image_path: Path, audio: np.ndarray, path: Path,
               envelope: np.ndarray | None = None, take: int = 0, tracker: Any = None,
               measured: list[float] | None = None) -> None:
        """Encode one take of the clip (exactly the covered frames), recording the mouth as it goes."""
        covered = segment["frames"]
        frames = self.generate(segment, image_path, envelope, take)
        if tracker is not None and measured is not None:
            frames = _measuring(frames, tracker, measured)
        count = write_clip(path, _take(frames, covered), self.fps, self.width, self.height, self.preset, self.crf,
                           audio=covered_audio(audio, covered, self.fps))
        if count != covered:
            raise RuntimeError(f"{segment['name']}: renderer produced {count} of {covered} frames")

    def mouth_box(self) -> tuple[int, int, int, int]:
        """Where the animatic draws its singer's mouth (x0, y0, x1, y1): the top left, clear of the captions."""
        w, h = max(16, self.width // 12), max(12, self.height // 10)
        return (self.width // 40, self.height // 24, self.width // 40 + w, self.height // 24 + h)

    def mouth_lag(self, segment: dict[str, Any], take: int) -> int:
        """Frames by which this take's mouth trails the voice: 0 here; a test backend shifts it."""
        return 0

    def generate(self, segment: dict[str, Any], image_path: Path, envelope: np.ndarray | None = None,
                 take: int = 0) -> Iterator[np.ndarray]:
        """Yield ``segment["generate_frames"]`` RGB frames; with ``envelope`` (voice energy per frame) the
        singer's mouth opens with it."""
        source = Image.open(image_path).convert("RGB").resize((self.width, self.height), Image.LANCZOS)
        move = self.camera_move(segment)
        total = segment["generate_frames"]
        captions = CaptionPainter(segment, self.width, self.height) if self.captions else None
        lag = self.mouth_lag(segment, take)
        for i in range(total):
            progress = _ease(i / max(total - 1, 1))
            frame = source.resize((self.width, self.height), Image.BILINEAR, box=self._box(move, progress))
            if captions is not None:
                captions.paint(frame, segment["start"] + i / self.fps)
            if envelope is not None:
                self._paint_mouth(frame, float(envelope[min(max(i - lag, 0), len(envelope) - 1)]))
            yield np.asarray(frame)

    def _paint_mouth(self, frame: Image.Image, openness: float) -> None:
        from PIL import ImageDraw

        x0, y0, x1, y1 = self.mouth_box()
        draw = ImageDraw.Draw(frame)
        draw.rectangle((x0, y0, x1, y1), fill=(235, 225, 210))
        middle, half = (y0 + y1) / 2, max(1.0, (y1 - y0) * 0.45 * min(max(openness, 0.0), 1.0))
        draw.ellipse((x0 + (x1 - x0) * 0.15, middle - half, x1 - (x1 - x0) * 0.15, middle + half), fill=(20, 10, 10))

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


def _measuring(frames: Iterator[np.ndarray], tracker: Any, measured: list[float]) -> Iterator[np.ndarray]:
    """Pass frames through, recording the tracker's mouth openness of each."""
    for frame in frames:
        measured.append(float(tracker.openness([frame])[0]))
        yield frame


def _take(frames: Iterator[np.ndarray], count: int) -> Iterator[np.ndarray]:
    """Normalization: keep the first ``count`` of the generated frames (the covered window)."""
    for i, frame in enumerate(frames):
        if i >= count:
            return
        yield frame
