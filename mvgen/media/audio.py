"""Audio I/O: decode anything PyAV/soundfile reads, resample with libswresample, write float WAV."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from mvgen.errors import MvgenError

_LAYOUTS = {1: "mono", 2: "stereo"}


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample float32 audio shaped [n] or [n, channels] with libswresample (band-limited)."""
    if rate_in == rate_out:
        return samples.astype(np.float32, copy=False)
    mono = samples.ndim == 1
    frames = samples[:, None] if mono else samples
    channels = frames.shape[1]
    resampler = av.AudioResampler(format="fltp", layout=_LAYOUTS[channels], rate=rate_out)
    planar = np.ascontiguousarray(frames.T, dtype=np.float32)
    source = av.AudioFrame.from_ndarray(planar, format="fltp", layout=_LAYOUTS[channels])
    source.sample_rate = rate_in
    chunks = [f.to_ndarray() for f in resampler.resample(source)]
    chunks += [f.to_ndarray() for f in resampler.resample(None)]
    out = np.concatenate(chunks, axis=1).T if chunks else np.zeros((0, channels), np.float32)
    expected = int(round(len(frames) * rate_out / rate_in))
    out = _fit_length(out.astype(np.float32), expected)
    return out[:, 0] if mono else out


def _fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    if len(samples) >= length:
        return samples[:length]
    pad = np.zeros((length - len(samples),) + samples.shape[1:], samples.dtype)
    return np.concatenate([samples, pad])


def decode_audio(path: str | os.PathLike[str], rate: int, channels: int = 2) -> np.ndarray:
    """Decode an audio file (wav, flac, mp3, m4a/aac, ogg, ...) to float32 [n, channels] at ``rate``."""
    source = Path(path)
    if not source.is_file():
        raise MvgenError(f"audio file not found: {source}; check music.path")
    try:
        with av.open(str(source)) as container:
            if not container.streams.audio:
                raise MvgenError(f"{source} has no audio stream; give a wav, flac, mp3, m4a or ogg file")
            resampler = av.AudioResampler(format="fltp", layout=_LAYOUTS[channels], rate=rate)
            chunks = []
            for frame in container.decode(audio=0):
                frame.pts = None
                chunks += [f.to_ndarray() for f in resampler.resample(frame)]
            chunks += [f.to_ndarray() for f in resampler.resample(None)]
    except av.error.FFmpegError as exc:
        raise MvgenError(f"cannot decode {source} as audio ({exc.strerror or exc}); "
                         "give a wav, flac, mp3, m4a or ogg file") from exc
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise MvgenError(f"{source} has no audio samples (is it really an audio file?); give a wav, flac, mp3, "
                         "m4a or ogg file")
    return np.ascontiguousarray(np.concatenate(chunks, axis=1).T, dtype=np.float32)


def audio_duration(path: str | os.PathLike[str]) -> float | None:
    """The container's stated duration in seconds (no decoding), or None when it does not say."""
    try:
        with av.open(str(path)) as container:
            return float(container.duration) / av.time_base if container.duration else None
    except av.error.FFmpegError:
        return None


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, rate: int) -> None:
    """32-bit float WAV: the canonical song.wav (no clipping, no dither).

    Written by hand rather than by libsndfile, whose float WAVs carry a PEAK chunk with a wall-clock
    timestamp: the same samples would give different bytes, and different store hashes, on every run.
    """
    frames = samples[:, None] if samples.ndim == 1 else samples
    data = np.ascontiguousarray(frames, dtype="<f4").tobytes()
    channels = frames.shape[1]
    block = 4 * channels
    fmt = struct.pack("<HHIIHH", 3, channels, rate, rate * block, block, 32)  # 3 = IEEE float
    fact = struct.pack("<I", len(frames))
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<I", 4) + fact
            + b"data" + struct.pack("<I", len(data)) + data)
    with open(path, "wb") as handle:
        handle.write(b"RIFF" + struct.pack("<I", len(body)) + body)


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return samples, int(rate)


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """What Whisper models expect: mono float32 at 16 kHz."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    return resample(mono.astype(np.float32), rate, 16000)
