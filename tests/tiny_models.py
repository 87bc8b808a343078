"""Tiny random models built from config, offline, saved with save_pretrained: the same loading code path
users run with real weights, at a size a CPU test can afford."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def build_tiny_ace_step(folder: Path) -> Path:
    """ACE-Step 1.5 with a tiny Qwen3 text encoder, a BPE tokenizer trained on the spot, and a tiny
    Oobleck VAE at the real 48 kHz / 1920x downsampling, so outputs have the real rate and length."""
    import torch
    from diffusers import AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step import AceStepConditionEncoder, AceStepPipeline
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = ["# Instruction\nFill the audio semantic mask based on the given conditions:\n# Caption\n# Metas\n",
              "bpm: N/A\ntimesignature: N/A\nkeyscale: N/A\nduration: 30 seconds\n",
              "[verse]\nSoft notes in the morning\n[chorus]\nsing along with me\n# Languages\nen\n# Lyric\n"]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                        unk_token="<|endoftext|>")
    torch.manual_seed(0)
    text_encoder = Qwen3Model(Qwen3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                          vocab_size=len(tokenizer), max_position_embeddings=4096))
    transformer = AceStepTransformer1DModel(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, head_dim=8, in_channels=24,
                                            audio_acoustic_hidden_dim=8, patch_size=2, rope_theta=10000.0,
                                            sliding_window=16)
    condition_encoder = AceStepConditionEncoder(hidden_size=32, intermediate_size=64, text_hidden_dim=32,
                                                timbre_hidden_dim=8, num_lyric_encoder_hidden_layers=2,
                                                num_timbre_encoder_hidden_layers=2, num_attention_heads=4,
                                                num_key_value_heads=2, head_dim=8, rope_theta=10000.0,
                                                sliding_window=16)
    vae = AutoencoderOobleck(encoder_hidden_size=16,  # encoder output = 2 x latent dim (mean, scale)
                             downsampling_ratios=[2, 4, 4, 6, 10],
                             channel_multiples=[1, 1, 1, 1, 1], decoder_channels=4, decoder_input_channels=8,
                             audio_channels=2, sampling_rate=48000)
    pipe = AceStepPipeline(transformer=transformer, condition_encoder=condition_encoder, vae=vae,
                           text_encoder=text_encoder, tokenizer=tokenizer,
                           scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0))
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_hf_whisper(folder: Path) -> Path:
    """A tiny random transformers Whisper with the real multilingual tokenizer (converted offline from the
    tiktoken file in the openai-whisper wheel), saved with safetensors."""
    import os

    import torch
    import whisper
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizerFast)
    from transformers.convert_slow_tokenizer import TikTokenConverter
    from whisper.tokenizer import get_encoding

    encoding = get_encoding("multilingual")
    vocab_file = os.path.join(os.path.dirname(whisper.__file__), "assets", "multilingual.tiktoken")
    fast = TikTokenConverter(vocab_file=vocab_file, pattern=encoding._pat_str,
                             extra_special_tokens=encoding._special_tokens).converted()
    tokenizer = WhisperTokenizerFast(tokenizer_object=fast, unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                                     eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    config = WhisperConfig(vocab_size=encoding.n_vocab, num_mel_bins=80, d_model=64, encoder_layers=2,
                           decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                           encoder_ffn_dim=256, decoder_ffn_dim=256,  # 4 x d_model: stable-ts converts to openai
                           max_source_positions=1500, max_target_positions=448,
                           decoder_start_token_id=encoding.encode_single_token("<|startoftranscript|>"),
                           pad_token_id=encoding.eot_token, eos_token_id=encoding.eot_token,
                           bos_token_id=encoding.eot_token)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config.alignment_heads = [[1, 0], [1, 1]]
    model.generation_config._from_model_config = False  # else transformers 5 drops alignment_heads
    model.save_pretrained(folder, safe_serialization=True)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def build_tiny_openai_whisper(path: Path) -> Path:
    """A tiny random openai-whisper checkpoint ({"dims", "model_state_dict"}: a torch pickle)."""
    import dataclasses

    import torch
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
                           n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=2)
    torch.manual_seed(0)
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": Whisper(dims).state_dict()}, path)
    return path


def build_clip_tokenizer() -> Any:
    """A CLIP tokenizer built offline: byte-level symbols (each also with the </w> end-of-word mark), no merges."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {token: i for i, token in enumerate(["<|startoftext|>", "<|endoftext|>"] + symbols
                                                 + [s + "</w>" for s in symbols])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    tokenizer.model_max_length = 77
    return tokenizer


