"""render=ltx23 on tiny random LTX-2 components saved with save_pretrained and loaded through id_or_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mvgen.errors import MvgenError
from mvgen.media.video import probe
from mvgen.stages.render import LtxRenderer
from mvgen.util import read_json

from .conftest import run_dir_of, run_mvgen
from .tiny_models import build_tiny_ltx2, build_tiny_ltx2_upsampler

SEGMENT = {"index": 0, "name": "seg_000", "frames": 12, "generate_frames": 17, "start": 0.0, "end": 0.48, "words": []}


@pytest.fixture(scope="module")
def tiny_ltx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ltx")
    return build_tiny_ltx2(root / "ltx2"), build_tiny_ltx2_upsampler(root / "upsampler")


def _renderer(tiny_ltx: tuple[Path, Path], **kwargs: object) -> LtxRenderer:
    model, upsampler = tiny_ltx
    options = dict(id_or_path=str(model), dtype="float32", device="cpu", width=64, height=64,
                   upsampler_id_or_path=str(upsampler), sigmas=[1.0, 0.5], stage2_sigmas=[0.5], max_sequence_length=16)
    options.update(kwargs)
    return LtxRenderer(**options)  # type: ignore[arg-type]


def _inputs(tmp_path: Path) -> tuple[Path, np.ndarray]:
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype("uint8")).save(tmp_path / "frame.png")
    t = np.arange(int(17 / 25 * 48000)) / 48000
    audio = np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2, axis=1).astype(np.float32)
    return tmp_path / "frame.png", audio


@pytest.mark.parametrize("two_stage", [False, True])
def test_clip_has_the_covered_frames_and_the_song_audio(tiny_ltx: tuple[Path, Path], tmp_path: Path,
                                                        two_stage: bool) -> None:
    image, audio = _inputs(tmp_path)
    info = _renderer(tiny_ltx, two_stage=two_stage).render(SEGMENT, image, audio, tmp_path / "clip.mp4", prompt="x")
    assert (info["generated"], info["frames"]) == (17, 12)  # 8k+1 generated, trimmed to the covered frames
    clip = probe(tmp_path / "clip.mp4", decode=True)
    assert clip["video"]["decoded_frames"] == 12 and (clip["video"]["width"], clip["video"]["height"]) == (64, 64)
    assert clip["audio"]["codec"] == "aac" and clip["audio"]["duration"] == pytest.approx(12 / 25, abs=0.03)


def test_the_audio_latents_passed_in_are_the_ones_used_and_held_clean(tiny_ltx: tuple[Path, Path], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    image, audio = _inputs(tmp_path)
    renderer = _renderer(tiny_ltx)
    expected = renderer.audio_latents(audio)
    pipe = renderer.pipe()
    original = type(pipe).__call__
    calls: list[dict] = []

    def spy(self: object, *args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return original(self, *args, **{**kwargs, "output_type": kwargs.get("output_type")})

    monkeypatch.setattr(type(pipe), "__call__", spy)
    renderer.generate(SEGMENT, image, expected, "a singer", 0)
    assert calls and calls[0]["freeze_audio"] is True
    assert calls[0]["audio_latents"] is expected
    assert calls[0]["num_frames"] == 17 and calls[0]["conditions"][0].index == 0
    # and frozen means untouched: the pipeline returns exactly the latents it was given
    result = original(pipe, **{**calls[0], "output_type": "latent"})
    assert (result.audio.float() - expected.float()).abs().max().item() == 0.0


def test_bad_settings_are_one_line() -> None:
    with pytest.raises(MvgenError, match="multiples of 64 for two-stage"):
        LtxRenderer(id_or_path="x/y", width=1920, height=1080, two_stage=True, upsampler_id_or_path="u")
    with pytest.raises(MvgenError, match="upsampler_id_or_path"):
        LtxRenderer(id_or_path="x/y", two_stage=True)


@pytest.mark.slow
def test_two_segment_song_end_to_end(tiny_ltx: tuple[Path, Path], song_conf: Path, tmp_path: Path) -> None:
    model, _ = tiny_ltx
    t = np.arange(int(4.0 * 48000)) / 48000
    sf.write(tmp_path / "song.wav", np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2, axis=1).astype(np.float32),
             48000)
    args = ["--config-dir", str(song_conf), "song=short", "music=file", f"music.path={tmp_path / 'song.wav'}",
            "render=ltx23", f"render.id_or_path={model}", "render.dtype=float32", "render.width=64",
            "render.height=64", "render.sigmas=[1.0,0.5]", "render.max_sequence_length=16", "frames.candidates=2",
            "segment.min_seconds=1", "segment.target_seconds=2", "segment.max_seconds=2.4", "segment.snap=none",
            "runtime.progress=false"]
    run = run_dir_of(run_mvgen(args, tmp_path))
    plan = read_json(run / "segments.json")
    assert len(plan["segments"]) == 2
    for segment in plan["segments"]:
        clip = probe(run / "clips" / f"{segment['name']}.mp4", decode=True)
        assert clip["video"]["decoded_frames"] == segment["frames"]
    master = probe(run / "master.mp4", decode=True)
    assert master["video"]["decoded_frames"] == 100 and master["video"]["width"] == 64
