"""The published LTX-2.3 model shapes, for measuring the real render path without downloading weights.

The configs are those of diffusers' ``scripts/convert_ltx2_to_diffusers.py`` for version "2.3" (transformer,
video VAE, audio VAE, text connectors, vocoder with bandwidth extension, x2 spatial latent upsampler) and of
``google/gemma-3-12b-it`` (LTX-2.3's text encoder). ``build_ltx23`` instantiates them with random weights: on
the meta device (shapes only, no memory: CPU tests and ``bench/gpu_check.py --meta``) or at full size on a GPU.

``decode_index_peak`` answers "would this VAE decode cross PyTorch's 32-bit index limit?" exactly, by running
the decoder on meta tensors (about 30 ms, no memory) and recording the largest convolution input.
"""

from __future__ import annotations

from typing import Any

INDEX_LIMIT = 2**31 - 1  # cuDNN / ATen kernels index a conv input with int32: beyond this they refuse it

LTX23_TRANSFORMER: dict[str, Any] = dict(
    in_channels=128, out_channels=128, patch_size=1, patch_size_t=1, num_attention_heads=32, attention_head_dim=128,
    cross_attention_dim=4096, vae_scale_factors=(8, 32, 32), pos_embed_max_pos=20, base_height=2048,
    base_width=2048, gated_attn=True, cross_attn_mod=True, audio_in_channels=128, audio_out_channels=128,
    audio_patch_size=1, audio_patch_size_t=1, audio_num_attention_heads=32, audio_attention_head_dim=64,
    audio_cross_attention_dim=2048, audio_scale_factor=4, audio_pos_embed_max_pos=20, audio_sampling_rate=16000,
    audio_hop_length=160, audio_gated_attn=True, audio_cross_attn_mod=True, num_layers=48,
    activation_fn="gelu-approximate", qk_norm="rms_norm_across_heads", norm_elementwise_affine=False, norm_eps=1e-6,
    caption_channels=3840, attention_bias=True, attention_out_bias=True, rope_theta=10000.0,
    rope_double_precision=True, causal_offset=1, timestep_scale_multiplier=1000,
    cross_attn_timestep_scale_multiplier=1000, rope_type="split", use_prompt_embeddings=False, perturbed_attn=True)

LTX23_VIDEO_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=128, block_out_channels=(256, 512, 1024, 1024),
    down_block_types=("LTX2VideoDownBlock3D",) * 4, decoder_block_out_channels=(256, 512, 512, 1024),
    layers_per_block=(4, 6, 4, 2, 2), decoder_layers_per_block=(4, 6, 4, 2, 2),
    spatio_temporal_scaling=(True, True, True, True), decoder_spatio_temporal_scaling=(True, True, True, True),
    decoder_inject_noise=(False,) * 5, downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
    upsample_type=("spatiotemporal", "spatiotemporal", "temporal", "spatial"), upsample_residual=(False,) * 4,
    upsample_factor=(2, 2, 1, 2), timestep_conditioning=False, patch_size=4, patch_size_t=1, resnet_norm_eps=1e-6,
    encoder_causal=True, decoder_causal=False, encoder_spatial_padding_mode="zeros",
    decoder_spatial_padding_mode="zeros", spatial_compression_ratio=32, temporal_compression_ratio=8)

LTX23_AUDIO_VAE: dict[str, Any] = dict(
    base_channels=128, output_channels=2, ch_mult=(1, 2, 4), num_res_blocks=2, attn_resolutions=None, in_channels=2,
    resolution=256, latent_channels=8, norm_type="pixel", causality_axis="height", dropout=0.0,
    mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=64,
    double_z=True)

