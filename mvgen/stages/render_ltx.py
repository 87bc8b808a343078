"""Stage 5a, render with LTX-2.3: approved frame + the segment's slice of the song -> an audio-synced clip.

Lightricks' two-stage audio-to-video recipe (their ``A2VidPipelineTwoStage`` and distilled pipeline), on
diffusers' ``LTX2DFRPipeline``:

1. stage 1 at half resolution on the distilled schedule, the approved frame pinned at frame 0 (re-compressed
   at the H.264 CRF the model was trained with, 33 through LTX-2.3) and the segment's audio encoded by the
   audio VAE and held clean (``freeze_audio=True``), so motion follows the song;
2. the x2 spatial latent upsampler;
3. stage 2 at full resolution on the distilled stage-2 sigmas (0.909375, 0.725, 0.421875, then 0), re-noised
   to the first of them, audio still frozen;
4. our own VAE decode of the trimmed latents straight to uint8 on the device (no vocoder: the clip's audio
   is the original song, never the model's).

Rules come from the model, not from assumptions: ``frame_rule()`` reads the VAE and transformer configs (no
weights) for the frame step, the pixel grid and the canvas segments; the planner plans with it and every
clip is checked against it before any denoising.

Memory on one 80 GB card: prompts are encoded once each (``prepare``) and the Gemma-3 text encoder then
leaves the GPU; a decode that would cross PyTorch's 32-bit index limit switches VAE tiling on by itself
(and such an error is handled like out of memory); under model CPU offload every input goes to the
pipeline's execution device.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mvgen.errors import MvgenError
from mvgen.framing import FrameRule
from mvgen.media.video import AUDIO_RATE, check_preset, write_clip
from mvgen.stages.render import check_fps, covered_audio
from mvgen.util import derive_seed
from mvgen.stages.protocols import RenderStage

log = logging.getLogger("mvgen")

SELECTIONS = ("most_motion", "least_motion", "first")
UINT8_CHUNK_FRAMES = 16  # frames converted to uint8 at a time: bounds the float temporary on the GPU


def is_index_limit_error(exc: BaseException) -> bool:
    """PyTorch refusing a tensor too large for 32-bit indexing (a VAE decode at 1080p past 121 frames)."""
    text = str(exc)
    return "32-bit index math" in text or "canUse32BitIndexMath" in text


class LtxRenderer(RenderStage):
    def __init__(self, id_or_path: str, revision: str | None = None, dtype: str = "bfloat16", device: str = "cuda",
                 offload: bool = False, vae_tiling: bool = False, fps: int = 25, width: int = 1920,
                 height: int = 1088, max_frames: int = 257, two_stage: bool = True,
                 upsampler_id_or_path: str | None = None, upsampler_subfolder: str | None = None,
                 sigmas: list[float] | None = None, stage2_sigmas: list[float] | None = None,
                 image_crf: int | None = None, seed: int = 0, motion: str = "", clip_candidates: int = 1,
                 clip_selection: str = "most_motion", audio_noise: float = 0.0, max_sequence_length: int = 1024,
                 preset: str = "veryfast", crf: int = 18, lipsync: bool = True, sync_max_offset: int = 2,
                 sync_min_confidence: float = 0.3, sync_rerolls: int = 2) -> None:
        check_fps(fps)
        if two_stage and not upsampler_id_or_path:
            raise MvgenError("render.two_stage=true needs render.upsampler_id_or_path (the x2 latent upsampler)")
        if clip_selection not in SELECTIONS:
            raise MvgenError(f"render.clip_selection={clip_selection!r}; use {', '.join(SELECTIONS)}")
        if clip_candidates < 1:
            raise MvgenError("render.clip_candidates must be at least 1")
        if max_sequence_length < 1:
            raise MvgenError(f"render.max_sequence_length={max_sequence_length}; use 1024 (LTX's own)")
        self.id_or_path, self.revision, self.dtype, self.device = id_or_path, revision, dtype, device
        self.offload, self.vae_tiling = offload, vae_tiling
        self.fps, self.width, self.height, self.max_frames = fps, width, height, max_frames
        self.two_stage = two_stage
        self.upsampler_id_or_path, self.upsampler_subfolder = upsampler_id_or_path, upsampler_subfolder
        self.sigmas, self.stage2_sigmas = sigmas, stage2_sigmas
        self.image_crf, self.seed, self.motion = image_crf, seed, motion
        self.clip_candidates, self.clip_selection = clip_candidates, clip_selection
        self.audio_noise, self.max_sequence_length = audio_noise, max_sequence_length
        self.preset, self.crf = preset, crf
        self.lipsync, self.sync_max_offset = lipsync, sync_max_offset
        self.sync_min_confidence, self.sync_rerolls = sync_min_confidence, sync_rerolls
        check_preset(preset, "render.preset")
        self._rule: FrameRule | None = None

    # ------------------------------------------------------------------------------------- rules
    def frame_rule(self) -> FrameRule:
        """The frame rule and pixel grid of this model, from its VAE and transformer configs (no weights)."""
        if self._rule is None:
            import torch
            from diffusers import AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
            from diffusers.pipelines.ltx2 import LTX2TextConnectors
            from diffusers.pipelines.ltx2.dfr_layout import SEGMENT_LATENT_CANDIDATES

            from mvgen.models import load_config

            vae_config = load_config(AutoencoderKLLTX2Video, self.id_or_path, "vae", self.revision)
            transformer_config = load_config(LTX2VideoTransformer3DModel, self.id_or_path, "transformer",
                                             self.revision)
            connectors = load_config(LTX2TextConnectors, self.id_or_path, "connectors", self.revision)
            registers = connectors.get("video_connector_num_learnable_registers") or 0
            if registers and self.max_sequence_length % registers:
                raise MvgenError(f"render.max_sequence_length={self.max_sequence_length}: this model's text "
                                 f"connectors have {registers} learnable registers, so use a multiple of "
                                 f"{registers} (1024 is LTX's own)")
            with torch.device("meta"):  # the ratios the pipeline will use are the instance's, not the config's
                vae = AutoencoderKLLTX2Video.from_config(vae_config)
            self._rule = self._rule_from(vae.temporal_compression_ratio, vae.spatial_compression_ratio,
                                         int(transformer_config.get("patch_size_t", 1)),
                                         int(transformer_config.get("patch_size", 1)), SEGMENT_LATENT_CANDIDATES)
        return self._rule

    def _rule_from(self, temporal: int, spatial: int, patch_t: int, patch: int,
                   segment_latents: tuple[int, ...]) -> FrameRule:
        step = temporal * patch_t
        rule = FrameRule(step=step, grid=spatial * patch * (2 if self.two_stage else 1),
                         canvas=tuple(c * step for c in segment_latents), max_frames=self.max_frames,
                         source=f"LTX VAE {spatial}x spatial / {temporal}x temporal, patch {patch}x{patch_t}"
                                f"{', two-stage' if self.two_stage else ''}")
        rule.check_size(self.width, self.height)
        return rule

    # ------------------------------------------------------------------------------------- models
    def pipe(self) -> Any:
        from diffusers import LTX2DFRPipeline

        from mvgen.models import cached, load_pipeline

        pipe = load_pipeline(LTX2DFRPipeline, self.id_or_path, self.revision, self.dtype, self.device, self.offload)
        cached(("ltx_rule_checked", self.id_or_path, self.revision, self.dtype, self.device, self.offload),
               lambda: self._check_loaded(pipe))  # once per loaded pipeline: pipe() is called many times per clip
        if self.vae_tiling and not pipe.vae.use_tiling:
            pipe.vae.enable_tiling()
        return pipe

    def _check_loaded(self, pipe: Any) -> bool:
        """The loaded pipeline's frame rule is the one read from its configs."""
        from diffusers.pipelines.ltx2.dfr_layout import SEGMENT_LATENT_CANDIDATES

        loaded = self._rule_from(pipe.vae_temporal_compression_ratio, pipe.vae_spatial_compression_ratio,
                                 pipe.transformer.config.patch_size_t, pipe.transformer.config.patch_size,
                                 SEGMENT_LATENT_CANDIDATES)
        expected = self.frame_rule()
        if (loaded.step, loaded.grid, loaded.canvas) != (expected.step, expected.grid, expected.canvas):
            raise MvgenError(f"the loaded LTX pipeline's frame rule ({loaded.describe()}) differs from its "
                             f"configs' ({expected.describe()}); check {self.id_or_path}")
        return True

    def upsampler(self) -> Any:
        """The x2 spatial latent upsampler model, on the execution device (called directly: no VAE needed)."""
        from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

        from mvgen.models import cached, from_pretrained, torch_dtype

        def load() -> Any:
            model = from_pretrained(LTX2LatentUpsamplerModel, str(self.upsampler_id_or_path),
                                    subfolder=self.upsampler_subfolder, use_safetensors=True,
                                    torch_dtype=torch_dtype(self.dtype))
            return model.to(self.pipe()._execution_device).eval()

        return cached(("upsampler", self.upsampler_id_or_path, self.upsampler_subfolder, self.dtype, self.device),
                      load)

    def degrade(self, exc: BaseException | None = None) -> str | None:
        """The next memory-saving fallback after an out-of-memory (or 32-bit index) error; None when all are on."""
        if exc is not None and is_index_limit_error(exc) and not self.vae_tiling:
            self.vae_tiling = True
            return "VAE tiling"
        if not self.offload:
            self.offload = True
            return "model CPU offload"
        if not self.vae_tiling:
            self.vae_tiling = True
            return "VAE tiling"
        return None

    # ------------------------------------------------------------------------------------- prompts
    def prompt_text(self, prompt: str) -> str:
        return " ".join(f"{prompt} {self.motion}".split())

    def prepare(self, prompts: list[str]) -> None:
        """Encode every prompt of the stage once, then move the text encoder off the GPU: LTX-2.3's 22B
        transformer and Gemma-3 12B do not fit one 80 GB card together with 1080p activations."""
        texts = list(dict.fromkeys(self.prompt_text(p) for p in prompts))
        if not texts:
            return
        pipe = self.pipe()
        for text in texts:
            self.prompt_embeddings(text)
        if not self.offload and pipe.text_encoder.device.type != "cpu":
            pipe.text_encoder.to("cpu")
            pipe.vocoder.to("cpu")  # never called: clips carry the original song
            _empty_cache()
            log.info("encoded %d prompt(s); the text encoder left the GPU", len(texts))

    def prompt_embeddings(self, text: str) -> tuple[Any, Any]:
        """(prompt_embeds, attention mask) of one prompt, computed once per process and kept on the CPU."""
        import torch

        from mvgen.models import cached

        def encode() -> tuple[Any, Any]:
            pipe = self.pipe()
            device = pipe._execution_device
            parked = not self.offload and pipe.text_encoder.device != device
            if parked:  # encoded after prepare(): bring the text encoder back for this prompt only
                pipe.text_encoder.to(device)
            try:
                with torch.no_grad():
                    embeds, mask = pipe.encode_prompt(prompt=text, max_sequence_length=self.max_sequence_length,
                                                      device=device)
            finally:
                if parked:
                    pipe.text_encoder.to("cpu")
            return embeds.cpu(), mask.cpu()

        return cached(("ltx_prompt", self.id_or_path, self.revision, self.dtype, self.max_sequence_length, text),
                      encode)

    # ------------------------------------------------------------------------------------- audio
    def audio_latents(self, audio: np.ndarray, rate: int = AUDIO_RATE) -> Any:
        """Waveform [n, 2] -> raw audio-VAE latents [1, C, T, mel]: log-mel (n_fft 1024, hop = the VAE's
        mel_hop_length, slaney, power 1), log(clamp 1e-5), then ``audio_vae.encode(...).latent_dist.mode()``."""
        import torch
        import torchaudio

        from mvgen.media.audio import resample

        pipe = self.pipe()
        vae = pipe.audio_vae
        config = vae.config
        wave = resample(np.ascontiguousarray(audio, dtype=np.float32), rate, config.sample_rate)
        if self.audio_noise > 0:  # light noise helps lip motion on very clean vocals; the clip keeps clean audio
            rms = float(np.sqrt(np.mean(wave ** 2))) or 1e-3
            noise = np.random.default_rng(self.seed).standard_normal(wave.shape).astype(np.float32)
            wave = wave + self.audio_noise * rms * noise
        tensor = torch.from_numpy(np.ascontiguousarray(wave.T))  # [channels, samples]
        if tensor.shape[0] == 1 and config.in_channels == 2:
            tensor = tensor.repeat(2, 1)
        mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate, n_fft=1024, win_length=1024, hop_length=config.mel_hop_length, f_min=0.0,
            f_max=config.sample_rate / 2, n_mels=config.mel_bins, window_fn=torch.hann_window, center=True,
            pad_mode="reflect", power=1.0, mel_scale="slaney", norm="slaney")(tensor)
        mel = torch.log(torch.clamp(mel, min=1e-5)).permute(0, 2, 1).unsqueeze(0)  # [1, C, T, mel]
        with torch.no_grad():  # the execution device, not vae.device: under offload the VAE moves only when called
            return vae.encode(mel.to(device=pipe._execution_device, dtype=vae.dtype)).latent_dist.mode()

    # ------------------------------------------------------------------------------------- render
    def render(self, segment: dict[str, Any], image_path: Path, audio: np.ndarray, out_path: Path,
               prompt: str = "") -> dict[str, Any]:
        """audio: the song from the segment's start, covering every generated frame (48 kHz stereo).

        Each take renders ``clip_candidates`` clips and keeps one by ``clip_selection``. A lyric clip is then
        checked for lip sync (``mvgen.lipsync`` with the MTCNN face tracker of ``mvgen.face``) and rendered
        again with new seeds, up to ``sync_rerolls`` times, while its mouth is more than ``sync_max_offset``
        frames off or its match is weaker than ``sync_min_confidence``; the best take is kept."""
        from mvgen.face import FaceMouthTracker, MtcnnDetector, face_model_available
        from mvgen.lipsync import estimate_offset, in_sync, keep_take, sync_figure, sync_record, vocal_envelope

        self.frame_rule().check_segment(segment)
        latents = self.audio_latents(audio)
        covered = segment["frames"]
        clip_audio = covered_audio(audio, covered, self.fps)
        singing = self.lipsync and segment.get("kind") == "lyric"
        unavailable = face_model_available() if singing else None
        detector = MtcnnDetector()
        if singing and not unavailable and not detector.detect(np.asarray(self.start_image(image_path))):
            unavailable = "no face in the approved frame: no mouth to check"  # the clip starts from it
        envelope = vocal_envelope(audio, AUDIO_RATE, self.fps, covered) if singing and not unavailable else None
        takes: list[dict[str, Any]] = []  # each take is kept in its own file until the best is known
        for take in range(1 + (self.sync_rerolls if envelope is not None else 0)):
            chosen, frames, scores = self._pick_candidate(segment, image_path, latents, prompt, take)
            pixels = frames[:covered].cpu().numpy()
            del frames
            path = out_path.with_name(f"take_{take}{out_path.suffix}")
            count = write_clip(path, iter(pixels), self.fps, self.width, self.height, self.preset, self.crf,
                               audio=clip_audio)
            if count != covered:
                raise RuntimeError(f"{segment['name']}: rendered {count} of {covered} frames")
            entry: dict[str, Any] = {"take": take, "path": path, "candidate": chosen, "motion": scores,
                                     "in_sync": True}
            if envelope is not None:
                tracker = FaceMouthTracker(detector)
                entry["mouth"] = tracker.openness(pixels)
                entry["face_frames"] = tracker.faces_found
                entry["result"] = estimate_offset(entry["mouth"], envelope)
                entry["in_sync"] = tracker.faces_found > 0 and in_sync(entry["result"], self.sync_max_offset,
                                                                       self.sync_min_confidence)
            del pixels
            takes.append(entry)
            if entry["in_sync"]:
                break
        best = max(takes, key=lambda t: (t["in_sync"], t["result"]["confidence"] if "result" in t else 0.0))
        keep_take(takes, best, out_path)
        info = {"frames": covered, "generated": int(segment["generate_frames"]),
                "canvas": self.frame_rule().canvas_frames(int(segment["generate_frames"])),
                "candidate": best["candidate"], "motion": best["motion"], "frozen": best["motion"][best["candidate"]] < 0.5,
                "two_stage": self.two_stage, "audio_latents_shape": list(latents.shape)}
        if envelope is None:
            reason = unavailable or ("lip sync is off (render.lipsync=false)" if not self.lipsync
                                     else "not a lyric segment")
            info["sync"] = {"checked": False, "reason": reason}
            return info
        sync_figure(best["mouth"], envelope, best["result"], self.fps, segment["name"], out_path.with_name("sync.png"))
        info["sync"] = {**sync_record(takes, best, per_take=("face_frames",)), "tracker": "mtcnn"}
        return info

    def start_image(self, image_path: Path) -> Any:
        """The approved frame at the render size (a PIL image): what the clip starts from."""
        from PIL import Image as PILImage

        with PILImage.open(image_path) as image:
            return image.convert("RGB").resize((self.width, self.height), PILImage.LANCZOS)

    def _pick_candidate(self, segment: dict[str, Any], image_path: Path, latents: Any, prompt: str,
                        take: int) -> tuple[int, Any, list[float]]:
        """Render this take's ``clip_candidates`` clips and keep one by ``clip_selection``: (its index, its
        frames on the device, every candidate's motion score). Take t uses candidates t*K .. t*K+K-1, so a
        lip-sync re-roll draws new seeds."""
        best: tuple[int, Any] | None = None
        scores: list[float] = []
        for k in range(self.clip_candidates):
            frames = self.frames_on_device(segment, image_path, latents, prompt, take * self.clip_candidates + k)
            scores.append(round(_motion(frames), 4))
            if best is None or self._better(scores[-1], scores[best[0]]):
                best = (k, frames)
            del frames
        assert best is not None
        return best[0], best[1], scores

    def _better(self, motion: float, incumbent: float) -> bool:
        if self.clip_selection == "first":
            return False
        return motion > incumbent if self.clip_selection == "most_motion" else motion < incumbent

    def generate(self, segment: dict[str, Any], image_path: Path, audio_latents: Any, prompt: str,
                 candidate: int = 0) -> np.ndarray:
        """``segment["generate_frames"]`` RGB uint8 frames [F, H, W, 3] for one clip candidate."""
        return self.frames_on_device(segment, image_path, audio_latents, prompt, candidate).cpu().numpy()

    def frames_on_device(self, segment: dict[str, Any], image_path: Path, audio_latents: Any, prompt: str,
                         candidate: int = 0) -> Any:
        """One clip candidate as a uint8 tensor [F, H, W, 3] on the execution device."""
        latents = self.denoise(segment, image_path, audio_latents, prompt, candidate)
        frames = self.decode(latents, int(segment["generate_frames"]))
        if frames.shape[0] != segment["generate_frames"] or tuple(frames.shape[1:3]) != (self.height, self.width):
            raise RuntimeError(f"{segment['name']}: the video model returned {tuple(frames.shape)}, expected "
                               f"({segment['generate_frames']}, {self.height}, {self.width}, 3)")
        return frames

    def denoise(self, segment: dict[str, Any], image_path: Path, audio_latents: Any, prompt: str,
                candidate: int = 0) -> Any:
        """The recipe's video latents (raw, un-normalized, on the padded canvas) for one candidate."""
        import torch
        from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
        from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES
        from PIL import Image as PILImage

        pipe = self.pipe()
        device = pipe._execution_device
        embeds, mask = self.prompt_embeddings(self.prompt_text(prompt))
        image = self.start_image(image_path)
        take = ("take", segment["take"]) if segment.get("take") else ()  # a reviewer's re-roll: new noise
        seed = derive_seed(self.seed, "render", segment["index"], candidate, *take)
        common = dict(prompt_embeds=embeds.to(device), prompt_attention_mask=mask.to(device),
                      num_frames=int(segment["generate_frames"]), frame_rate=float(self.fps),
                      audio_latents=audio_latents.to(device), freeze_audio=True, generate_slots=False,
                      max_sequence_length=self.max_sequence_length, output_type="latent", return_dict=False)

        def condition(picture: Any) -> Any:
            return [LTX2VideoCondition(frames=picture, index=0, strength=1.0, crf=self.image_crf)]

        def generator(offset: int) -> Any:
            return torch.Generator(device="cpu").manual_seed(seed + offset)

        sigmas = list(self.sigmas or DISTILLED_SIGMA_VALUES)
        if not self.two_stage:
            return pipe(**common, conditions=condition(image), height=self.height, width=self.width, sigmas=sigmas,
                        generator=generator(0))[0]
        half = image.resize((self.width // 2, self.height // 2), PILImage.LANCZOS)
        stage1 = pipe(**common, conditions=condition(half), height=self.height // 2, width=self.width // 2,
                      sigmas=sigmas, generator=generator(0))[0]
        upsampler = self.upsampler()
        with torch.no_grad():
            upsampled = upsampler(stage1.to(upsampler.dtype))
        del stage1
        stage2_sigmas = list(self.stage2_sigmas or STAGE_2_DISTILLED_SIGMA_VALUES)
        return pipe(**common, conditions=condition(image), latents=upsampled, height=self.height, width=self.width,
                    sigmas=stage2_sigmas, noise_scale=stage2_sigmas[0], generator=generator(1))[0]

    def decode(self, latents: Any, frames: int) -> Any:
        """Raw canvas latents -> uint8 frames [F, H, W, 3] on the device: trimmed to ``frames``, decoded at
        timestep 0, tiled when the decode would cross the 32-bit index limit, converted in chunks."""
        import torch
        from diffusers.pipelines.ltx2.utils import trim_canvas

        from mvgen.model_shapes import INDEX_LIMIT, decode_index_peak

        pipe = self.pipe()
        vae = pipe.vae
        latents = trim_canvas(latents, frames, pipe.vae_temporal_compression_ratio).to(vae.dtype)
        timestep = (torch.zeros(latents.shape[0], device=latents.device, dtype=latents.dtype)
                    if vae.config.timestep_conditioning else None)
        if not vae.use_tiling and decode_index_peak(vae, tuple(latents.shape)) > INDEX_LIMIT:
            log.info("decode of %s latents crosses the 32-bit index limit: VAE tiling on", tuple(latents.shape))
            vae.enable_tiling()
        try:
            with torch.no_grad():
                video = vae.decode(latents, timestep, return_dict=False)[0]
        except RuntimeError as exc:
            if not is_index_limit_error(exc) or vae.use_tiling:
                raise
            vae.enable_tiling()  # decode again, tiled; the denoise is not repeated
            with torch.no_grad():
                video = vae.decode(latents, timestep, return_dict=False)[0]
        return _to_uint8(video[0])


def _to_uint8(video: Any) -> Any:
    """[C, F, H, W] in [-1, 1] -> uint8 [F, H, W, C] on the same device; NaN/inf pixels are an error."""
    import torch

    if not bool(torch.isfinite(video).all()):
        raise RuntimeError("the video model produced NaN/inf pixels")
    out = torch.empty((video.shape[1], video.shape[2], video.shape[3], video.shape[0]), dtype=torch.uint8,
                      device=video.device)
    for start in range(0, video.shape[1], UINT8_CHUNK_FRAMES):
        chunk = video[:, start:start + UINT8_CHUNK_FRAMES].float()
        out[start:start + chunk.shape[1]] = ((chunk + 1.0) * 127.5 + 0.5).clamp_(0, 255).permute(1, 2, 3, 0).to(
            torch.uint8)
    return out


def _motion(frames: Any) -> float:
    """Mean absolute frame-to-frame change (0-255) on a 1/4-size view, computed where the frames are."""
    if frames.shape[0] < 2:
        return 0.0
    view = frames[:, ::4, ::4].float()
    return float((view[1:] - view[:-1]).abs().mean())


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
