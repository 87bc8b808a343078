"""Stage 5a, render: approved frame + the segment's slice of the song -> ``clips/<segment>.mp4``.

Every renderer generates ``segment["generate_frames"]`` frames (the video model's frame rule, LTX's
8k+1), and the clip keeps exactly the ``segment["frames"]`` it covers, so clips tile the song
frame-exactly. Each clip carries its slice of the original song as AAC, for reviewing clips alone.

``LtxRenderer``: LTX-2.3 audio-conditioned image-to-video (see the class).

``AnimaticRenderer`` (CPU preview): a slow camera move on the approved frame (push in, pull out, pan,
rise; chosen per segment from the seed) with the current lyric line as a caption whose words light up
at their aligned times. What directors check timing with.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, ImageDraw

from mvgen.errors import MvgenError
from mvgen.media.fonts import font
from mvgen.media.video import write_clip
from mvgen.stages.prompts import derive_seed

CAMERA_MOVES = ("push_in", "pull_out", "pan_right", "pan_left", "rise")


def _ease(t: float) -> float:
    return t * t * (3.0 - 2.0 * t)


class AnimaticRenderer:
    def __init__(self, fps: int = 25, width: int = 960, height: int = 544, frame_step: int = 8,
                 max_frames: int = 257, zoom: float = 0.12, captions: bool = True, preset: str = "veryfast",
                 crf: int = 20, seed: int = 0) -> None:
        if fps <= 0:
            raise MvgenError(f"render.fps={fps}; use a positive frame rate such as 25")
        if width % 32 or height % 32:
            raise MvgenError(f"render size {width}x{height} must be multiples of 32 (the video model's grid); "
                             "e.g. 960x544 or 1920x1088")
        if not 0 <= zoom < 1:
            raise MvgenError(f"render.zoom={zoom}; use a value in [0, 1)")
        self.fps, self.width, self.height = fps, width, height
        self.frame_step, self.max_frames = frame_step, max_frames
        self.zoom, self.captions = zoom, captions
        self.preset, self.crf, self.seed = preset, crf, seed

    def camera_move(self, segment: dict[str, Any]) -> str:
        return CAMERA_MOVES[derive_seed(self.seed, "camera", segment["index"]) % len(CAMERA_MOVES)]

    def render(self, segment: dict[str, Any], image_path: Path, audio: np.ndarray, out_path: Path,
               prompt: str = "") -> dict[str, Any]:
        """audio: the song from the segment's start, covering every generated frame (48 kHz stereo)."""
        if segment["generate_frames"] > self.max_frames:
            raise MvgenError(f"{segment['name']} needs {segment['generate_frames']} frames, over render.max_frames="
                             f"{self.max_frames}; lower segment.max_seconds")
        generated = self.generate(segment, image_path)
        covered = segment["frames"]
        count = write_clip(out_path, _take(generated, covered), self.fps, self.width, self.height,
                           self.preset, self.crf, audio=audio[: int(round(covered / self.fps * 48000))])
        if count != covered:
            raise RuntimeError(f"{segment['name']}: renderer produced {count} of {covered} frames")
        return {"frames": count, "generated": segment["generate_frames"], "camera": self.camera_move(segment)}

    def generate(self, segment: dict[str, Any], image_path: Path) -> Iterator[np.ndarray]:
        """Yield ``segment["generate_frames"]`` RGB frames."""
        source = Image.open(image_path).convert("RGB").resize((self.width, self.height), Image.LANCZOS)
        move = self.camera_move(segment)
        total = segment["generate_frames"]
        captions = _CaptionPainter(segment, self.width, self.height) if self.captions else None
        for i in range(total):
            progress = _ease(i / max(total - 1, 1))
            frame = source.resize((self.width, self.height), Image.BILINEAR, box=self._box(move, progress))
            if captions is not None:
                captions.paint(frame, segment["start"] + i / self.fps)
            yield np.asarray(frame)

    def _box(self, move: str, p: float) -> tuple[float, float, float, float]:
        w, h, z = self.width, self.height, self.zoom
        scale = {"push_in": 1 + z * p, "pull_out": 1 + z * (1 - p)}.get(move, 1 + z)
        bw, bh = w / scale, h / scale
        slack_x, slack_y = w - bw, h - bh
        x = {"pan_right": slack_x * p, "pan_left": slack_x * (1 - p)}.get(move, slack_x / 2)
        y = slack_y * (1 - p) if move == "rise" else slack_y / 2
        return (x, y, x + bw, y + bh)