def build_tiny_sdxl(folder: Path) -> Path:
    """Stable Diffusion XL at a tiny size (the shapes of diffusers' own fast tests), saved with safetensors."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = build_clip_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80, cross_attention_dim=64)  # 80 = 6 x 8 + 32; 64 = 32 + 32
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, sample_size=128)
    config = CLIPTextConfig(bos_token_id=0, eos_token_id=1, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05,
                            num_attention_heads=4, num_hidden_layers=5, pad_token_id=1, vocab_size=len(tokenizer),
                            hidden_act="gelu", projection_dim=32)
    pipe = StableDiffusionXLPipeline(
        unet=unet, vae=vae, text_encoder=CLIPTextModel(config), text_encoder_2=CLIPTextModelWithProjection(config),
        tokenizer=tokenizer, tokenizer_2=tokenizer,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                         beta_schedule="scaled_linear", timestep_spacing="leading"))
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_clip(folder: Path) -> Path:
    """A tiny random CLIP (text + vision towers) with its processor, saved with safetensors."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = build_clip_tokenizer()
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37,
                     "num_attention_heads": 4, "num_hidden_layers": 2, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
                       "num_hidden_layers": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder


def build_tiny_ltx2(folder: Path) -> Path:
    """Every LTX-2 component from tiny configs (diffusers' own test shapes), saved as an LTX2DFRPipeline folder.

    The tiny Gemma3 text encoder's hidden size equals the connector width; the tokenizer is a GemmaTokenizer
    from a vocab dict with byte-fallback tokens; the audio VAE uses ch_mult=(1, 1, 1) (the pipeline assumes
    4x compression)."""
    import torch
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler,
                           LTX2DFRPipeline, LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, GemmaTokenizer, SiglipVisionConfig

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    pieces = ["\u2581"] + list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'")
    pieces += [f"<0x{i:02X}>" for i in range(256)]
    tokenizer = GemmaTokenizer(vocab={t: i for i, t in enumerate(specials + pieces)}, merges=[])
    tokenizer.model_max_length = 64
    text = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                            sliding_window=64, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)
    torch.manual_seed(0)
    text_encoder = Gemma3ForConditionalGeneration(Gemma3Config(text_config=text, vision_config=vision,
                                                               mm_tokens_per_image=4)).eval()
    torch.manual_seed(0)
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
        audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads",
        caption_channels=32, rope_double_precision=False, rope_type="split", vae_scale_factors=(2, 2, 2))
    connectors = LTX2TextConnectors(
        caption_channels=32, text_proj_in_factor=3, video_connector_num_attention_heads=4,
        video_connector_attention_head_dim=8, video_connector_num_layers=1, video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=4, audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_theta=10000.0,
        rope_double_precision=False, causal_temporal_positioning=False, rope_type="split")
    vae = AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), decoder_block_out_channels=(8,),
        layers_per_block=(1,), decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(True,),
        decoder_spatio_temporal_scaling=(True,), decoder_inject_noise=(False, False), downsample_type=("spatial",),
        upsample_residual=(False,), upsample_factor=(1,), timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False)
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1, 1, 1), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=8)
    vocoder = LTX2Vocoder(in_channels=audio_vae.config.output_channels * audio_vae.config.mel_bins, hidden_channels=32,
                          out_channels=2, upsample_kernel_sizes=[4, 4], upsample_factors=[2, 2], resnet_kernel_sizes=[3],
                          resnet_dilations=[[1, 3, 5]], leaky_relu_negative_slope=0.1, output_sampling_rate=16000)
    pipe = LTX2DFRPipeline(transformer=transformer, vae=vae, audio_vae=audio_vae,
                           scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=text_encoder, tokenizer=tokenizer,
                           connectors=connectors, vocoder=vocoder)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_ltx2_upsampler(folder: Path) -> Path:
    import torch
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    torch.manual_seed(0)
    LTX2LatentUpsamplerModel(in_channels=4, mid_channels=32, num_blocks_per_stage=1, dims=3, spatial_upsample=True,
                             temporal_upsample=False).save_pretrained(folder, safe_serialization=True)
    return folder
