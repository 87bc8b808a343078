"""GPU check (a benchmark, not a test): LTX-2.3-sized audio-to-video rendering with random weights.

Builds an LTX2DFRPipeline whose transformer, video VAE, audio VAE, connectors and vocoder use diffusers'
default (full LTX-2) sizes with random weights in bf16; only the Gemma text encoder is cut to one layer
(same 3840 width), since prompt encoding is not what this measures. Then, for each configuration it runs
the real mvgen render path (audio-VAE latents from a waveform, freeze_audio=True, image condition at
frame 0) and reports:

- seconds per denoising step (transformer only, CUDA-synchronised),
- VAE decode seconds, total seconds, and the pipeline's own overhead per clip
  (total - transformer - VAE decode - audio encode),
- peak GPU memory (torch.cuda.max_memory_allocated).

Configurations: stage 1 at half resolution (960x544) and stage 2 at 1920x1088, 121 and 193 frames.

    python bench/gpu_check.py                 # needs CUDA; prints a table and writes gpu_check.json
    python bench/gpu_check.py --tiny          # CPU smoke run of the same code path with tiny components
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


def full_size_pipeline(dtype: torch.dtype, device: str = "cuda") -> Any:
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler,
                           LTX2DFRPipeline, LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, GemmaTokenizer, SiglipVisionConfig

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    pieces = ["\u2581"] + list("abcdefghijklmnopqrstuvwxyz.,") + [f"<0x{i:02X}>" for i in range(256)]
    tokenizer = GemmaTokenizer(vocab={t: i for i, t in enumerate(specials + pieces)}, merges=[])
    text = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=3840, intermediate_size=512, num_hidden_layers=1,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=256, max_position_embeddings=2048,
                            sliding_window=512, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)
    with torch.device(device):
        text_encoder = Gemma3ForConditionalGeneration(Gemma3Config(text_config=text, vision_config=vision,
                                                                   mm_tokens_per_image=4)).to(dtype).eval()
        transformer = LTX2VideoTransformer3DModel().to(dtype)
        connectors = LTX2TextConnectors(caption_channels=3840, text_proj_in_factor=2).to(dtype)
        vae = AutoencoderKLLTX2Video().to(dtype)
        audio_vae = AutoencoderKLLTX2Audio().to(dtype)
        vocoder = LTX2Vocoder().to(dtype)
    pipe = LTX2DFRPipeline(transformer=transformer, vae=vae, audio_vae=audio_vae,
                           scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=text_encoder, tokenizer=tokenizer,
                           connectors=connectors, vocoder=vocoder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_pipeline() -> Any:
    from diffusers import LTX2DFRPipeline

    from tests.tiny_models import build_tiny_ltx2

    folder = ROOT / "scratch" / "gpu_check_tiny"
    if not (folder / "model_index.json").is_file():
        build_tiny_ltx2(folder)
    pipe = LTX2DFRPipeline.from_pretrained(folder, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Timer:
    """Wraps a module's forward (or a function) and sums its synchronised wall time."""

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

    def restore(self) -> None:
        setattr(self.owner, self.name, self.original)


def measure(pipe: Any, width: int, height: int, frames: int, steps: int, cuda: bool) -> dict[str, Any]:
    from PIL import Image

    from mvgen.stages.render import LtxRenderer

    renderer = LtxRenderer(id_or_path="(in memory)", dtype="bfloat16" if cuda else "float32",
                           device="cuda" if cuda else "cpu", width=width, height=height,
                           sigmas=list(np.linspace(1.0, 0.1, steps)), max_sequence_length=64)
    renderer.pipe = lambda: pipe  # type: ignore[method-assign]  # the bench's pipeline, same render code
    seconds = frames / 25.0
    t = np.arange(int(seconds * 48000)) / 48000
    audio = np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2, axis=1).astype(np.float32)
    image_path = ROOT / "scratch" / "gpu_check_frame.png"
    image_path.parent.mkdir(exist_ok=True)
    Image.fromarray((np.random.default_rng(0).random((height, width, 3)) * 255).astype("uint8")).save(image_path)
    segment = {"index": 0, "name": "bench", "frames": frames, "generate_frames": frames, "start": 0.0,
               "end": seconds, "words": []}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    start = time.perf_counter()
    latents = renderer.audio_latents(audio)
    audio_seconds = time.perf_counter() - start
    transformer = Timer(pipe.transformer, "forward", cuda)
    decode = Timer(pipe.vae, "decode", cuda)
    try:
        start = time.perf_counter()
        renderer.generate(segment, image_path, latents, "a singer on a rooftop at night", 0)
        if cuda:
            torch.cuda.synchronize()
        total = time.perf_counter() - start
    finally:
        transformer.restore()
        decode.restore()
    return {
        "width": width, "height": height, "frames": frames, "steps": transformer.calls,
        "seconds_per_step": round(transformer.seconds / max(transformer.calls, 1), 3),
        "vae_decode_seconds": round(decode.seconds, 3),
        "audio_encode_seconds": round(audio_seconds, 3),
        "total_seconds": round(total + audio_seconds, 3),
        "pipeline_overhead_seconds": round(total - transformer.seconds - decode.seconds, 3),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run with tiny components")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "scratch" / "gpu_check.json")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        sys.exit("gpu_check: no CUDA device here; run with --tiny for a CPU smoke run of the same code path")
    if cuda:
        sizes = [(960, 544, 121), (960, 544, 193), (1920, 1088, 121), (1920, 1088, 193)]
        pipe = full_size_pipeline(torch.bfloat16)
        device = torch.cuda.get_device_name(0)
        params = sum(p.numel() for p in pipe.transformer.parameters()) / 1e9
    else:
        sizes = [(64, 64, 17), (64, 64, 25)]
        pipe = tiny_pipeline()
        device, params = "cpu (tiny components)", sum(p.numel() for p in pipe.transformer.parameters()) / 1e9
    print(f"device: {device}; transformer parameters: {params:.2f} B")
    rows = []
    for width, height, frames in sizes:
        try:
            row = measure(pipe, width, height, frames, args.steps, cuda)
        except torch.cuda.OutOfMemoryError as exc:
            row = {"width": width, "height": height, "frames": frames, "error": f"out of memory: {exc}"[:200]}
            torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": device, "transformer_params_b": params, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
