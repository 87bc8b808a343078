"""Audio and video I/O on real files the tests write."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from mvgen.errors import MvgenError
from mvgen.media.audio import decode_audio, resample, to_mono_16k
from mvgen.media.video import concat_with_audio, probe, read_frames, write_clip


def _tone(seconds: float, rate: int, channels: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.stack([x] * channels, axis=1)


@pytest.mark.parametrize("rate_in,rate_out", [(22050, 48000), (48000, 16000), (44100, 48000)])
def test_resample_keeps_duration_and_pitch(rate_in: int, rate_out: int) -> None:
    x = _tone(2.0, rate_in, 1)[:, 0]
    y = resample(x, rate_in, rate_out)
    assert len(y) == round(len(x) * rate_out / rate_in)
    spectrum = np.abs(np.fft.rfft(y[rate_out // 4: rate_out // 4 + rate_out]))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 s window: bin = Hz


@pytest.mark.parametrize("ext,subtype", [("wav", "PCM_16"), ("flac", "PCM_24"), ("ogg", "VORBIS")])
@pytest.mark.parametrize("rate,channels", [(44100, 2), (8000, 1)])
def test_decode_to_canonical(tmp_path: Path, ext: str, subtype: str, rate: int, channels: int) -> None:
    path = tmp_path / f"song.{ext}"
    sf.write(path, _tone(3.0, rate, channels), rate, subtype=subtype)
    out = decode_audio(path, 48000, channels=2)
    assert out.shape[1] == 2 and out.dtype == np.float32
    assert abs(len(out) / 48000 - 3.0) < 0.05
    assert 0.2 < np.abs(out).max() < 0.4


def test_decode_missing_and_corrupt_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(MvgenError, match="not found"):
        decode_audio(tmp_path / "nope.wav", 48000)
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"this is not audio" * 100)
    with pytest.raises(MvgenError, match="cannot decode|no audio") as info:
        decode_audio(bad, 48000)
    assert "\n" not in str(info.value)


def test_mono_16k_for_whisper() -> None:
    x = _tone(1.0, 48000, 2)
    assert to_mono_16k(x, 48000).shape == (16000,)


def _frames(n: int, w: int = 64, h: int = 32, shade: int = 0) -> list[np.ndarray]:
    return [np.full((h, w, 3), (shade + 7 * i) % 256, np.uint8) for i in range(n)]


def test_clip_has_exact_frames_and_audio(tmp_path: Path) -> None:
    audio = _tone(1.0, 48000, 2)
    count = write_clip(tmp_path / "c.mp4", _frames(25), 25, 64, 32, audio=audio)
    info = probe(tmp_path / "c.mp4", decode=True)
    assert count == 25 and info["video"]["decoded_frames"] == 25
    assert info["video"]["codec"] == "h264" and info["video"]["pix_fmt"] == "yuv420p"
    assert info["audio"]["codec"] == "aac" and info["audio"]["sample_rate"] == 48000


def test_stream_copy_concat_keeps_every_frame_in_order(tmp_path: Path) -> None:
    clips = []
    for i, n in enumerate((9, 17, 5)):
        path = tmp_path / f"c{i}.mp4"
        write_clip(path, _frames(n, shade=100 * i), 25, 64, 32)
        clips.append(path)
    song = _tone(31 / 25, 48000, 2)
    packets = concat_with_audio(clips, tmp_path / "m.mp4", song, 25)
    frames = read_frames(tmp_path / "m.mp4")
    assert packets == len(frames) == 31
    # frame 9 is the first frame of clip 1 (shade 100), frame 26 the first of clip 2 (shade 200)
    assert abs(int(frames[9].mean()) - 100) <= 3 and abs(int(frames[26].mean()) - 200) <= 3
    with av.open(str(tmp_path / "m.mp4")) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]


def test_assembler_normalizes_mismatched_clips_and_burns_lyrics(tmp_path: Path) -> None:
    """Clips of different sizes are re-encoded to the master size; the burned-in copy has every frame."""
    from mvgen.media.audio import write_wav
    from mvgen.stages.assemble import Assembler

    write_clip(tmp_path / "a.mp4", _frames(9, 64, 32), 25, 64, 32)
    write_clip(tmp_path / "b.mp4", _frames(16, 96, 64, shade=120), 25, 96, 64)
    write_wav(tmp_path / "song.wav", _tone(1.0, 48000, 2), 48000)
    plan = {"fps": 25, "total_frames": 25, "duration": 1.0}
    annotation = {"phrases": [{"kind": "lyric", "line": 0, "text": "hello there", "start": 0.1, "end": 0.8,
                               "words": [{"word": "hello", "start": 0.1, "end": 0.4},
                                         {"word": "there", "start": 0.45, "end": 0.8}]}]}
    info = Assembler(burn_lyrics=True).assemble([tmp_path / "a.mp4", tmp_path / "b.mp4"], tmp_path / "song.wav",
                                                plan, 64, 32, tmp_path, annotation=annotation)
    assert info["stream_copy"] is False and info["frames"] == 25
    master = probe(tmp_path / "master.mp4", decode=True)
    assert (master["video"]["width"], master["video"]["height"], master["video"]["decoded_frames"]) == (64, 32, 25)
    burned = probe(tmp_path / "master_lyrics.mp4", decode=True)
    assert burned["video"]["decoded_frames"] == 25 and burned["audio"]["codec"] == "aac"
    plain, captioned = read_frames(tmp_path / "master.mp4")[10], read_frames(tmp_path / "master_lyrics.mp4")[10]
    assert np.abs(plain.astype(int) - captioned.astype(int)).max() > 50  # the caption is on the picture
