"""GPU-only checks: the LTX render path on CUDA in bf16 (tiny weights). Skipped on machines without CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mvgen.stages.render_ltx import LtxRenderer

from .tiny_models import build_tiny_ltx2

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU; the CPU path is covered by test_render_ltx.py")]


def test_ltx_renders_on_cuda_in_bf16(tmp_path: Path) -> None:
    model = build_tiny_ltx2(tmp_path / "ltx2")
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype("uint8")).save(tmp_path / "f.png")
    audio = np.zeros((int(17 / 25 * 48000), 2), np.float32)
    renderer = LtxRenderer(id_or_path=str(model), dtype="bfloat16", device="cuda", width=64, height=64,
                           two_stage=False, sigmas=[1.0, 0.5], max_sequence_length=16)
    segment = {"index": 0, "name": "seg_000", "frames": 12, "generate_frames": 17, "start": 0.0, "end": 0.48}
    info = renderer.render(segment, tmp_path / "f.png", audio, tmp_path / "clip.mp4")
    assert info["frames"] == 12 and torch.cuda.max_memory_allocated() > 0


def test_ltx_renders_under_model_cpu_offload(tmp_path: Path) -> None:
    """Offload (the first out-of-memory fallback): every input must go to the execution device."""
    model = build_tiny_ltx2(tmp_path / "ltx2")
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype("uint8")).save(tmp_path / "f.png")
    audio = np.zeros((int(17 / 25 * 48000), 2), np.float32)
    renderer = LtxRenderer(id_or_path=str(model), dtype="bfloat16", device="cuda", offload=True, width=64, height=64,
                           two_stage=False, sigmas=[1.0, 0.5], max_sequence_length=16)
    segment = {"index": 0, "name": "seg_000", "frames": 12, "generate_frames": 17, "start": 0.0, "end": 0.48}
    renderer.prepare(["a singer"])
    info = renderer.render(segment, tmp_path / "f.png", audio, tmp_path / "clip.mp4", prompt="a singer")
    assert info["frames"] == 12
