"""The video model's frame rule: which clip lengths and sizes it can generate without waste.

A renderer derives its ``FrameRule`` from the model it will load (LTX: the VAE's temporal and spatial
compression and the transformer's patch sizes, read from the configs without weights); the segment planner
plans clips with it and the renderer checks every planned clip against it before any denoising.

- ``step``: generated frame counts are ``step * k + 1`` (LTX: 8k+1, the causal VAE keeps frame 0 alone);
- ``grid``: width and height are multiples of it (LTX: 32, and 64 when a x2 upsampler doubles stage 1);
- ``canvas``: segment lengths in pixel frames that the model pads its canvas to (LTX-2 DFR: 24 and 32);
  a count whose ``n - 1`` is not a multiple of one of them runs on a larger, padded canvas, so the planner
  only picks counts that waste no padding;
- ``max_frames``: the longest clip the renderer accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mvgen.errors import MvgenError


@dataclass(frozen=True)
class FrameRule:
    step: int = 8
    grid: int = 32
    canvas: tuple[int, ...] = field(default_factory=tuple)
    max_frames: int = 257
    source: str = "render config"  # where the numbers came from, for messages and segments.json

    def __post_init__(self) -> None:
        if self.step < 1 or self.grid < 1 or any(c < 1 for c in self.canvas):
            raise MvgenError(f"frame rule from {self.source} is invalid: step {self.step}, grid {self.grid}, "
                             f"canvas {list(self.canvas)}")
        if self.largest() < 1:
            raise MvgenError(f"render.max_frames={self.max_frames} allows no clip under the frame rule of "
                             f"{self.source} ({self.describe()}); raise render.max_frames")

    def allowed(self, frames: int) -> bool:
        """True when ``frames`` can be generated as asked, with no canvas padding."""
        if frames < 1 or (frames - 1) % self.step:
            return False
        return not self.canvas or any((frames - 1) % c == 0 and frames - 1 >= c for c in self.canvas)

    def frames_for(self, covered: int) -> int:
        """The smallest allowed count that covers ``covered`` frames (it may exceed ``max_frames``)."""
        if covered < 1:
            raise ValueError(f"a segment must cover at least one frame, got {covered}")
        frames = covered
        while not self.allowed(frames):
            frames += 1
        return frames

    def largest(self) -> int:
        """The longest allowed count within ``max_frames`` (0 when there is none)."""
        return next((n for n in range(self.max_frames, 0, -1) if self.allowed(n)), 0)

    def canvas_frames(self, frames: int) -> int:
        """The frame count the model actually runs for a request of ``frames`` (padded up to whole segments)."""
        if not self.canvas:
            return frames
        content = frames - 1
        padded = min(content + (c - content % c) % c for c in self.canvas)
        return padded + 1

    def check_size(self, width: int, height: int, what: str = "render size") -> None:
        if width % self.grid or height % self.grid or width <= 0 or height <= 0:
            fit_w, fit_h = max(self.grid, round(width / self.grid) * self.grid), max(self.grid, round(height / self.grid) * self.grid)
            raise MvgenError(f"{what} {width}x{height} does not fit the model's grid of {self.grid} px "
                             f"({self.source}); use e.g. {fit_w}x{fit_h}")

    def check_segment(self, segment: dict[str, Any]) -> None:
        """One line naming the segment when its generated frame count does not fit the rule."""
        frames = int(segment["generate_frames"])
        if frames > self.max_frames:
            raise MvgenError(f"{segment['name']} needs {frames} frames, over render.max_frames={self.max_frames}; "
                             "lower segment.max_seconds")
        if not self.allowed(frames) or frames < int(segment["frames"]):
            raise MvgenError(f"{segment['name']} plans {frames} generated frames for {segment['frames']} covered, "
                             f"which the model cannot run without padding ({self.describe()}); plan the segments "
                             "with this render model (its frame rule is part of the segment stage's key)")

    def check_plan(self, segments: list[dict[str, Any]]) -> None:
        """Every planned clip fits: the renderer calls this before any denoising."""
        for segment in segments:
            self.check_segment(segment)

    def describe(self) -> str:
        text = f"{self.step}k+1 frames"
        if self.canvas:
            text += f" with n-1 a multiple of {' or '.join(str(c) for c in self.canvas)}"
        return f"{text}, at most {self.max_frames}, sizes in multiples of {self.grid} px"

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "grid": self.grid, "canvas": list(self.canvas), "max_frames": self.max_frames,
                "source": self.source}