def _take(frames: Iterator[np.ndarray], count: int) -> Iterator[np.ndarray]:
    """Normalization: keep the first ``count`` of the generated frames (the covered window)."""
    for i, frame in enumerate(frames):
        if i >= count:
            return
        yield frame


class _CaptionPainter:
    """The current lyric line at the bottom of the frame; sung words white, the rest grey."""

    def __init__(self, segment: dict[str, Any], width: int, height: int) -> None:
        self.width, self.height = width, height
        self.font = font(max(12, height // 18), bold=True)
        self.lines: list[list[dict[str, Any]]] = []
        for word in segment.get("words", []):
            if not self.lines or self.lines[-1][0].get("line") != word.get("line"):
                self.lines.append([])
            self.lines[-1].append(word)
        self._cache: dict[tuple[int, int], Image.Image] = {}
        self.band = int(self.font.size * 2.0)

    def paint(self, frame: Image.Image, seconds: float) -> None:
        if not self.lines:
            return
        line = 0
        for i, words in enumerate(self.lines):
            if words[0]["start"] - 0.3 <= seconds:
                line = i
        lit = sum(1 for w in self.lines[line] if w["start"] <= seconds)
        key = (line, lit)
        if key not in self._cache:
            self._cache[key] = self._draw(self.lines[line], lit)
        frame.paste(self._cache[key], (0, self.height - self.band))

    def _draw(self, words: list[dict[str, Any]], lit: int) -> Image.Image:
        band = Image.new("RGB", (self.width, self.band), (8, 8, 12))
        draw = ImageDraw.Draw(band)
        texts = [w["word"] for w in words]
        space = draw.textlength(" ", font=self.font)
        widths = [draw.textlength(t, font=self.font) for t in texts]
        total = sum(widths) + space * (len(texts) - 1)
        scale = min(1.0, (self.width * 0.94) / max(total, 1))
        face = font(max(8, math.floor(self.font.size * scale)), bold=True) if scale < 1 else self.font
        if scale < 1:
            widths = [draw.textlength(t, font=face) for t in texts]
            space = draw.textlength(" ", font=face)
            total = sum(widths) + space * (len(texts) - 1)
        x = (self.width - total) / 2
        y = (self.band - face.size) / 2
        for i, (text, width) in enumerate(zip(texts, widths)):
            draw.text((x, y), text, font=face, fill=(255, 255, 255) if i < lit else (120, 120, 130))
            x += width + space
        return band


class LtxRenderer:
    """LTX-2.3 audio-conditioned image-to-video: ``LTX2DFRPipeline`` with the approved frame pinned at frame 0
    and the segment's audio encoded by the audio VAE and held clean (``freeze_audio=True``), so motion follows
    the song's phrasing and breaths. The clip's audio is the original song, never the vocoder's.

    Two-stage (``two_stage=true``): stage 1 at half resolution, the x2 latent upsampler, then a refine pass at
    full resolution on the distilled stage-2 schedule with the audio still frozen (Lightricks'
    A2VidPipelineTwoStage recipe). Memory switches: ``offload`` (model CPU offload), ``vae_tiling``.
    """

    def __init__(self, id_or_path: str, revision: str | None = None, dtype: str = "bfloat16", device: str = "cuda",
                 offload: bool = False, vae_tiling: bool = False, fps: int = 25, width: int = 1920,
                 height: int = 1088, frame_step: int = 8, max_frames: int = 257, two_stage: bool = False,
                 upsampler_id_or_path: str | None = None, upsampler_subfolder: str | None = None,
                 sigmas: list[float] | None = None, stage2_sigmas: list[float] | None = None,
                 image_crf: int | None = None, seed: int = 0, motion: str = "", clip_candidates: int = 1,
                 clip_selection: str = "most_motion", audio_noise: float = 0.0, max_sequence_length: int = 1024,
                 preset: str = "veryfast", crf: int = 18) -> None:
        grid = 64 if two_stage else 32
        if width % grid or height % grid:
            raise MvgenError(f"render size {width}x{height}: LTX needs multiples of {grid}"
                             f"{' for two-stage' if two_stage else ''}; e.g. 1920x1088")
        if fps <= 0:
            raise MvgenError(f"render.fps={fps}; use a positive frame rate such as 25")
        if two_stage and not upsampler_id_or_path:
            raise MvgenError("render.two_stage=true needs render.upsampler_id_or_path (the x2 latent upsampler)")
        if clip_selection not in ("most_motion", "least_motion", "first"):
            raise MvgenError(f"render.clip_selection={clip_selection!r}; use most_motion, least_motion or first")
        if clip_candidates < 1:
            raise MvgenError("render.clip_candidates must be at least 1")
        self.id_or_path, self.revision, self.dtype, self.device = id_or_path, revision, dtype, device
        self.offload, self.vae_tiling = offload, vae_tiling
        self.fps, self.width, self.height = fps, width, height
        self.frame_step, self.max_frames = frame_step, max_frames
        self.two_stage = two_stage
        self.upsampler_id_or_path, self.upsampler_subfolder = upsampler_id_or_path, upsampler_subfolder
        self.sigmas, self.stage2_sigmas = sigmas, stage2_sigmas
        self.image_crf, self.seed, self.motion = image_crf, seed, motion
        self.clip_candidates, self.clip_selection = clip_candidates, clip_selection
        self.audio_noise, self.max_sequence_length = audio_noise, max_sequence_length
        self.preset, self.crf = preset, crf

    def degrade(self) -> str | None:
        """The next memory-saving fallback after an out-of-memory error, or None when all are on."""
        if not self.offload:
            self.offload = True
            return "model CPU offload"
        if not self.vae_tiling:
            self.vae_tiling = True
            return "VAE tiling"
        return None

    # ------------------------------------------------------------------------------------- models
    def pipe(self) -> Any:
        from diffusers import LTX2DFRPipeline

        from mvgen.models import load_pipeline

        pipe = load_pipeline(LTX2DFRPipeline, self.id_or_path, self.revision, self.dtype, self.device, self.offload)
        if self.vae_tiling and hasattr(pipe.vae, "enable_tiling"):
            pipe.vae.enable_tiling()
        return pipe

    def upsampler(self) -> Any:
        from diffusers import LTX2LatentUpsamplePipeline
        from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

        from mvgen.models import cached, from_pretrained, torch_dtype

        def load() -> Any:
            model = from_pretrained(LTX2LatentUpsamplerModel, str(self.upsampler_id_or_path),
                                    subfolder=self.upsampler_subfolder, use_safetensors=True,
                                    torch_dtype=torch_dtype(self.dtype))
            pipe = LTX2LatentUpsamplePipeline(vae=self.pipe().vae, latent_upsampler=model).to(self.device)
            pipe.set_progress_bar_config(disable=True)
            return pipe

        return cached(("upsampler", self.upsampler_id_or_path, self.upsampler_subfolder, self.dtype, self.device),
                      load)

    # ------------------------------------------------------------------------------------- audio
    def audio_latents(self, audio: np.ndarray, rate: int = 48000) -> Any:
        """Waveform [n, 2] -> raw audio-VAE latents [1, C, T, mel]: log-mel (n_fft 1024, hop = the VAE's
        mel_hop_length, slaney, power 1), log(clamp 1e-5), then ``audio_vae.encode(...).latent_dist.mode()``."""
        import torch
        import torchaudio

        from mvgen.media.audio import resample

        vae = self.pipe().audio_vae
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
        with torch.no_grad():
            return vae.encode(mel.to(device=vae.device, dtype=vae.dtype)).latent_dist.mode()

    # ------------------------------------------------------------------------------------- render
    def render(self, segment: dict[str, Any], image_path: Path, audio: np.ndarray, out_path: Path,
               prompt: str = "") -> dict[str, Any]:
        """audio: the song from the segment's start, covering every generated frame (48 kHz stereo)."""
        if segment["generate_frames"] > self.max_frames:
            raise MvgenError(f"{segment['name']} needs {segment['generate_frames']} frames, over render.max_frames="
                             f"{self.max_frames}; lower segment.max_seconds")
        latents = self.audio_latents(audio)
        best, scores = None, []
        for k in range(self.clip_candidates):
            frames = self.generate(segment, image_path, latents, prompt, k)
            motion = float(np.abs(np.diff(frames.astype(np.int16), axis=0)).mean()) if len(frames) > 1 else 0.0
            scores.append(round(motion, 4))
            if best is None or self._better(motion, scores[best[0]]):
                best = (k, frames)
        assert best is not None
        chosen, frames = best
        covered = segment["frames"]
        clip_audio = audio[: int(round(covered / self.fps * 48000))]
        count = write_clip(out_path, iter(frames[:covered]), self.fps, self.width, self.height, self.preset, self.crf,
                           audio=clip_audio)
        if count != covered:
            raise RuntimeError(f"{segment['name']}: rendered {count} of {covered} frames")
        return {"frames": count, "generated": int(len(frames)), "candidate": chosen, "motion": scores,
                "frozen": scores[chosen] < 0.5, "audio_latents_shape": list(latents.shape)}

    def _better(self, motion: float, incumbent: float) -> bool:
        if self.clip_selection == "first":
            return False
        return motion > incumbent if self.clip_selection == "most_motion" else motion < incumbent

    def generate(self, segment: dict[str, Any], image_path: Path, audio_latents: Any, prompt: str,
                 candidate: int = 0) -> np.ndarray:
        """``segment["generate_frames"]`` RGB uint8 frames [F, H, W, 3] for one clip candidate."""
        import torch
        from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
        from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES
        from PIL import Image as PILImage

        pipe = self.pipe()
        image = PILImage.open(image_path).convert("RGB").resize((self.width, self.height), PILImage.LANCZOS)
        text = " ".join(f"{prompt} {self.motion}".split())
        seed = derive_seed(self.seed, "render", segment["index"], candidate)
        common = dict(prompt=text, num_frames=segment["generate_frames"], frame_rate=float(self.fps),
                      audio_latents=audio_latents, freeze_audio=True, generate_slots=False,
                      max_sequence_length=self.max_sequence_length)
        sigmas = list(self.sigmas or DISTILLED_SIGMA_VALUES)
        if not self.two_stage:
            result = pipe(**common, conditions=[LTX2VideoCondition(frames=image, index=0, strength=1.0,
                                                                   crf=self.image_crf)],
                          height=self.height, width=self.width, sigmas=sigmas, output_type="np",
                          generator=torch.Generator(device="cpu").manual_seed(seed))
        else:
            half = image.resize((self.width // 2, self.height // 2), PILImage.LANCZOS)
            stage1 = pipe(**common, conditions=[LTX2VideoCondition(frames=half, index=0, strength=1.0,
                                                                   crf=self.image_crf)],
                          height=self.height // 2, width=self.width // 2, sigmas=sigmas, output_type="latent",
                          generator=torch.Generator(device="cpu").manual_seed(seed))
            upsampled = self.upsampler()(latents=stage1.frames, height=self.height // 2, width=self.width // 2,
                                         num_frames=segment["generate_frames"], output_type="latent").frames
            stage2_sigmas = list(self.stage2_sigmas or STAGE_2_DISTILLED_SIGMA_VALUES)
            result = pipe(**common, conditions=[LTX2VideoCondition(frames=image, index=0, strength=1.0,
                                                                   crf=self.image_crf)],
                          latents=upsampled, height=self.height, width=self.width, sigmas=stage2_sigmas,
                          noise_scale=stage2_sigmas[0], output_type="np",
                          generator=torch.Generator(device="cpu").manual_seed(seed + 1))
        frames = np.asarray(result.frames[0], dtype=np.float32)
        if not np.isfinite(frames).all():
            raise RuntimeError(f"{segment['name']}: the video model produced NaN/inf pixels")
        if frames.shape[0] != segment["generate_frames"]:
            raise RuntimeError(f"{segment['name']}: the video model returned {frames.shape[0]} frames, "
                               f"expected {segment['generate_frames']}")
        frames = (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if frames.shape[1:3] != (self.height, self.width):
            frames = np.stack([np.asarray(PILImage.fromarray(f).resize((self.width, self.height), PILImage.BILINEAR))
                               for f in frames])
        return frames
