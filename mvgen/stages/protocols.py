"""What the coordinator may ask of each stage: one ``typing.Protocol`` per stage kind.

Backends subclass their protocol, so the optional abilities are real methods with defaults (a backend with
no input files has an empty ``fingerprint()``, one with no memory switches a ``degrade()`` that returns None)
and ``pipeline.py`` never asks a stage what it can do. Go-to-definition leads from the pipeline to here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from mvgen.framing import FrameRule


class MusicStage(Protocol):
    def make(self, song: dict[str, Any], out_dir: Path) -> dict[str, Any]:
        """Write ``song.wav`` and ``song.json`` into ``out_dir``; return song.json's content."""
        ...

    def fingerprint(self) -> dict[str, str]:
        """Content hashes of the backend's own input files, so store keys follow bytes, not names."""
        return {}


class AnnotateStage(Protocol):
    def annotate(self, song: dict[str, Any], song_wav: Path, out_dir: Path) -> dict[str, Any]:
        """Write ``annotation.json`` (and its LRC/SRT exports) into ``out_dir``."""
        ...

    def fingerprint(self) -> dict[str, str]:
        return {}


class SegmentStage(Protocol):
    def plan(self, annotation: dict[str, Any], out_dir: Path | None = None, song_wav: Path | None = None,
             bpm: float | None = None, pins: list[float] | tuple = (), forbid: list[list[float]] | tuple = (),
             beats: Any = None, rule: FrameRule | None = None) -> dict[str, Any]:
        """Write ``segments.json``: clip windows that fit ``rule``."""
        ...


class FramesStage(Protocol):
    candidates: int
    width: int
    height: int

    def generate(self, song: dict[str, Any], segment: dict[str, Any], prompts: list[dict[str, Any]],
                 out_dir: Path, reference: Path | None = None) -> None:
        """Write ``cand_<k>.png`` for each prompt spec."""
        ...

    def reference_mode(self) -> str:
        """none | given | generate: whether segments share an identity reference image."""
        return "none"

    def reference_image_path(self) -> Path | None:
        """The given reference image (``reference_mode() == "given"``)."""
        return None

    def make_reference(self, song: dict[str, Any], out_path: Path, character: str | None = None) -> None:
        raise NotImplementedError("this frame backend takes no identity reference")

    def degrade(self, exc: BaseException | None = None) -> str | None:
        """Switch on the next memory-saving fallback after an out-of-memory error; None when none is left."""
        return None


class ReviewStage(Protocol):
    manual: bool = False  # approvals come from a person on the review page, not from ``review``

    def review(self, candidates: list[dict[str, Any]]) -> dict[str, Any]:
        """The verdict for one segment's candidates: {"approved": k, ...}."""
        raise NotImplementedError("manual review has no automatic verdict")


class RenderStage(Protocol):
    width: int
    height: int
    fps: int
    preset: str
    crf: int

    def frame_rule(self) -> FrameRule:
        """The frame counts and sizes the video model runs without waste (derived from the model)."""
        ...

    def prepare(self, prompts: list[str]) -> None:
        """Work to do once before the stage's clips (LTX: encode every prompt once)."""
        return None

    def render(self, segment: dict[str, Any], image_path: Path, audio: np.ndarray, out_path: Path,
               prompt: str = "") -> dict[str, Any]:
        """Write the segment's clip: exactly ``segment["frames"]`` frames, with its slice of the song."""
        ...

    def degrade(self, exc: BaseException | None = None) -> str | None:
        return None


class AssembleStage(Protocol):
    allow_gaps: bool

    def assemble(self, clips: list[Path], song_wav: Path, plan: dict[str, Any], width: int, height: int,
                 out_dir: Path, annotation: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write ``master.mp4`` (and its extras) from the clips in order, with the song laid over them."""
        ...
