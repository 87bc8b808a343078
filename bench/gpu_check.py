"""GPU check (a benchmark, not a test): the production render recipe at LTX-2.3's real shapes, random weights.

Builds every LTX-2.3 component at its published size (``mvgen.model_shapes``: the 22B-class transformer and
connectors, the video and audio VAEs, the x2 latent upsampler, and a full 48-layer Gemma-3 12B text encoder) in
bf16 with random weights, then renders clips through mvgen's own ``LtxRenderer``: prompts encoded once and the
text encoder moved off the GPU (``prepare``), audio-VAE latents from a waveform, stage 1 at half resolution,
the upsampler, stage 2 at full resolution, our uint8 decode. Sequence length 1024. Per clip it prints:

- seconds in the transformer (and per step), the VAE decode, the upsampler and the audio encode;
- the clip's wall time and the share spent outside those models (target: at most 5 %);
- the x264 encode of the clip (CPU; overlaps nothing; reported apart);
- peak GPU memory, and whether it fits an 80 GB card;

then a projection for a 33-clip 1920x1088 song (goal: at most 12 minutes of render).

    python bench/gpu_check.py            # needs CUDA (an H100 80 GB or larger); writes scratch/gpu_check.json
    python bench/gpu_check.py --meta     # CPU: the full-size shapes on the meta device (sizes, rule, index limit)
    python bench/gpu_check.py --tiny     # CPU smoke run of the same timing code on tiny components
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GIB = 2**30
CARD_80GB_USABLE_GIB = 79.1  # what an 80 GB H100 reports as total memory
SONG_CLIPS = 33  # the reference music video: 33 clips at 1920x1088
GOAL_MINUTES = 12.0
PIPE_COMPONENTS = ("transformer", "vae", "audio_vae", "scheduler", "text_encoder", "tokenizer", "connectors",
                   "vocoder")


class Timer:
    """Wraps a module's method and sums its synchronised wall time."""

    def __init__(self, owner: Any, name: str, cuda: bool) -> None:
        self.owner, self.name, self.cuda = owner, name, cuda
        self.original = getattr(owner, name)
        self.seconds, self.calls = 0.0, 0
        setattr(owner, name, self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = self.original(*args, **kwargs)
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return result

    def take(self) -> tuple[float, int]:
        seconds, calls = self.seconds, self.calls
        self.seconds, self.calls = 0.0, 0
        return seconds, calls

    def restore(self) -> None:
        setattr(self.owner, self.name, self.original)


def renderer_for(pipe: Any, upsampler: Any, width: int, height: int, cuda: bool, steps: int | None,
                 two_stage: bool) -> Any:
    """mvgen's LtxRenderer serving the in-memory pipeline (same code as a run; only loading is skipped)."""
    from diffusers.pipelines.ltx2.dfr_layout import SEGMENT_LATENT_CANDIDATES

    from mvgen.stages.render_ltx import LtxRenderer

    import importlib.util

    crf = 33 if importlib.util.find_spec("av") else 0  # LTX2VideoCondition re-compresses the image with PyAV
    renderer = LtxRenderer(id_or_path="(in memory)", dtype="bfloat16" if cuda else "float32",
                           device="cuda" if cuda else "cpu", width=width, height=height, two_stage=two_stage,
                           upsampler_id_or_path="(in memory)", image_crf=crf,
                           sigmas=list(np.linspace(1.0, 0.1, steps)) if steps else None,
                           stage2_sigmas=[0.5] if steps else None,
                           max_sequence_length=1024 if cuda else 16)
    renderer.pipe = lambda: pipe  # type: ignore[method-assign]
    renderer.upsampler = lambda: upsampler  # type: ignore[method-assign]
    renderer._rule = renderer._rule_from(pipe.vae_temporal_compression_ratio, pipe.vae_spatial_compression_ratio,
                                         pipe.transformer.config.patch_size_t, pipe.transformer.config.patch_size,
                                         SEGMENT_LATENT_CANDIDATES)
    return renderer


def measure(pipe: Any, upsampler: Any, width: int, height: int, frames: int, cuda: bool, steps: int | None,
            two_stage: bool, prompt: str) -> dict[str, Any]:
    from PIL import Image

    renderer = renderer_for(pipe, upsampler, width, height, cuda, steps, two_stage)
    t = np.arange(int(frames / 25.0 * 48000)) / 48000
    audio = np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2, axis=1).astype(np.float32)
    image_path = ROOT / "scratch" / f"gpu_check_{width}x{height}.png"
    image_path.parent.mkdir(exist_ok=True)
    Image.fromarray((np.random.default_rng(0).random((height, width, 3)) * 255).astype("uint8")).save(image_path)
    segment = {"index": 0, "name": "bench", "frames": frames, "generate_frames": frames, "start": 0.0,
               "end": frames / 25.0, "words": []}
    renderer.frame_rule().check_segment(segment)
    timers = {"text_encoder": Timer(pipe.text_encoder, "forward", cuda),
              "transformer": Timer(pipe.transformer, "forward", cuda),
              "vae_decode": Timer(pipe.vae, "decode", cuda), "audio_encode": Timer(pipe.audio_vae, "encode", cuda),
              "upsampler": Timer(upsampler, "forward", cuda)}
    try:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        renderer.prepare([prompt])  # once per stage for all its prompts; measured apart
        prepare_seconds = time.perf_counter() - start
        timers["text_encoder"].take()
        start = time.perf_counter()
        latents = renderer.audio_latents(audio)
        on_device = renderer.frames_on_device(segment, image_path, latents, prompt)
        pixels = on_device.cpu().numpy()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        spent = {name: timer.take() for name, timer in timers.items()}
    finally:
        for timer in timers.values():
            timer.restore()
    encode = None
    try:
        from mvgen.media.video import write_clip

        start = time.perf_counter()
        write_clip(ROOT / "scratch" / "gpu_check_clip.mp4", iter(pixels), 25, width, height, "veryfast", 18,
                   audio=audio)
        encode = round(time.perf_counter() - start, 3)
    except ImportError:
        pass  # PyAV absent on this machine: carry its wheel to measure the encode
    model = sum(spent[name][0] for name in ("transformer", "vae_decode", "audio_encode", "upsampler"))
    peak = torch.cuda.max_memory_allocated() / GIB if cuda else None
    return {
        "recipe": "two-stage" if two_stage else "single-stage", "width": width, "height": height, "frames": frames,
        "transformer_steps": spent["transformer"][1],
        "transformer_seconds": round(spent["transformer"][0], 3),
        "seconds_per_step": round(spent["transformer"][0] / max(spent["transformer"][1], 1), 3),
        "vae_decode_seconds": round(spent["vae_decode"][0], 3),
        "upsampler_seconds": round(spent["upsampler"][0], 3),
        "audio_encode_seconds": round(spent["audio_encode"][0], 3),
        "clip_seconds": round(wall, 3),
        "outside_model_seconds": round(wall - model, 3),
        "outside_model_share": round((wall - model) / wall, 4),
        "prepare_seconds": round(prepare_seconds, 3),
        "x264_encode_seconds": encode,
        "peak_memory_gib": round(peak, 2) if peak is not None else None,
        "fits_80gb": (peak + 1.5 <= CARD_80GB_USABLE_GIB) if peak is not None else None,
    }


