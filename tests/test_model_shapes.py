"""LTX-2.3 at its published size, on the meta device (shapes only, no weights, no memory): the frame rule
and grid read from the real configs, the 32-bit index limit of a 1080p decode, and what must fit one card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mvgen.errors import MvgenError
from mvgen.framing import FrameRule
from mvgen.model_shapes import INDEX_LIMIT, build_ltx23, decode_index_peak, parameter_bytes, resident_weights
from mvgen.stages.render_ltx import LtxRenderer
from mvgen.stages.segment import SegmentPlanner

GIB = 2**30


@pytest.fixture(scope="module")
def ltx23() -> dict[str, Any]:
    return build_ltx23("meta")


@pytest.fixture(scope="module")
def ltx23_configs(ltx23: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The published configs saved as a diffusers folder would hold them, without a single weight."""
    folder = tmp_path_factory.mktemp("ltx23")
    for name in ("vae", "transformer", "connectors"):
        ltx23[name].save_config(folder / name)
    return folder


def test_full_size_components_have_the_published_sizes(ltx23: dict[str, Any]) -> None:
    params = {name: sum(p.numel() for p in module.parameters()) / 1e9
              for name, module in ltx23.items() if isinstance(module, torch.nn.Module)}
    assert 18.5 < params["transformer"] < 19.5  # with the 3.2 B connectors: LTX-2.3's "22B"
    assert 3.0 < params["connectors"] < 3.4
    assert 12.0 < params["text_encoder"] < 12.5  # Gemma-3 12B
    assert all(p.device.type == "meta" for m in ltx23.values() if isinstance(m, torch.nn.Module)
               for p in m.parameters())


def test_the_frame_rule_is_read_from_the_real_configs(ltx23_configs: Path) -> None:
    rule = LtxRenderer(id_or_path=str(ltx23_configs), upsampler_id_or_path="x/y").frame_rule()
    assert (rule.step, rule.grid, rule.canvas) == (8, 64, (24, 32))  # two-stage: stage 1 at half size
    single = LtxRenderer(id_or_path=str(ltx23_configs), two_stage=False).frame_rule()
    assert single.grid == 32
    with pytest.raises(MvgenError, match="1920x1080 does not fit the model's grid of 64 px.*1920x1088") as info:
        LtxRenderer(id_or_path=str(ltx23_configs), upsampler_id_or_path="x/y", height=1080).frame_rule()
    assert "\n" not in str(info.value)
    with pytest.raises(MvgenError, match="128 learnable registers"):
        LtxRenderer(id_or_path=str(ltx23_configs), upsampler_id_or_path="x/y", max_sequence_length=64).frame_rule()


def test_a_1080p_decode_crosses_the_index_limit_from_129_frames(ltx23: dict[str, Any]) -> None:
    vae = ltx23["vae"]

    def peak(frames: int) -> int:
        return decode_index_peak(vae, (1, 128, (frames - 1) // 8 + 1, 1088 // 32, 1920 // 32))

    assert peak(121) == 128 * 123 * 272 * 480 < INDEX_LIMIT  # what ran on an H200
    assert peak(129) == 128 * 131 * 272 * 480 > INDEX_LIMIT  # what failed there
    vae.enable_tiling()
    try:
        assert peak(257) < INDEX_LIMIT  # tiling fixes every clip length up to max_frames
    finally:
        vae.disable_tiling()


def test_the_default_planner_makes_clips_the_model_runs_without_padding(ltx23_configs: Path) -> None:
    from diffusers.pipelines.ltx2.dfr_layout import resolve_canvas

    rule = LtxRenderer(id_or_path=str(ltx23_configs), upsampler_id_or_path="x/y").frame_rule()
    phrases = [{"text": f"line {i}", "start": 3.0 + 6.3 * i, "end": 3.0 + 6.3 * i + 4.1 + (i % 4) * 0.6,
                "kind": "lyric", "section": "verse", "section_index": 1, "line": i, "words": []} for i in range(36)]
    annotation = {"duration": 240.0, "phrases": phrases}
    plan = SegmentPlanner(fps=25, snap="none").plan(annotation, rule=rule)
    frames = [s["generate_frames"] for s in plan["segments"]]
    assert all(resolve_canvas(n, 8)[0] == n for n in frames)  # the pipeline's own canvas: no padding
    assert all(rule.allowed(n) and n <= 257 for n in frames)
    assert plan["frame_rule"] == rule.to_dict()


def test_the_denoise_weights_fit_80_gb_only_without_the_text_encoder(ltx23: dict[str, Any]) -> None:
    encode, denoise = resident_weights(ltx23, "encode"), resident_weights(ltx23, "denoise")
    assert parameter_bytes(ltx23["text_encoder"]) / GIB == pytest.approx(22.7, abs=0.2)
    assert 42 < denoise / GIB < 46  # transformer, connectors, VAEs, upsampler: room left for activations
    assert encode < denoise
    assert denoise + parameter_bytes(ltx23["text_encoder"]) > 66 * GIB  # both resident: no room for 1080p


def test_frame_rule_helpers() -> None:
    rule = FrameRule(step=8, canvas=(24, 32), max_frames=257)
    assert rule.canvas_frames(185) == 193 and rule.canvas_frames(193) == 193  # what LTX2DFRPipeline pads to
    assert rule.frames_for(185) == 193


def test_the_model_catalogue_counts_are_the_published_shapes(ltx23: dict[str, Any]) -> None:
    from mvgen.model_catalog import LTX23_PARAMS_B

    for name, billions in LTX23_PARAMS_B.items():  # what `mvgen models` estimates memory from, without a meta build
        assert sum(p.numel() for p in ltx23[name].parameters()) / 1e9 == pytest.approx(billions, abs=0.001), name
