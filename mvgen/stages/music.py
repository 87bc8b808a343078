"""Stage 1, music: produce ``song.wav`` (float32, 48 kHz, stereo) and ``song.json``.

Backends:
- ``DemoSongMaker``: offline demo. The song file's lyrics spoken by eSpeak NG, one line per bar slot,
  over a procedural backing track (drums, bass, pads) at the song's bpm. Also writes ``truth.json``,
  the exact line and word onsets, so alignment accuracy can be measured.
- ``AudioFileSong``: an existing song file, decoded and resampled to the canonical format.
- ``AceStepSong``: ACE-Step 1.5 through ``diffusers.AceStepPipeline`` (hub id or local folder).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mvgen.errors import MvgenError
from mvgen.lyrics import parse_lyrics, performer_names
from mvgen.media.audio import audio_duration, decode_audio, resample, write_wav
from mvgen.util import sha256_file, write_json
from mvgen.stages.protocols import MusicStage

log = logging.getLogger("mvgen")

SONG_WAV, SONG_JSON, TRUTH_JSON = "song.wav", "song.json", "truth.json"
MAX_DEMO_LINES = 300

# A-minor pop loop, one chord per bar: Am F C G (MIDI roots for the bass, triads for the pads).
_PROGRESSION = [(45, (57, 60, 64)), (41, (53, 57, 60)), (48, (55, 60, 64)), (43, (55, 59, 62))]


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


class DemoSongMaker(MusicStage):
    """Speech-synthesised vocals over a procedural backing track, with known line timings."""

    def __init__(self, voice: str = "en-us", words_per_minute: int = 150, sample_rate: int = 48000,
                 bars_intro: int = 2, bars_between_sections: int = 1, bars_outro: int = 2,
                 vocal_gain_db: float = 0.0, seed: int = 0) -> None:
        if words_per_minute < 60 or words_per_minute > 400:
            raise MvgenError(f"music.words_per_minute={words_per_minute} is out of range; use 60..400")
        self.voice = voice
        self.words_per_minute = words_per_minute
        self.rate = sample_rate
        self.bars_intro, self.bars_between, self.bars_outro = bars_intro, bars_between_sections, bars_outro
        self.vocal_gain = 10.0 ** (vocal_gain_db / 20.0)
        self.seed = seed

    def make(self, song: dict[str, Any], out_dir: Path) -> dict[str, Any]:
        from mvgen.media.tts import speak_lines

        lines = parse_lyrics(song["lyrics"], performer_names(song))
        if len(lines) > MAX_DEMO_LINES:
            raise MvgenError(f"the song has {len(lines)} lyric lines; the demo voice sings at most {MAX_DEMO_LINES} "
                             "(about 20 minutes); shorten song.lyrics or use music=file")
        bpm = float(song.get("bpm") or 100.0)
        if not 40 <= bpm <= 240:
            raise MvgenError(f"song.bpm={bpm:g}; use a tempo between 40 and 240")
        bar = 4 * 60.0 / bpm
        voices = {x.get("name"): x.get("voice") for x in (song.get("visual") or {}).get("performers") or []}
        # a line with several performers (a duet section) is sung by each in turn, line by line
        line_voices = [voices.get(line.performers[line.index % len(line.performers)]) or self.voice
                       if line.performers else self.voice for line in lines]
        speeches = speak_lines([line.text for line in lines], voice=line_voices,
                               words_per_minute=self.words_per_minute)

        placed, cursor, previous_section = [], self.bars_intro * bar, None
        for line, speech in zip(lines, speeches):
            key = (line.section, line.section_index)
            if previous_section is not None and key != previous_section:
                cursor += self.bars_between * bar
            previous_section = key
            vocal = resample(speech.samples, speech.rate, self.rate)
            voiced = np.flatnonzero(np.abs(vocal) > 0.02 * max(float(np.abs(vocal).max()), 1e-6))
            if voiced.size == 0:
                raise MvgenError(f"eSpeak produced silence for lyric line {line.index + 1} ({line.text!r})")
            vocal = vocal[: voiced[-1] + 1]
            # eSpeak reports the first word at 0 ms whatever its leading silence: use the first voiced
            # sample for it, the word events for the others.
            onsets = [max(t, voiced[0] / self.rate) for t in speech.word_onsets]
            words = [{"word": w, "start": round(cursor + t, 4)} for w, t in zip(line.text.split(), onsets)]
            placed.append({**line.to_dict(), "start": words[0]["start"],
                           "end": round(cursor + len(vocal) / self.rate, 4), "words": words,
                           "_audio": vocal, "_offset": cursor})
            cursor += math.ceil((len(vocal) / self.rate + 0.4) / bar) * bar
        duration = cursor + self.bars_outro * bar

        total = int(round(duration * self.rate))
        mix = self._backing(total, bpm) * 0.35
        for item in placed:
            start = int(round(item["_offset"] * self.rate))
            vocal = item.pop("_audio") * self.vocal_gain * 0.8
            item.pop("_offset")
            mix[start:start + len(vocal)] += vocal[:, None]
        fade = min(len(mix), int(bar * self.rate))
        mix[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
        mix *= 0.89 / max(float(np.abs(mix).max()), 1e-6)  # peak at -1 dBFS

        write_wav(out_dir / SONG_WAV, mix.astype(np.float32), self.rate)
        info = {"sample_rate": self.rate, "channels": 2, "duration": total / self.rate, "frames": total,
                "source": "demo", "seed": self.seed, "bpm": bpm, "title": song.get("title", ""),
                "voice": self.voice, "voices": sorted(set(line_voices))}
        write_json(out_dir / SONG_JSON, info)
        write_json(out_dir / TRUTH_JSON, {"version": 1, "source": "demo", "lines": placed})
        return info

    def _backing(self, total: int, bpm: float) -> np.ndarray:
        """Drums, bass and pads as float32 stereo [total, 2]; deterministic for a given seed."""
        rng = np.random.default_rng(self.seed)
        sr = self.rate
        beat = 60.0 / bpm
        out = np.zeros((total, 2), np.float32)

        def add(signal: np.ndarray, at: float, pan: float = 0.0) -> None:
            start = int(round(at * sr))
            if start >= total:
                return
            chunk = signal[: total - start]
            out[start:start + len(chunk), 0] += chunk * (1.0 - pan) * 0.5 * 2
            out[start:start + len(chunk), 1] += chunk * (1.0 + pan) * 0.5 * 2

        t_kick = np.arange(int(0.3 * sr)) / sr
        kick = np.sin(2 * np.pi * (45 * t_kick + 75 / 18 * (1 - np.exp(-18 * t_kick)))) * np.exp(-9 * t_kick)
        t_snare = np.arange(int(0.2 * sr)) / sr
        snare_noise = rng.standard_normal(len(t_snare))
        snare = (0.6 * np.diff(snare_noise, prepend=0.0) + 0.4 * np.sin(2 * np.pi * 185 * t_snare)) * np.exp(-22 * t_snare)
        t_hat = np.arange(int(0.05 * sr)) / sr
        hat = np.diff(rng.standard_normal(len(t_hat)), prepend=0.0) * np.exp(-90 * t_hat)

        n_beats = int(total / sr / beat) + 1
        for b in range(n_beats):
            at = b * beat
            bar_index, in_bar = divmod(b, 4)
            root, triad = _PROGRESSION[bar_index % len(_PROGRESSION)]
            add(0.9 * kick if in_bar in (0, 2) else 0.55 * snare, at)
            add(0.12 * hat, at, pan=0.3)
            add(0.12 * hat, at + beat / 2, pan=0.3)
            t_bass = np.arange(int(beat * sr)) / sr
            freq = _midi_hz(root)
            bass = sum(np.sin(2 * np.pi * freq * k * t_bass) / k for k in (1, 2, 3, 4))
            add(0.22 * bass * np.exp(-3.5 * t_bass), at)
            if in_bar == 0:
                t_pad = np.arange(int(4 * beat * sr)) / sr
                envelope = np.minimum(1.0, t_pad / 0.4) * np.minimum(1.0, (t_pad[-1] - t_pad) / 0.3)
                for i, note in enumerate(triad):
                    f = _midi_hz(note)
                    tone = np.sin(2 * np.pi * f * t_pad) + 0.3 * np.sin(2 * np.pi * 2.003 * f * t_pad)
                    add(0.05 * tone * envelope, at, pan=(-0.5, 0.0, 0.5)[i])
        return out


class AudioFileSong(MusicStage):
    """An existing song: any format PyAV decodes, made canonical (float32, ``sample_rate``, stereo)."""

    def __init__(self, path: str, sample_rate: int = 48000, min_seconds: float = 2.0,
                 max_seconds: float = 1200.0) -> None:
        self.path = Path(path).expanduser()
        self.rate = sample_rate
        self.min_seconds, self.max_seconds = min_seconds, max_seconds

    def fingerprint(self) -> dict[str, str]:
        """The audio's content hash: the store key follows the file's bytes, not its name."""
        if not self.path.is_file():
            raise MvgenError(f"audio file not found: {self.path}; check music.path")
        return {"audio": sha256_file(self.path)}

    def make(self, song: dict[str, Any], out_dir: Path) -> dict[str, Any]:
        parse_lyrics(song["lyrics"], performer_names(song))  # fail before decoding if the song has no lyrics
        stated = audio_duration(self.path) if self.path.is_file() else None
        if stated is not None and stated > self.max_seconds + 1:  # refuse an hour-long file before decoding it
            raise MvgenError(f"{self.path} is {stated:.0f} s long; the limit is music.max_seconds={self.max_seconds:g}")
        samples = decode_audio(self.path, self.rate, channels=2)
        duration = len(samples) / self.rate
        if duration < self.min_seconds:
            raise MvgenError(f"{self.path} is {duration:.2f} s long; a song needs at least "
                             f"{self.min_seconds:g} s (music.min_seconds)")
        if duration > self.max_seconds:
            raise MvgenError(f"{self.path} is {duration:.0f} s long; the limit is music.max_seconds="
                             f"{self.max_seconds:g}")
        if not np.isfinite(samples).all():
            raise MvgenError(f"{self.path} contains NaN or infinite samples; export the song again (16- or 24-bit "
                             "PCM, or float without invalid values)")
        peak = float(np.abs(samples).max(initial=0.0))
        if peak < 1e-4:
            raise MvgenError(f"{self.path} is silent; give the mixed song with its vocals")
        warnings = []
        if stated is not None and duration < 0.97 * stated - 0.5:
            warnings.append(f"{self.path.name} decodes to {duration:.1f} s but its container says {stated:.1f} s: "
                            "the file is probably truncated")
        clipped = float(np.mean(np.abs(samples) >= 0.999))
        if peak > 1.0:
            samples = samples * (0.98 / peak)
            warnings.append(f"{self.path.name} peaks at {peak:.1f}x full scale: normalized to -0.2 dBFS")
        elif clipped > 0.001:
            warnings.append(f"{self.path.name} is clipped ({100 * clipped:.1f} % of samples at full scale): "
                            "alignment and the master may suffer; use an unclipped export if you have one")
        for warning in warnings:
            log.warning("music: %s", warning)
        write_wav(out_dir / SONG_WAV, samples, self.rate)
        info = {"sample_rate": self.rate, "channels": 2, "duration": duration, "frames": len(samples),
                "source": "file", "path": str(self.path), "title": song.get("title", ""), "warnings": warnings}
        write_json(out_dir / SONG_JSON, info)
        return info


def format_ace_step_lyrics(lyrics: str, performers: Sequence[str] = ()) -> str:
    """Lyrics the way ACE-Step was trained on them: lower-case [section] tags, a blank line between sections,
    no performer names."""
    lines = parse_lyrics(lyrics, performers)
    out: list[str] = []
    previous = None
    for line in lines:
        key = (line.section, line.section_index)
        if key != previous:
            if out:
                out.append("")
            out.append(f"[{line.section.replace('_', '-')}]")
            previous = key
        out.append(line.text)
    return "\n".join(out)


class AceStepSong(MusicStage):
    """Song generation with ACE-Step 1.5 (``diffusers.AceStepPipeline``) from the song's style and lyrics."""

    def __init__(self, id_or_path: str, revision: str | None = None, dtype: str = "bfloat16", device: str = "cuda",
                 offload: bool = False, steps: int = 8, guidance: float = 1.0, shift: float = 3.0,
                 duration: float = 60.0, seed: int = 0, language: str = "en", bpm: float | None = None,
                 keyscale: str | None = None, timesignature: str | None = None, max_lyric_tokens: int = 2048,
                 sample_rate: int = 48000) -> None:
        if not 1.0 <= duration <= 600.0:
            raise MvgenError(f"music.duration={duration}; ACE-Step makes songs of 1 to 600 seconds")
        if steps < 1:
            raise MvgenError(f"music.steps={steps}; use at least 1 (turbo checkpoints use 8)")
        self.id_or_path, self.revision = id_or_path, revision
        self.dtype, self.device, self.offload = dtype, device, offload
        self.steps, self.guidance, self.shift = steps, guidance, shift
        self.duration, self.seed, self.language = duration, seed, language
        self.bpm = int(round(bpm)) if bpm else None
        self.keyscale, self.timesignature = keyscale, timesignature
        self.max_lyric_tokens = max_lyric_tokens
        self.rate = sample_rate

    def make(self, song: dict[str, Any], out_dir: Path) -> dict[str, Any]:
        import torch
        from diffusers import AceStepPipeline

        from mvgen.models import load_pipeline

        lyrics = format_ace_step_lyrics(song["lyrics"], performer_names(song))
        pipe = load_pipeline(AceStepPipeline, self.id_or_path, self.revision, self.dtype, self.device, self.offload)
        tokens = len(pipe.tokenizer(f"# Languages\n{self.language}\n\n# Lyric\n{lyrics}<|endoftext|>").input_ids)
        if tokens > self.max_lyric_tokens:
            log.warning("the lyrics are %d tokens; ACE-Step reads only the first %d, the rest will not be sung",
                        tokens, self.max_lyric_tokens)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        result = pipe(prompt=song.get("style") or "", lyrics=lyrics, audio_duration=self.duration,
                      vocal_language=self.language, num_inference_steps=self.steps, guidance_scale=self.guidance,
                      shift=self.shift, generator=generator, bpm=self.bpm, keyscale=self.keyscale,
                      timesignature=self.timesignature, max_lyric_length=self.max_lyric_tokens)
        audio = result.audios[0].float().cpu().numpy().T  # [samples, channels]
        if not np.isfinite(audio).all():
            raise RuntimeError("ACE-Step produced non-finite audio")
        if audio.shape[1] == 1:
            audio = np.repeat(audio, 2, axis=1)
        audio = resample(np.ascontiguousarray(audio[:, :2]), pipe.sample_rate, self.rate)
        write_wav(out_dir / SONG_WAV, audio, self.rate)
        info = {"sample_rate": self.rate, "channels": 2, "duration": len(audio) / self.rate, "frames": len(audio),
                "source": "ace_step", "model": self.id_or_path, "revision": self.revision, "seed": self.seed,
                "steps": self.steps, "guidance": self.guidance, "lyric_tokens": tokens,
                "title": song.get("title", "")}
        write_json(out_dir / SONG_JSON, info)
        return info
