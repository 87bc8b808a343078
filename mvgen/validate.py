"""Checks every artifact passes before it enters the store: a build that fails them is not committed.

Fatal (raise ``ArtifactInvalid``): a file that does not decode, a wrong frame count or size, a wrong audio
duration, NaN/inf samples, JSON that breaks its schema, a blank clip. Flagged (returned, recorded in the
entry's info and the manifest): a blank candidate frame (review passes it over), a frozen clip (a still
shot can be intended).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class ArtifactInvalid(RuntimeError):
    """A stage produced an artifact that fails validation (it is not stored)."""


def check_song(wav: Path, min_seconds: float = 0.5) -> None:
    from mvgen.media.audio import read_wav

    try:
        samples, rate = read_wav(wav)
    except RuntimeError as exc:
        raise ArtifactInvalid(f"{wav.name} does not decode: {exc}") from exc
    if rate != 48000 or samples.ndim != 2 or samples.shape[1] != 2:
        raise ArtifactInvalid(f"{wav.name} must be 48 kHz stereo, got {rate} Hz x {samples.shape[-1]} channels")
    if len(samples) < min_seconds * rate:
        raise ArtifactInvalid(f"{wav.name} lasts {len(samples) / rate:.2f} s")
    if not np.isfinite(samples).all():
        raise ArtifactInvalid(f"{wav.name} contains NaN or infinite samples")


def check_annotation(annotation: dict[str, Any]) -> None:
    from mvgen.stages.annotate import ANNOTATION_SCHEMA, ANNOTATION_VERSION

    for key in ANNOTATION_SCHEMA["required"]:
        if key not in annotation:
            raise ArtifactInvalid(f"annotation.json lacks {key!r}")
    if annotation["version"] != ANNOTATION_VERSION:
        raise ArtifactInvalid(f"annotation.json version {annotation['version']} != {ANNOTATION_VERSION}")
    required = ANNOTATION_SCHEMA["properties"]["phrases"]["items"]["required"]
    previous_end = 0.0
    for phrase in annotation["phrases"]:
        missing = [k for k in required if k not in phrase]
        if missing:
            raise ArtifactInvalid(f"annotation phrase {phrase.get('index')} lacks {missing}")
        if not (np.isfinite(phrase["start"]) and np.isfinite(phrase["end"])) or phrase["end"] < phrase["start"]:
            raise ArtifactInvalid(f"annotation phrase {phrase['index']} has times {phrase['start']}..{phrase['end']}")
        if phrase["start"] < previous_end - 1e-6:
            raise ArtifactInvalid(f"annotation phrase {phrase['index']} overlaps the one before")
        previous_end = phrase["end"]


def check_plan(plan: dict[str, Any]) -> None:
    segments = plan["segments"]
    if not segments or segments[0]["start_frame"] != 0 or segments[-1]["end_frame"] != plan["total_frames"]:
        raise ArtifactInvalid("segments.json does not cover the song")
    if sum(s["frames"] for s in segments) != plan["total_frames"]:
        raise ArtifactInvalid("segments.json frame counts do not add up to the song's frames")
    for a, b in zip(segments, segments[1:]):
        if a["end_frame"] != b["start_frame"]:
            raise ArtifactInvalid(f"gap or overlap between {a['name']} and {b['name']}")


def check_image(path: Path, size: tuple[int, int] | None = None) -> list[str]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    except (OSError, UnidentifiedImageError) as exc:
        raise ArtifactInvalid(f"{path.name} does not decode: {exc}") from exc
    if size is not None and pixels.shape[1::-1] != tuple(size):
        raise ArtifactInvalid(f"{path.name} is {pixels.shape[1]}x{pixels.shape[0]}, expected {size[0]}x{size[1]}")
    return ["blank frame"] if pixels.std() < 2.0 else []


def check_clip(path: Path, frames: int, size: tuple[int, int], fps: int) -> list[str]:
    """Decode the clip: exact frame count and size, an audio track of the clip's length; flag frozen/blank."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            decoded, motion, first, previous = 0, 0.0, None, None
            for frame in container.decode(stream):
                if (frame.width, frame.height) != tuple(size):
                    raise ArtifactInvalid(f"{path.name} is {frame.width}x{frame.height}, expected {size[0]}x{size[1]}")
                if decoded % 8 == 0:  # sample frames: enough to see motion or a blank
                    gray = frame.to_ndarray(format="gray").astype(np.float32)
                    if previous is not None:
                        motion += float(np.abs(gray - previous).mean())
                    first = gray if first is None else first
                    previous = gray
                decoded += 1
            audio = container.streams.audio[0] if container.streams.audio else None
            audio_seconds = float(audio.duration * audio.time_base) if audio is not None and audio.duration else None
    except av.error.FFmpegError as exc:
        raise ArtifactInvalid(f"{path.name} does not decode: {exc}") from exc
    if decoded != frames:
        raise ArtifactInvalid(f"{path.name} has {decoded} frames, expected {frames}")
    if audio_seconds is not None and abs(audio_seconds - frames / fps) > 0.1:
        raise ArtifactInvalid(f"{path.name} audio lasts {audio_seconds:.3f} s, the clip {frames / fps:.3f} s")
    if first is not None and first.std() < 2.0 and previous is not None and previous.std() < 2.0:
        raise ArtifactInvalid(f"{path.name} is blank (a flat picture from start to end)")
    return ["frozen clip"] if decoded > 8 and motion < 0.05 else []
