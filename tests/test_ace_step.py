"""music=ace_step through the real loading path: a tiny random ACE-Step saved to a folder, loaded by id_or_path."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from mvgen.errors import MvgenError
from mvgen.stages.music import AceStepSong, format_ace_step_lyrics
from mvgen.util import read_json

from .tiny_models import build_tiny_ace_step


@pytest.fixture(scope="module")
def tiny_ace_step(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_ace_step(tmp_path_factory.mktemp("ace") / "tiny-ace-step")


def test_lyrics_are_formatted_the_way_ace_step_reads_them() -> None:
    text = format_ace_step_lyrics("[Verse]\none\ntwo\n\n\n[Chorus]\nthree\n[pre chorus]\nfour")
    assert text == "[verse]\none\ntwo\n\n[chorus]\nthree\n\n[pre-chorus]\nfour"


def test_generates_a_canonical_song_of_the_requested_length(tiny_ace_step: Path, tmp_path: Path) -> None:
    assert not list(tiny_ace_step.rglob("*.bin")) and list(tiny_ace_step.rglob("*.safetensors"))
    backend = AceStepSong(id_or_path=str(tiny_ace_step), dtype="float32", device="cpu", duration=3.0, seed=7,
                          bpm=120.0)
    song = {"lyrics": "[verse]\nSoft notes in the morning\n[chorus]\nsing along", "style": "synth pop"}
    info = backend.make(song, tmp_path)
    wav = sf.info(tmp_path / "song.wav")
    assert (wav.samplerate, wav.channels) == (48000, 2)
    assert wav.frames == pytest.approx(3.0 * 48000, abs=1920)  # within one latent frame
    assert read_json(tmp_path / "song.json")["source"] == "ace_step" and info["seed"] == 7


def test_truncation_warning(tiny_ace_step: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    backend = AceStepSong(id_or_path=str(tiny_ace_step), dtype="float32", device="cpu", duration=1.0,
                          max_lyric_tokens=16)
    with caplog.at_level("WARNING", logger="mvgen"):
        backend.make({"lyrics": "[verse]\n" + "la la la la la la la la\n" * 10, "style": ""}, tmp_path)
    assert "will not be sung" in caplog.text


def test_missing_weights_offline_is_one_clear_line(tmp_path: Path) -> None:
    backend = AceStepSong(id_or_path=str(tmp_path / "no-such-folder"), device="cpu", duration=2.0)
    with pytest.raises(MvgenError, match="neither a local folder nor a hub id") as info:
        backend.make({"lyrics": "la", "style": ""}, tmp_path)
    assert "\n" not in str(info.value)


def test_vocal_isolation_with_ace_step_extract(tiny_ace_step: Path, tmp_path: Path) -> None:
    """The aligner runs on the stem ACE-Step extracts (random weights: the path, not the quality)."""
    import numpy as np

    from mvgen.stages.annotate import StableTsAligner

    t = np.arange(3 * 48000) / 48000
    song_audio = np.stack([0.2 * np.sin(2 * np.pi * 220 * t)] * 2, axis=1).astype(np.float32)
    sf.write(tmp_path / "song.wav", song_audio, 48000, subtype="FLOAT")
    aligner = StableTsAligner(model="tiny.en", isolate_vocals=True, vocals_model=str(tiny_ace_step),
                              vocals_dtype="float32", vocals_steps=2)
    aligner.annotate({"lyrics": "[verse]\nhello there", "style": "pop"}, tmp_path / "song.wav", tmp_path)
    stem = sf.info(tmp_path / "vocals.wav")
    assert (stem.samplerate, stem.channels, stem.frames) == (48000, 2, 3 * 48000)
    assert read_json(tmp_path / "annotation.json")["aligner"]["vocals"] == str(tiny_ace_step)