def meta_report() -> dict[str, Any]:
    """The full-size shapes on the meta device: sizes, what is resident when, the frame rule, the index limit."""
    from mvgen.framing import FrameRule
    from mvgen.model_shapes import INDEX_LIMIT, build_ltx23, decode_index_peak, parameter_bytes, resident_weights

    components = build_ltx23("meta")
    sizes = {name: round(parameter_bytes(m) / GIB, 2) for name, m in components.items()
             if isinstance(m, torch.nn.Module)}
    vae = components["vae"]
    rule = FrameRule(step=vae.temporal_compression_ratio, grid=2 * vae.spatial_compression_ratio, canvas=(24, 32),
                     max_frames=257, source="LTX-2.3 configs, two-stage")
    lengths = sorted({rule.frames_for(n) for n in range(50, 201, 5)})
    decode = {}
    for frames in lengths:
        shape = (1, 128, (frames - 1) // 8 + 1, 1088 // 32, 1920 // 32)
        decode[frames] = "tiled" if decode_index_peak(vae, shape) > INDEX_LIMIT else "whole"
    return {"device": "meta (no weights)", "weights_gib": sizes,
            "resident_gib": {phase: round(resident_weights(components, phase) / GIB, 2)
                             for phase in ("encode", "denoise")},
            "frame_rule": rule.to_dict(), "planned_lengths": lengths, "decode_at_1080p": decode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--tiny", action="store_true", help="CPU smoke run with tiny components")
    mode.add_argument("--meta", action="store_true", help="CPU: full-size shapes on the meta device, no timings")
    parser.add_argument("--steps", type=int, default=None,
                        help="stage-1 steps (default: the distilled schedule, 8 + 3 stage-2 steps)")
    parser.add_argument("--frames", type=int, nargs="+", default=[121, 217],
                        help="clip lengths (121: a 5 s clip; 217: the longest the default planner makes)")
    parser.add_argument("--single-stage", action="store_true", help="also measure single-stage 1920x1088")
    parser.add_argument("--out", type=Path, default=ROOT / "scratch" / "gpu_check.json")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.meta:
        report = meta_report()
        print(json.dumps(report, indent=2))
        args.out.write_text(json.dumps(report, indent=2))
        return
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        sys.exit("gpu_check: no CUDA device here; --meta checks the full-size shapes, --tiny smoke-runs the code")
    from diffusers import LTX2DFRPipeline

    if cuda:
        from mvgen.model_shapes import build_ltx23

        start = time.perf_counter()
        components = build_ltx23("cuda", torch.bfloat16)
        print(f"built LTX-2.3-sized components in {time.perf_counter() - start:.1f} s", flush=True)
        device = torch.cuda.get_device_name(0)
        shapes = [(1920, 1088, n, True) for n in args.frames]
        shapes += [(1920, 1088, args.frames[0], False)] if args.single_stage else []
        warmup = (960, 544, 25, True)
    else:
        from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

        from tests.tiny_models import build_tiny_ltx2, build_tiny_ltx2_upsampler

        folder = ROOT / "scratch" / "gpu_check_tiny"
        if not (folder / "model_index.json").is_file():
            build_tiny_ltx2(folder)
            build_tiny_ltx2_upsampler(folder / "upsampler")
        tiny = LTX2DFRPipeline.from_pretrained(folder, use_safetensors=True)
        components = {name: getattr(tiny, name) for name in PIPE_COMPONENTS}
        components["latent_upsampler"] = LTX2LatentUpsamplerModel.from_pretrained(folder / "upsampler")
        device, shapes, warmup = "cpu (tiny components)", [(64, 64, 17, True), (64, 64, 25, True)], None
    pipe = LTX2DFRPipeline(**{name: components[name] for name in PIPE_COMPONENTS})
    pipe.set_progress_bar_config(disable=True)
    upsampler = components["latent_upsampler"]
    params = sum(p.numel() for p in pipe.transformer.parameters()) / 1e9
    print(f"device: {device}; transformer {params:.2f} B parameters", flush=True)
    prompt = "a singer on a rooftop at night, natural motion, subtle camera movement"
    if warmup:
        measure(pipe, upsampler, *warmup[:3], cuda, args.steps, warmup[3], prompt)
    rows = []
    for width, height, frames, two_stage in shapes:
        try:
            row = measure(pipe, upsampler, width, height, frames, cuda, args.steps, two_stage, prompt)
        except torch.cuda.OutOfMemoryError as exc:
            row = {"width": width, "height": height, "frames": frames, "error": f"out of memory: {exc}"[:200]}
            torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)
    report: dict[str, Any] = {"device": device, "transformer_params_b": round(params, 2), "rows": rows}
    production = next((r for r in rows if r.get("frames") == args.frames[0] and r.get("recipe") == "two-stage"
                       and "error" not in r), None)
    if production:
        minutes = (production["clip_seconds"] * SONG_CLIPS + production["prepare_seconds"]) / 60
        report["projection"] = {"clips": SONG_CLIPS, "clip_frames": production["frames"],
                                "render_minutes": round(minutes, 1), "goal_minutes": GOAL_MINUTES,
                                "meets_goal": minutes <= GOAL_MINUTES,
                                "fits_80gb": all(r.get("fits_80gb") for r in rows if "error" not in r)}
        print(json.dumps(report["projection"]))
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
