"""``mvgen models`` and the missing-model check: what a profile loads, where it is looked for, whether it is
there (tiny models saved to folders and fake Hugging Face cache layouts), and the GPU memory arithmetic."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from mvgen.app import compose_config
from mvgen.errors import MvgenError
from mvgen.model_catalog import (GIB, KNOWN, check_models, check_presence, estimate_memory, longest_clip, ltx_memory,
                                 preflight, report, required_models)
from .conftest import FAST, run_mvgen


def _cfg(*overrides: str) -> dict[str, Any]:
    container = OmegaConf.to_container(compose_config(list(overrides)), resolve=True)
    assert isinstance(container, dict)
    return container


def _in_cache(cache: Path, repo: str, folder: Path, commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """``folder`` laid out as huggingface_hub's cache holds a downloaded snapshot of ``repo`` at main."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    shutil.copytree(folder, root / "snapshots" / commit)
    return root / "snapshots" / commit


def test_production_lists_every_model_it_loads() -> None:
    needs = required_models(_cfg("profile=production"))
    assert [(n.stage, n.source, n.kind) for n in needs] == [
        ("music", "ACE-Step/acestep-v15-xl-turbo-diffusers", "hub"),
        ("annotate", "Whisper base", "bundled"),
        ("annotate", "Spleeter 2-stem", "bundled"),
        ("frames", "black-forest-labs/FLUX.2-klein-4B", "hub"),
        ("review", "openai/clip-vit-large-patch14", "hub"),
        ("render", "diffusers/LTX-2.3-Distilled-Diffusers", "hub"),
        ("render", "dg845/LTX-2.3-Spatial-Upsampler-Diffusers", "hub"),
        ("render", "MTCNN", "bundled")]
    assert all(n.known for n in needs if n.kind == "hub")  # every preset's model has a size and a licence
    single = required_models(_cfg("profile=production", "render.two_stage=false", "annotate.isolate_vocals=true"))
    assert "dg845/LTX-2.3-Spatial-Upsampler-Diffusers" not in [n.source for n in single]
    assert ("annotate", "annotate.vocals_model") in [(n.stage, n.key) for n in single]
    pinned = required_models(_cfg("profile=production", "render.revision=abc"))
    assert [n.revision for n in pinned[-3:-1]] == ["abc", None]  # the upsampler is loaded at main


