"""The demo song and its alignment, on the real bundled Whisper tiny.en."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from mvgen.app import CONF_DIR
from mvgen.errors import MvgenError
from mvgen.evaluate import line_onset_report
from mvgen.stages.annotate import StableTsAligner
from mvgen.stages.music import AudioFileSong, DemoSongMaker
from mvgen.util import read_json


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    song = yaml.safe_load((CONF_DIR / "song" / "demo.yaml").read_text())["song"]
    out = tmp_path_factory.mktemp("demo")
    DemoSongMaker(seed=1234).make(song, out)
    return song, out


def test_demo_song_is_canonical_and_timed(demo: tuple[dict, Path]) -> None:
    song, out = demo
    info = sf.info(out / "song.wav")
    assert (info.samplerate, info.channels, info.subtype) == (48000, 2, "FLOAT")
    meta = read_json(out / "song.json")
    assert meta["duration"] == pytest.approx(info.frames / 48000)
    assert 50 <= meta["duration"] <= 75  # "about one minute"
    truth = read_json(out / "truth.json")
    starts = [line["start"] for line in truth["lines"]]
    assert len(starts) == 10 and starts == sorted(starts)
    samples, _ = sf.read(out / "song.wav", dtype="float32")
    assert np.abs(samples).max() == pytest.approx(0.89, abs=0.01)


def test_demo_song_is_deterministic(demo: tuple[dict, Path], tmp_path: Path) -> None:
    song, out = demo
    DemoSongMaker(seed=1234).make(song, tmp_path)
    assert (tmp_path / "song.wav").read_bytes() == (out / "song.wav").read_bytes()


def test_alignment_on_the_demo_song_is_within_0_3_s(demo: tuple[dict, Path], tmp_path: Path) -> None:
    song, out = demo
    StableTsAligner(model="tiny.en").annotate(song, out / "song.wav", tmp_path)
    annotation = read_json(tmp_path / "annotation.json")
    report = line_onset_report(annotation, read_json(out / "truth.json"))
    assert report["lines"] == 10
    assert report["mae"] <= 0.3, report
    phrases = annotation["phrases"]
    assert phrases[0]["start"] == 0.0 and phrases[-1]["end"] == pytest.approx(annotation["duration"], abs=1e-3)
    assert phrases[0]["kind"] == "instrumental" and phrases[0]["section"] == "intro"
    for a, b in zip(phrases, phrases[1:]):
        assert a["end"] <= b["start"] + 1e-9  # ordered, no overlaps
    lyric = [p for p in phrases if p["kind"] == "lyric"]
    assert [p["section"] for p in lyric][:5] == ["verse"] * 4 + ["chorus"]
    assert all(p["words"] and 0 <= p["confidence"] <= 1 for p in lyric)
    assert [p["performers"] for p in lyric] == [["Nova"]] * 4 + [["Nova", "Rio"]] * 4 + [["Rio"]] * 2


def test_the_demo_is_a_duet_in_two_voices(demo: tuple[dict, Path], tmp_path: Path) -> None:
    song, out = demo
    assert read_json(out / "song.json")["voices"] == ["en-us", "en-us+m3"]
    solo = {**song, "visual": {**song["visual"], "performers": [{**x, "voice": "en-us"}
                                                                for x in song["visual"]["performers"]]}}
    DemoSongMaker(seed=1234).make(solo, tmp_path)  # every line in one voice: a different vocal
    assert sf.read(tmp_path / "song.wav")[0].tobytes() != sf.read(out / "song.wav")[0].tobytes()


def test_english_only_model_refuses_other_languages() -> None:
    with pytest.raises(MvgenError, match="English-only"):
        StableTsAligner(model="tiny.en", language="fr")


def test_audio_file_song_is_made_canonical(tmp_path: Path) -> None:
    t = np.arange(3 * 22050) / 22050
    sf.write(tmp_path / "in.flac", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050)
    backend = AudioFileSong(str(tmp_path / "in.flac"))
    out = tmp_path / "out"
    out.mkdir()
    backend.make({"lyrics": "[verse]\nla"}, out)
    info = sf.info(out / "song.wav")
    assert (info.samplerate, info.channels) == (48000, 2)
    assert info.frames == pytest.approx(3 * 48000, abs=48)
    assert len(backend.fingerprint()["audio"]) == 64


@pytest.mark.parametrize("seconds,amplitude,match", [(0.5, 0.3, "at least"), (3.0, 0.0, "silent")])
def test_audio_file_song_rejects_short_or_silent(tmp_path: Path, seconds: float, amplitude: float, match: str) -> None:
    sf.write(tmp_path / "x.wav", np.full(int(seconds * 48000), amplitude, np.float32), 48000)
    with pytest.raises(MvgenError, match=match):
        AudioFileSong(str(tmp_path / "x.wav")).make({"lyrics": "la"}, tmp_path)


def _encode_with_pyav(path: Path, codec: str, rate: int, seconds: float) -> None:
    import av

    from mvgen.media.video import encode_audio

    t = np.arange(int(seconds * 48000)) / 48000
    audio = np.stack([0.3 * np.sin(2 * np.pi * 330 * t)] * 2, axis=1).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=48000)
        stream.layout = "stereo"
        encode_audio(container, stream, audio)


@pytest.mark.parametrize("name,codec", [("song.mp3", "mp3"), ("song.m4a", "aac"), ("song.opus", "libopus")])
def test_compressed_formats_become_canonical(tmp_path: Path, name: str, codec: str) -> None:
    _encode_with_pyav(tmp_path / name, codec, 48000, 4.0)
    out = tmp_path / "out"
    out.mkdir()
    AudioFileSong(str(tmp_path / name)).make({"lyrics": "la"}, out)
    info = sf.info(out / "song.wav")
    assert (info.samplerate, info.channels) == (48000, 2)
    assert abs(info.frames / 48000 - 4.0) < 0.1  # encoder padding is a few ms at most


def test_absurdly_long_audio_is_refused_with_the_limit_named(tmp_path: Path) -> None:
    sf.write(tmp_path / "long.wav", np.full((48000 * 5, 2), 0.1, np.float32), 48000)
    with pytest.raises(MvgenError, match="music.max_seconds=4"):
        AudioFileSong(str(tmp_path / "long.wav"), max_seconds=4).make({"lyrics": "la"}, tmp_path)


def test_beats_of_the_demo_song(demo: tuple[dict, Path]) -> None:
    """100 bpm, 4/4, bars from 0 s: beats every 0.6 s, downbeats every 2.4 s."""
    from mvgen.stages.beats import detect_beats

    _, out = demo
    grid = detect_beats(out / "song.wav", bpm_hint=100)
    assert grid.tempo == pytest.approx(100, rel=0.02)
    beats, downbeats = np.array(grid.beats), np.array(grid.downbeats)
    assert len(beats) >= 90
    assert np.abs(beats - np.round(beats / 0.6) * 0.6).max() < 0.1
    assert np.abs(downbeats - np.round(downbeats / 2.4) * 2.4).max() < 0.1
    assert detect_beats(out / "song.wav").tempo == pytest.approx(100, rel=0.02)  # no hint: same answer


def test_audio_that_would_silently_be_wrong_is_repaired_or_warned(tmp_path: Path) -> None:
    t = np.arange(48000 * 10) / 48000
    tone = np.stack([np.sin(2 * np.pi * 220 * t)] * 2, axis=1).astype(np.float32)
    sf.write(tmp_path / "loud.wav", 50 * tone, 48000, subtype="FLOAT")  # 50x full scale
    info = AudioFileSong(str(tmp_path / "loud.wav")).make({"lyrics": "la"}, tmp_path)
    samples, _ = sf.read(tmp_path / "song.wav")
    assert np.abs(samples).max() == pytest.approx(0.98, abs=1e-3)
    assert any("full scale: normalized" in w for w in info["warnings"])
    _encode_with_pyav(tmp_path / "full.mp3", "mp3", 48000, 10.0)
    data = (tmp_path / "full.mp3").read_bytes()
    (tmp_path / "cut.mp3").write_bytes(data[: len(data) // 2])  # its Xing header still says 10 s
    out = tmp_path / "cut"
    out.mkdir()
    info = AudioFileSong(str(tmp_path / "cut.mp3")).make({"lyrics": "la"}, out)
    assert info["duration"] == pytest.approx(5.0, abs=0.2)
    assert any("probably truncated" in w for w in info["warnings"])
    clean = tmp_path / "clean"
    clean.mkdir()
    assert AudioFileSong(str(tmp_path / "full.mp3")).make({"lyrics": "la"}, clean)["warnings"] == []
