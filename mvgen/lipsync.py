"""Lip-sync QA: how far a clip's mouth motion is from the song, in frames, and how sure that estimate is.

A SyncNet-style audio-visual confidence is unreliable on sung slices of a full mix, so the measure uses what
mvgen knows instead: the vocal energy of the song under the clip (the voice band, 300-3400 Hz, per frame) and
the mouth's openness per frame from a mouth tracker. The offset is the lag that best aligns the two
(normalized cross-correlation over +-``max_lag`` frames; positive = the mouth is late); the confidence is the
correlation at that lag.

Trackers: ``BoxMouthTracker`` reads a known mouth box (the animatic's drawn singer); real clips use
``mvgen.face.FaceMouthTracker`` (MTCNN landmarks, weights from the facenet-pytorch wheel).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

VOICE_BAND = (300.0, 3400.0)


def vocal_envelope(audio: np.ndarray, rate: int, fps: int, frames: int) -> np.ndarray:
    """Voice-band energy of ``audio`` (samples x channels) per video frame, scaled to 0..1."""
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    hop = rate / fps
    window = int(round(hop))
    out = np.zeros(frames, np.float32)
    freqs = np.fft.rfftfreq(window, 1.0 / rate)
    band = (freqs >= VOICE_BAND[0]) & (freqs <= VOICE_BAND[1])
    for i in range(frames):
        chunk = mono[int(round(i * hop)):int(round(i * hop)) + window]
        if len(chunk) == window:
            out[i] = float(np.sqrt(np.sum(np.abs(np.fft.rfft(chunk * np.hanning(window)))[band] ** 2)))
    peak = float(out.max(initial=0.0))
    return out / peak if peak > 0 else out


@dataclass
class BoxMouthTracker:
    """Mouth openness as the share of dark pixels inside a known mouth box (x0, y0, x1, y1)."""

    box: tuple[int, int, int, int]

    def openness(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        x0, y0, x1, y1 = self.box
        return np.array([float(np.mean(frame[y0:y1, x0:x1].mean(axis=2) < 60)) for frame in frames], np.float32)


def estimate_offset(mouth: np.ndarray, envelope: np.ndarray, max_lag: int = 8) -> dict[str, Any]:
    """The lag (frames; positive: the mouth is late) at which the mouth best follows the voice, its
    correlation (the confidence, -1..1) and the whole correlation curve."""
    n = min(len(mouth), len(envelope))
    a, b = mouth[:n].astype(np.float64), envelope[:n].astype(np.float64)
    curve = {}
    for lag in range(-max_lag, max_lag + 1):
        x, y = (a[lag:], b[:n - lag]) if lag >= 0 else (a[:n + lag], b[-lag:])
        if len(x) < 8 or x.std() < 1e-9 or y.std() < 1e-9:
            curve[lag] = 0.0
            continue
        curve[lag] = float(np.corrcoef(x, y)[0, 1])
    best = max(curve, key=lambda k: (curve[k], -abs(k)))
    return {"offset_frames": int(best), "confidence": round(curve[best], 4),
            "curve": {str(k): round(v, 4) for k, v in curve.items()}}


SYNC_FIELDS = ("offset_frames", "confidence")


def in_sync(result: dict[str, Any], max_offset: int, min_confidence: float) -> bool:
    """A take is in sync when its mouth is at most ``max_offset`` frames off and the match is strong enough."""
    return abs(result["offset_frames"]) <= max_offset and result["confidence"] >= min_confidence


def keep_take(takes: list[dict[str, Any]], best: dict[str, Any], out_path: Path) -> None:
    """The best take's file becomes the clip; the other takes' files go."""
    best["path"].replace(out_path)
    for other in takes:
        other["path"].unlink(missing_ok=True)


def sync_record(takes: list[dict[str, Any]], best: dict[str, Any], per_take: tuple[str, ...] = ()) -> dict[str, Any]:
    """What manifest.json keeps of a checked clip: the kept take's offset and confidence, and every attempt.
    Each take is {"take", "result" (``estimate_offset``), "in_sync", and the ``per_take`` keys}."""
    def fields(take: dict[str, Any]) -> dict[str, Any]:
        return {**{k: take[k] for k in per_take}, **{k: take["result"][k] for k in SYNC_FIELDS}}

    return {"checked": True, **fields(best), "take": best["take"], "rerolls": len(takes) - 1,
            "attempts": [{"take": t["take"], **fields(t)} for t in takes], "in_sync": best["in_sync"]}


def sync_figure(mouth: np.ndarray, envelope: np.ndarray, result: dict[str, Any], fps: int, title: str,
                out_path: Path) -> None:
    """The clip's mouth against the voice, and the correlation by lag, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 4.5))
    t = np.arange(len(mouth)) / fps
    top.plot(t, envelope[: len(mouth)] / max(float(envelope.max(initial=0)), 1e-9), label="voice energy",
             color="#e4572e")
    top.plot(t, mouth / max(float(mouth.max(initial=0)), 1e-9), label="mouth openness", color="#4c72b0")
    top.set_xlabel("seconds")
    top.legend(loc="upper right", fontsize=7)
    top.set_title(f"{title}: offset {result['offset_frames']:+d} frames, confidence {result['confidence']:.2f}",
                  loc="left", fontsize=9)
    lags = sorted(int(k) for k in result["curve"])
    bottom.bar(lags, [result["curve"][str(k)] for k in lags], color="#888888")
    bottom.axvline(result["offset_frames"], color="#e4572e")
    bottom.set_xlabel("lag (frames; positive: the mouth is late)")
    bottom.set_ylabel("correlation")
    fig.tight_layout()
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