LTX23_CONNECTORS: dict[str, Any] = dict(
    caption_channels=3840, text_proj_in_factor=49, video_connector_num_attention_heads=32,
    video_connector_attention_head_dim=128, video_connector_num_layers=8, video_connector_num_learnable_registers=128,
    video_gated_attn=True, audio_connector_num_attention_heads=32, audio_connector_attention_head_dim=64,
    audio_connector_num_layers=8, audio_connector_num_learnable_registers=128, audio_gated_attn=True,
    connector_rope_base_seq_len=4096, rope_theta=10000.0, rope_double_precision=True,
    causal_temporal_positioning=False, rope_type="split", per_modality_projections=True, video_hidden_dim=4096,
    audio_hidden_dim=2048, proj_bias=True)

LTX23_VOCODER: dict[str, Any] = dict(
    in_channels=128, hidden_channels=1536, out_channels=2, upsample_kernel_sizes=[11, 4, 4, 4, 4, 4],
    upsample_factors=[5, 2, 2, 2, 2, 2], resnet_kernel_sizes=[3, 7, 11],
    resnet_dilations=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], act_fn="snakebeta", leaky_relu_negative_slope=0.1,
    antialias=True, antialias_ratio=2, antialias_kernel_size=12, final_act_fn=None, final_bias=False,
    bwe_in_channels=128, bwe_hidden_channels=512, bwe_out_channels=2, bwe_upsample_kernel_sizes=[12, 11, 4, 4, 4],
    bwe_upsample_factors=[6, 5, 2, 2, 2], bwe_resnet_kernel_sizes=[3, 7, 11],
    bwe_resnet_dilations=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], bwe_act_fn="snakebeta", bwe_leaky_relu_negative_slope=0.1,
    bwe_antialias=True, bwe_antialias_ratio=2, bwe_antialias_kernel_size=12, bwe_final_act_fn=None,
    bwe_final_bias=False, filter_length=512, hop_length=80, window_length=512, num_mel_channels=64,
    input_sampling_rate=16000, output_sampling_rate=48000)

LTX23_UPSAMPLER: dict[str, Any] = dict(
    in_channels=128, mid_channels=1024, num_blocks_per_stage=4, dims=3, spatial_upsample=True,
    temporal_upsample=False, rational_spatial_scale=2.0, use_rational_resampler=False)

GEMMA3_12B_TEXT: dict[str, Any] = dict(
    hidden_size=3840, intermediate_size=15360, num_hidden_layers=48, num_attention_heads=16, num_key_value_heads=8,
    head_dim=256, query_pre_attn_scalar=256, vocab_size=262208, sliding_window=1024, max_position_embeddings=131072,
    rms_norm_eps=1e-6, rope_theta=1_000_000.0, rope_local_base_freq=10000.0,
    rope_scaling={"factor": 8.0, "rope_type": "linear"}, hidden_activation="gelu_pytorch_tanh",
    pad_token_id=0, eos_token_id=1, bos_token_id=2)
