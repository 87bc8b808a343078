"""render=ltx23 on tiny random LTX-2 components saved with save_pretrained and loaded through id_or_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mvgen.errors import MvgenError
from mvgen.media.video import probe
from mvgen.stages.render_ltx import LtxRenderer
from mvgen.util import read_json

from .conftest import run_dir_of, run_mvgen

SEGMENT = {"index": 0, "name": "seg_000", "frames": 12, "generate_frames": 17, "start": 0.0, "end": 0.48, "words": []}


def _renderer(tiny_ltx: tuple[Path, Path], cls: type[LtxRenderer] = LtxRenderer, **kwargs: object) -> LtxRenderer:
    model, upsampler = tiny_ltx
    options = dict(id_or_path=str(model), dtype="float32", device="cpu", width=64, height=64,
                   upsampler_id_or_path=str(upsampler), sigmas=[1.0, 0.5], stage2_sigmas=[0.5], max_sequence_length=16)
    options.update(kwargs)
    return cls(**options)  # type: ignore[arg-type]


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
    _video, audio_out, *_ = original(pipe, **{**calls[0], "output_type": "latent", "return_dict": False})
    assert (audio_out.float() - expected.float()).abs().max().item() == 0.0


def test_bad_settings_are_one_line() -> None:
    with pytest.raises(MvgenError, match="upsampler_id_or_path"):
        LtxRenderer(id_or_path="x/y", two_stage=True)


@pytest.mark.slow
def test_two_segment_song_end_to_end(tiny_ltx: tuple[Path, Path], song_conf: Path, tmp_path: Path) -> None:
    model, upsampler = tiny_ltx  # the production recipe: two-stage with the x2 upsampler
    t = np.arange(int(4.0 * 48000)) / 48000
    sf.write(tmp_path / "song.wav", np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2, axis=1).astype(np.float32),
             48000)
    args = ["--config-dir", str(song_conf), "song=short", "music=file", f"music.path={tmp_path / 'song.wav'}",
            "render=ltx23", f"render.id_or_path={model}", "render.dtype=float32", "render.width=64",
            "render.height=64", "render.sigmas=[1.0,0.5]", "render.stage2_sigmas=[0.5]",
            f"render.upsampler_id_or_path={upsampler}", "render.upsampler_subfolder=null",
            "render.max_sequence_length=16", "frames.candidates=2",
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


def test_frame_rule_comes_from_the_model_configs(tiny_ltx: tuple[Path, Path]) -> None:
    renderer = _renderer(tiny_ltx, two_stage=True)
    rule = renderer.frame_rule()
    pipe = renderer.pipe()  # the loaded pipeline agrees with the rule read from configs alone
    assert rule.step == pipe.vae_temporal_compression_ratio == 2
    assert rule.grid == 2 * pipe.vae_spatial_compression_ratio  # two-stage: stage 1 runs at half size
    assert rule.canvas == (6, 8)  # the DFR canvas segments (3 and 4 latent frames) at this VAE's ratio
    assert SEGMENT["generate_frames"] == 17 and rule.allowed(17)


def test_a_plan_that_does_not_fit_stops_before_any_denoising(tiny_ltx: tuple[Path, Path], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    image, audio = _inputs(tmp_path)
    renderer = _renderer(tiny_ltx)
    monkeypatch.setattr(renderer, "denoise", lambda *a, **k: pytest.fail("denoised a clip that cannot fit"))
    for bad, match in (({"generate_frames": 16}, "without padding"), ({"generate_frames": 259}, "max_frames")):
        with pytest.raises(MvgenError, match=match) as info:
            renderer.render({**SEGMENT, **bad}, image, audio, tmp_path / "clip.mp4")
        assert "\n" not in str(info.value)
    with pytest.raises(MvgenError, match="grid of 2 px"):
        _renderer(tiny_ltx, width=63, height=64, two_stage=False).frame_rule()


def test_our_decode_matches_the_pipelines_own(tiny_ltx: tuple[Path, Path], tmp_path: Path) -> None:
    """uint8 on the device from the raw latents == the pipeline's own decode and float post-processing."""
    import torch
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

    image, audio = _inputs(tmp_path)
    renderer = _renderer(tiny_ltx, two_stage=False)
    pipe = renderer.pipe()
    latents = renderer.audio_latents(audio)
    embeds, mask = renderer.prompt_embeddings(renderer.prompt_text("a singer"))
    common = dict(prompt_embeds=embeds, prompt_attention_mask=mask, num_frames=17, frame_rate=25.0,
                  audio_latents=latents, freeze_audio=True, generate_slots=False, height=64, width=64,
                  sigmas=[1.0, 0.5], conditions=[LTX2VideoCondition(frames=Image.open(image), index=0, crf=0)])
    ours = renderer.decode(pipe(**common, output_type="latent", generator=torch.Generator().manual_seed(3)).frames,
                           17).numpy()
    theirs = pipe(**common, output_type="np", generator=torch.Generator().manual_seed(3)).frames[0]
    expected = (np.clip(theirs, 0, 1) * 255 + 0.5).astype(np.uint8)
    assert ours.shape == expected.shape == (17, 64, 64, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1


def test_each_prompt_is_encoded_once(tiny_ltx: tuple[Path, Path], tmp_path: Path) -> None:
    from mvgen.models import release_models

    release_models()
    image, audio = _inputs(tmp_path)
    renderer = _renderer(tiny_ltx, two_stage=True)
    pipe = renderer.pipe()
    calls = []
    original = pipe.text_encoder.forward
    pipe.text_encoder.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    renderer.prepare(["a singer", "a singer", "a dancer"])
    assert len(calls) == 2  # two distinct prompts
    renderer.render(SEGMENT, image, audio, tmp_path / "a.mp4", prompt="a singer")  # both stages, no new encode
    renderer.render({**SEGMENT, "index": 1}, image, audio, tmp_path / "b.mp4", prompt="a dancer")
    assert len(calls) == 2
    renderer.render(SEGMENT, image, audio, tmp_path / "c.mp4", prompt="someone new")  # unprepared: encoded once
    assert len(calls) == 3


def test_a_decode_past_the_index_limit_tiles_by_itself(tiny_ltx: tuple[Path, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import mvgen.model_shapes as shapes
    from mvgen.models import release_models

    release_models()
    renderer = _renderer(tiny_ltx, two_stage=False)
    vae = renderer.pipe().vae
    latents = torch.randn(1, 4, 9, 32, 32)  # 17 frames at 64x64 on the tiny VAE (2x / 2x)
    peak = shapes.decode_index_peak(vae, (1, 4, 9, 32, 32))
    monkeypatch.setattr(shapes, "INDEX_LIMIT", peak - 1)  # this decode now "crosses" the limit
    assert not vae.use_tiling
    frames = renderer.decode(latents, 17)
    assert vae.use_tiling and tuple(frames.shape) == (17, 64, 64, 3)


def test_an_index_limit_error_decodes_again_tiled_without_denoising_again(tiny_ltx: tuple[Path, Path],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from mvgen.models import release_models

    release_models()
    renderer = _renderer(tiny_ltx, two_stage=False)
    vae = renderer.pipe().vae
    original = vae.decode
    attempts: list[bool] = []

    def decode(*args: object, **kwargs: object) -> object:
        attempts.append(vae.use_tiling)
        if not vae.use_tiling:
            raise RuntimeError("input tensor must fit into 32-bit index math")
        return original(*args, **kwargs)

    monkeypatch.setattr(vae, "decode", decode)
    frames = renderer.decode(torch.randn(1, 4, 9, 32, 32), 17)
    assert attempts == [False, True] and tuple(frames.shape) == (17, 64, 64, 3)
    # and when it reaches the retry policy, the first fallback for it is tiling, not offload
    fresh = _renderer(tiny_ltx)
    assert fresh.degrade(RuntimeError("input tensor must fit into 32-bit index math")) == "VAE tiling"
    assert fresh.degrade(RuntimeError("CUDA out of memory")) == "model CPU offload"