def test_presence_of_local_folders_and_cached_hub_snapshots(tiny_clip: Path, tiny_sdxl: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    cache.mkdir()
    cfg = _cfg("frames=sdxl", f"frames.id_or_path={tiny_sdxl}", "review=clip", "runtime.device=cuda")
    frames, clip = [n for n in check_models(cfg, cache) if n.stage in ("frames", "review")]
    assert frames.kind == "local" and frames.present and frames.where == f"local folder {tiny_sdxl}"
    assert clip.kind == "hub" and not clip.present and clip.why == "not in the cache"
    assert clip.fetch_command() == ('hf download openai/clip-vit-large-patch14 --include "*.json" "*.txt" '
                                    '"model.safetensors"')

    snapshot = _in_cache(cache, "openai/clip-vit-large-patch14", tiny_clip)
    clip = check_presence(clip, cache)
    assert clip.present and str(snapshot) in clip.where
    sdxl = "stabilityai/stable-diffusion-xl-base-1.0"
    _in_cache(cache, sdxl, tiny_sdxl)  # at main only: a pinned revision is another snapshot
    pinned = required_models(_cfg("frames=sdxl", "frames.revision=v2"))[-1]
    assert not check_presence(pinned, cache).present and "--revision v2" in pinned.fetch_command()
    assert check_presence(required_models(_cfg("frames=sdxl"))[-1], cache).present

    for weights in snapshot.glob("*.safetensors"):  # an interrupted download: config but no weights
        weights.unlink()
    assert check_presence(clip, cache).why == "no .safetensors weights"

    broken = tmp_path / "sdxl_without_unet"
    shutil.copytree(tiny_sdxl, broken)
    shutil.rmtree(broken / "unet")
    need = check_presence(required_models(_cfg("frames=sdxl", f"frames.id_or_path={broken}"))[-1], cache)
    assert not need.present and need.why == "no unet folder"


def test_a_missing_model_is_one_line_with_the_command_and_bundled_ones_pass(tiny_sdxl: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    cache.mkdir()
    preflight(_cfg(), cache)  # the CPU preview: bundled models only
    preflight(_cfg("frames=sdxl", f"frames.id_or_path={tiny_sdxl}"), cache)  # a saved folder is present
    with pytest.raises(MvgenError) as info:
        preflight(_cfg("profile=production", "render.id_or_path=/nowhere/ltx"), cache)
    message = str(info.value)
    assert "\n" not in message
    assert "hf download ACE-Step/acestep-v15-xl-turbo-diffusers" in message
    assert "render.id_or_path=/nowhere/ltx is neither a local folder nor a hub id" in message
    assert "Whisper base" not in message  # present: bundled
    preflight(_cfg("profile=production", "runtime.allow_download=true", "render.id_or_path=owner/ltx"), cache)


def test_a_run_with_a_missing_model_stops_before_any_stage(song_conf: Path, tmp_path: Path) -> None:
    proc = run_mvgen(["--config-dir", str(song_conf), *FAST, "frames=sdxl", "frames.id_or_path=someone/no-such-model",
                      "frames.device=cpu"], tmp_path, env={"HF_HUB_CACHE": str(tmp_path / "hub"),
                                                           "HF_HUB_OFFLINE": "1"}, check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mvgen: error:")]
    assert len(errors) == 1 and "frames.id_or_path=someone/no-such-model" in errors[0]
    assert "download it first: hf download someone/no-such-model" in errors[0]
    assert not list(tmp_path.glob("outputs/*/*/song.wav"))  # no stage ran
    assert not (tmp_path / "outputs" / "store").exists()


def test_models_command_reports_presence_size_licence_and_memory(tiny_clip: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    _in_cache(cache, "openai/clip-vit-large-patch14", tiny_clip)
    proc = run_mvgen(["models", "profile=production"], tmp_path, env={"HF_HUB_CACHE": str(cache),
                                                                      "HF_HUB_OFFLINE": "1"})
    out = proc.stdout
    assert "openai/clip-vit-large-patch14  (review.clip_model, revision main)" in out
    assert f"licence MIT; Hugging Face cache {cache}/models--openai--clip-vit-large-patch14" in out
    assert ": present" in out.split("openai/clip-vit-large-patch14")[1].splitlines()[1]
    assert "~70.5 GB, licence LTX-2 Community License" in out and "MISSING (not in the cache)" in out
    assert "hf download diffusers/LTX-2.3-Distilled-Diffusers" in out
    assert "hf download openai/clip-vit-large-patch14" not in out  # present: nothing to fetch
    assert "Missing: 4." in out and "Peak GPU memory" in out and "render   ~" in out
    assert "GPU: none visible" in out or "GPU: NVIDIA" in out

    preview = run_mvgen(["models"], tmp_path).stdout
    assert "Every model is present." in preview and "GPU: not needed" in preview
    bad = run_mvgen(["models", "render.fps=abc"], tmp_path, check=False)
    assert bad.returncode == 2 and "(key: render.fps)" in bad.stderr


def test_ltx_memory_reproduces_the_measured_activations_and_switches() -> None:
    base = {"dtype": "bfloat16", "two_stage": False, "offload": False, "vae_tiling": False}

    def activations(width: int, height: int, frames: int, **extra: Any) -> float:
        m = ltx_memory({**base, "width": width, "height": height, **extra}, frames)
        return float(m.detail.rsplit("activations ", 1)[1].split(" GiB")[0])

    # NOTES.md, one H200: peak minus 39.1 GiB of weights
    assert activations(1920, 1088, 121) == pytest.approx(66.8 - 39.1, abs=0.6)
    assert activations(960, 544, 121) == pytest.approx(46 - 39.1, abs=0.6)
    assert activations(960, 544, 193) == pytest.approx(50 - 39.1, abs=0.6)
    assert activations(1920, 1088, 193) == pytest.approx(52 - 39.1, abs=0.6)  # tiled by itself
    assert "tiling off" in ltx_memory({**base, "width": 1920, "height": 1088}, 121).detail
    assert "tiling on (past the 32-bit index limit)" in ltx_memory({**base, "width": 1920, "height": 1088}, 129).detail
    full = ltx_memory({**base, "width": 1920, "height": 1088, "two_stage": True}, 217).peak_gib
    assert ltx_memory({**base, "width": 1920, "height": 1088, "two_stage": True, "offload": True}, 217).peak_gib < full
    assert ltx_memory({**base, "width": 1920, "height": 1088, "dtype": "float32"}, 217).peak_gib > 2 * full - 20
    cfg = _cfg("profile=production")
    assert longest_clip(cfg) == 217  # 8 s at 25 fps on LTX's rule, as the planner makes it
    assert longest_clip(_cfg("profile=production", "render.max_frames=160")) == 145


def test_the_gpu_verdict(tmp_path: Path) -> None:
    cfg = _cfg("profile=production")
    memory = estimate_memory(cfg, required_models(cfg))
    peak = max(m.peak_gib for m in memory)
    assert [m.stage for m in memory] == ["music", "frames", "review", "render"]
    assert 50 < peak < 79  # one 80 GB card, the text encoder off the GPU while denoising
    assert f"NVIDIA H100 80GB HBM3, 79.1 GiB: fits (peak about {peak:.0f} GiB in the render stage)" in report(
        cfg, gpu=("NVIDIA H100 80GB HBM3", 79.1), cache=tmp_path)
    small = report(cfg, gpu=("NVIDIA L4", 22.0), cache=tmp_path)
    assert "NVIDIA L4, 22.0 GiB: does NOT fit" in small and "render.offload=true" in small
    assert "GPU: not needed" in report(_cfg(), gpu=None, cache=tmp_path)


def test_catalogue_sizes_follow_the_parameter_counts() -> None:
    ltx = KNOWN["diffusers/LTX-2.3-Distilled-Diffusers"]
    assert ltx.download_gb == pytest.approx(ltx.params_b * 2, rel=0.01)  # bf16 safetensors
    assert all(k.largest_b <= k.params_b for k in KNOWN.values())
    assert GIB == 2**30