GEMMA3_12B_VISION: dict[str, Any] = dict(
    hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16, patch_size=14,
    image_size=896, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh", num_channels=3, vision_use_head=False)


def offline_gemma_tokenizer() -> Any:
    """A Gemma tokenizer built offline (letters and byte fallback): token ids stay far below the real vocab,
    so the full-size embedding table is exercised with realistic shapes."""
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    pieces = ["\u2581"] + list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'")
    pieces += [f"<0x{i:02X}>" for i in range(256)]
    return GemmaTokenizer(vocab={t: i for i, t in enumerate(specials + pieces)}, merges=[])


def build_ltx23(device: str = "meta", dtype: Any = None, text_layers: int | None = None) -> dict[str, Any]:
    """Every LTX-2.3 component at its published size with random weights, plus the x2 upsampler.

    ``device="meta"`` allocates nothing. On a GPU the weights are created directly in ``dtype`` (bf16 halves
    the init memory: an fp32 init of the 22B transformer alone needs about 90 GB). ``text_layers`` cuts the
    Gemma-3 text encoder to that many layers (None: all 48)."""
    import torch
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler,
                           LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    dtype = dtype or torch.bfloat16
    text = dict(GEMMA3_12B_TEXT)
    if text_layers is not None:
        text["num_hidden_layers"] = text_layers
    gemma = Gemma3Config(text_config=Gemma3TextConfig(**text), vision_config=SiglipVisionConfig(**GEMMA3_12B_VISION),
                         mm_tokens_per_image=256)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            components = {
                "transformer": LTX2VideoTransformer3DModel(**LTX23_TRANSFORMER),
                "vae": AutoencoderKLLTX2Video(**LTX23_VIDEO_VAE),
                "audio_vae": AutoencoderKLLTX2Audio(**LTX23_AUDIO_VAE),
                "connectors": LTX2TextConnectors(**LTX23_CONNECTORS),
                "vocoder": LTX2VocoderWithBWE(**LTX23_VOCODER),
                "text_encoder": Gemma3ForConditionalGeneration(gemma).eval(),
            }
        # its blur kernel is built with an integer matmul that CUDA refuses: build on the CPU, then move
        with torch.device("meta" if device == "meta" else "cpu"):
            upsampler = LTX2LatentUpsamplerModel(**LTX23_UPSAMPLER)
        components["latent_upsampler"] = upsampler if device == "meta" else upsampler.to(device)
    finally:
        torch.set_default_dtype(previous)
    for module in components.values():
        module.to(dtype)
    components["scheduler"] = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False, base_shift=0.95,
                                                              max_shift=2.05, base_image_seq_len=1024,
                                                              max_image_seq_len=4096, shift_terminal=None)
    components["tokenizer"] = offline_gemma_tokenizer()
    return components


def parameter_bytes(module: Any) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + sum(
        b.numel() * b.element_size() for b in module.buffers())


# What must sit on the GPU at each point of the render stage (the vocoder is never called: clips carry the song)
RESIDENT = {
    "encode": ("text_encoder",),
    "denoise": ("transformer", "connectors", "vae", "audio_vae", "latent_upsampler"),
}


def resident_weights(components: dict[str, Any], phase: str) -> int:
    """Bytes of weights on the GPU while the render stage is in ``phase`` (encode, then denoise)."""
    return sum(parameter_bytes(components[name]) for name in RESIDENT[phase])


def _meta_twin(vae: Any) -> Any:
    """A weightless copy of ``vae`` (same config and tiling/framewise switches) on the meta device."""
    import torch

    with torch.device("meta"):
        twin = type(vae).from_config(vae.config)
    for name in ("use_tiling", "use_framewise_decoding", "tile_sample_min_height", "tile_sample_min_width",
                 "tile_sample_min_num_frames", "tile_sample_stride_height", "tile_sample_stride_width",
                 "tile_sample_stride_num_frames"):
        if hasattr(vae, name):
            setattr(twin, name, getattr(vae, name))
    return twin.to(vae.dtype)


_PEAKS: dict[tuple[Any, ...], int] = {}


def decode_index_peak(vae: Any, latent_shape: tuple[int, ...]) -> int:
    """The largest element count of any convolution input while ``vae`` decodes latents of ``latent_shape``
    (with the VAE's current tiling switches), found by decoding meta tensors; cached per shape."""
    import torch

    key = (repr(sorted(vae.config.items())), tuple(latent_shape), bool(getattr(vae, "use_tiling", False)),
           bool(getattr(vae, "use_framewise_decoding", False)))
    if key in _PEAKS:
        return _PEAKS[key]
    twin = _meta_twin(vae)
    peak = [0]

    def record(module: Any, inputs: tuple[Any, ...]) -> None:
        peak[0] = max(peak[0], inputs[0].numel())

    hooks = [m.register_forward_pre_hook(record) for m in twin.modules()
             if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))]
    try:
        latents = torch.empty(latent_shape, device="meta", dtype=twin.dtype)
        timestep = torch.zeros(latent_shape[0], device="meta") if vae.config.get("timestep_conditioning") else None
        with torch.no_grad():
            twin.decode(latents, timestep, return_dict=False)
    finally:
        for hook in hooks:
            hook.remove()
    _PEAKS[key] = peak[0]
    return peak[0]
