"""Stage 4a, frames: candidate start frames per segment -> ``frames/<segment>/cand_<k>.png``.

``DiffusersFrames`` runs any diffusers text-to-image pipeline (presets in conf/frames/).

``StoryboardFrames`` (CPU preview) draws a storyboard card per candidate: the shot's composition
(subject size from the shot type, placed on a third), the song's palette, the location's skyline and
lights, a shot label and the lyric. Candidates differ in palette, placement and lighting; everything
is a pure function of the candidate's seed.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mvgen.errors import MvgenError
from mvgen.media.fonts import font
from mvgen.stages.protocols import FramesStage

log = logging.getLogger("mvgen")

DEFAULT_PALETTE = ["#1d2440", "#e94f37", "#f6c85f", "#3f88c5", "#f2f2f2"]

# Subject head height as a fraction of frame height, by shot type keyword.
_SHOT_SCALE = [("extreme close", 0.9), ("close", 0.62), ("medium close", 0.42), ("medium", 0.3),
               ("wide", 0.1), ("establishing", 0.08), ("aerial", 0.06)]


def _rgb(colour: str) -> tuple[int, int, int]:
    value = colour.lstrip("#")
    if len(value) != 6:
        raise MvgenError(f"palette colour {colour!r} is not #rrggbb; fix song.visual.palette")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def _subject_scale(shot: str) -> float:
    shot = shot.lower()
    for keyword, scale in _SHOT_SCALE:
        if keyword in shot:
            return scale
    return 0.3


class StoryboardFrames(FramesStage):
    def __init__(self, candidates: int = 4, width: int = 960, height: int = 544, seed: int = 0) -> None:
        if candidates < 1:
            raise MvgenError(f"frames.candidates={candidates}; ask for at least 1")
        if width < 64 or height < 64:
            raise MvgenError(f"frame size {width}x{height} is too small; use at least 64x64")
        self.candidates = candidates
        self.width, self.height = width, height
        self.seed = seed

    def generate(self, song: dict[str, Any], segment: dict[str, Any], prompts: list[dict[str, Any]],
                 out_dir: Path, reference: Path | None = None) -> None:
        """Write cand_<k>.png per prompt. Cards take no identity reference; the argument is accepted and unused."""
        palette = [_rgb(c) for c in ((song.get("visual") or {}).get("palette") or DEFAULT_PALETTE)]
        for spec in prompts:
            image = self.card(segment, spec, palette)
            image.save(out_dir / f"cand_{spec['candidate']}.png", optimize=False)

    def card(self, segment: dict[str, Any], spec: dict[str, Any], palette: list[tuple[int, int, int]]) -> Image.Image:
        rng = random.Random(spec["seed"])
        w, h = self.width, self.height
        dark = min(palette, key=sum)
        accents = sorted(palette, key=sum)[1:] or [(200, 200, 200)]
        sky_top = _mix(dark, (0, 0, 0), 0.4)
        sky_low = _mix(dark, rng.choice(accents), 0.35 + 0.3 * rng.random())
        image = Image.new("RGB", (w, h))
        draw = ImageDraw.Draw(image)
        horizon = int(h * (0.55 + 0.2 * rng.random()))
        for y in range(h):
            t = min(1.0, y / max(horizon, 1))
            draw.line([(0, y), (w, y)], fill=_mix(sky_top, sky_low, t) if y < horizon else _mix(sky_low, dark, 0.7))

        # Lights: soft glows in accent colours (neon signs, windows, street lamps).
        glow = Image.new("RGB", (w, h))
        glow_draw = ImageDraw.Draw(glow)
        for _ in range(rng.randint(6, 14)):
            r = rng.uniform(0.01, 0.05) * w
            x, y = rng.uniform(0, w), rng.uniform(0.15 * h, horizon)
            glow_draw.ellipse([x - r, y - r, x + r, y + r], fill=rng.choice(accents))
        image = Image.blend(image, Image.composite(glow, image, glow.convert("L")), 0.55)
        image = image.filter(ImageFilter.GaussianBlur(radius=max(1, w // 240)))
        draw = ImageDraw.Draw(image)

        # Skyline: blocks along the horizon.
        x = 0
        while x < w:
            bw = rng.uniform(0.04, 0.12) * w
            bh = rng.uniform(0.05, 0.3) * h
            draw.rectangle([x, horizon - bh, x + bw, horizon], fill=_mix(dark, (0, 0, 0), 0.3))
            x += bw + rng.uniform(0, 0.02) * w

        if spec["kind"] == "lyric":
            self._subject(draw, rng, spec["shot"], accents, dark)
        self._labels(draw, segment, spec)
        return image

    def _subject(self, draw: ImageDraw.ImageDraw, rng: random.Random, shot: str,
                 accents: list[tuple[int, int, int]], dark: tuple[int, int, int]) -> None:
        w, h = self.width, self.height
        head = _subject_scale(shot) * h
        cx = w * rng.choice([1 / 3, 2 / 3, 0.5]) + rng.uniform(-0.03, 0.03) * w
        cy = h * 0.42 if head < 0.5 * h else h * 0.5
        rim = rng.choice(accents)
        body = _mix(dark, (0, 0, 0), 0.55)
        shoulders = [cx - 1.5 * head, cy + 0.55 * head, cx + 1.5 * head, cy + 3.2 * head]
        draw.ellipse([s + (3 if i % 2 == 0 else -3) for i, s in enumerate(shoulders)], fill=rim)
        draw.ellipse(shoulders, fill=body)
        draw.ellipse([cx - 0.42 * head - 3, cy - 0.5 * head - 3, cx + 0.42 * head + 3, cy + 0.5 * head + 3], fill=rim)
        draw.ellipse([cx - 0.42 * head, cy - 0.5 * head, cx + 0.42 * head, cy + 0.5 * head], fill=body)
        mouth = max(2, head * 0.06)  # the mouth must read: the clip is lip-synced
        draw.ellipse([cx - 1.6 * mouth, cy + 0.22 * head - mouth, cx + 1.6 * mouth, cy + 0.22 * head + mouth],
                     fill=_mix(rim, (0, 0, 0), 0.4))

    def _labels(self, draw: ImageDraw.ImageDraw, segment: dict[str, Any], spec: dict[str, Any]) -> None:
        w, h = self.width, self.height
        small, large = font(max(10, h // 30)), font(max(12, h // 20), bold=True)
        margin = w // 40
        label = (f"{segment['name'].upper()}  ·  {spec['shot'].upper()}  ·  {segment['section']} "
                 f"{segment['section_index']}  ·  {segment['start']:.2f}-{segment['end']:.2f} s  ·  cand {spec['candidate']}")
        draw.rectangle([0, 0, w, margin + small.size + margin // 2], fill=(0, 0, 0))
        draw.text((margin, margin // 2), label, font=small, fill=(235, 235, 235))
        # The prompt this card stands in for, so a storyboard change reads on the frame itself.
        prompt = spec["prompt"]
        while draw.textlength(prompt, font=small) > w - 2 * margin and len(prompt) > 8:
            prompt = prompt[: int(len(prompt) * 0.9)]
        if prompt != spec["prompt"]:
            prompt = prompt.rstrip(" ,") + "\u2026"
        draw.text((margin, margin + small.size + margin // 2 + 2), prompt, font=small, fill=(200, 200, 200),
                  stroke_width=1, stroke_fill=(0, 0, 0))
        if segment["text"]:
            text = f"\u201c{segment['text']}\u201d"
            while draw.textlength(text, font=large) > w - 2 * margin and len(text) > 8:
                text = text[:-5] + "\u2026\u201d"
            draw.text((margin, h - margin - large.size), text, font=large, fill=(250, 250, 250),
                      stroke_width=2, stroke_fill=(0, 0, 0))
        # Title-safe guides (90 % of the frame), as on a real storyboard.
        draw.rectangle([w * 0.05, h * 0.05, w * 0.95, h * 0.95], outline=(255, 255, 255, 60), width=1)


# Sampler names for `frames.scheduler`, mapped to diffusers scheduler classes ("default" keeps the pipeline's).
SCHEDULERS = {
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp": "DPMSolverMultistepScheduler",
    "dpmpp_sde": "DPMSolverSDEScheduler",
    "unipc": "UniPCMultistepScheduler",
    "ddim": "DDIMScheduler",
    "flow_euler": "FlowMatchEulerDiscreteScheduler",
    "flow_heun": "FlowMatchHeunDiscreteScheduler",
}
REFERENCE_MODES = ("none", "given", "generate")
# Pipelines whose ``image`` is one list of references shared by every prompt of the batch (FLUX.2 packs them
# into one conditioning sequence repeated per prompt): they get the reference once, not once per prompt.
SHARED_REFERENCE_PIPELINES = ("Flux2Pipeline", "Flux2KleinPipeline", "Flux2KleinKVPipeline")


class DiffusersFrames(FramesStage):
    """Any diffusers text-to-image pipeline, by class name and ``id_or_path`` (hub id or local folder).

    Candidates are generated in batches of ``batch_size``, each with its own generator seeded from
    (base seed, segment, candidate), so any single frame can be regenerated alone. With an identity
    reference (``reference=given|generate``), pipelines that take an ``image`` input (FLUX.2 klein,
    Qwen-Image-Edit-Plus) see the same performer in every segment.
    """

    def __init__(self, pipeline: str, id_or_path: str, revision: str | None = None, dtype: str = "bfloat16",
                 device: str = "cuda", offload: bool = False, steps: int = 8, guidance: float = 1.0,
                 guidance_arg: str = "guidance_scale", width: int = 1920, height: int = 1088, candidates: int = 4,
                 batch_size: int = 2, seed: int = 0, scheduler: str = "default",
                 scheduler_options: dict[str, Any] | None = None, negative_prompt: bool = True,
                 reference: str = "none", reference_image: str | None = None,
                 reference_prompt: str = "", extra: dict[str, Any] | None = None) -> None:
        if candidates < 1 or batch_size < 1 or steps < 1:
            raise MvgenError("frames.candidates, frames.batch_size and frames.steps must be at least 1")
        if scheduler != "default" and scheduler not in SCHEDULERS:
            raise MvgenError(f"frames.scheduler={scheduler!r}; use default or one of {', '.join(SCHEDULERS)}")
        if reference not in REFERENCE_MODES:
            raise MvgenError(f"frames.reference={reference!r}; use one of {', '.join(REFERENCE_MODES)}")
        if reference == "given" and not (reference_image and Path(reference_image).expanduser().is_file()):
            raise MvgenError(f"frames.reference=given needs frames.reference_image to be an image file; "
                             f"got {reference_image!r}")
        if width % 16 or height % 16:
            raise MvgenError(f"frame size {width}x{height}: use multiples of 16")
        self.pipeline_name, self.id_or_path, self.revision = pipeline, id_or_path, revision
        self.dtype, self.device, self.offload = dtype, device, offload
        self.steps, self.guidance, self.guidance_arg = steps, guidance, guidance_arg
        self.width, self.height = width, height
        self.candidates, self.batch_size, self.seed = candidates, batch_size, seed
        self.scheduler, self.scheduler_options = scheduler, dict(scheduler_options or {})
        self.negative_prompt = negative_prompt
        self.reference, self.reference_image, self.reference_prompt = reference, reference_image, reference_prompt
        self.extra = dict(extra or {})

    def reference_mode(self) -> str:
        return self.reference

    def reference_image_path(self) -> Path | None:
        return Path(self.reference_image).expanduser() if self.reference_image else None

    def degrade(self, exc: BaseException | None = None) -> str | None:
        """The next memory-saving fallback after an out-of-memory error, or None when all are on."""
        if self.batch_size > 1:
            self.batch_size = 1
            return "batch size 1"
        if not self.offload:
            self.offload = True
            return "model CPU offload"
        return None

    def _pipe(self) -> Any:
        import diffusers

        from mvgen.models import load_pipeline

        cls = getattr(diffusers, self.pipeline_name, None)
        if cls is None or not isinstance(cls, type) or not issubclass(cls, diffusers.DiffusionPipeline):
            raise MvgenError(f"frames.pipeline={self.pipeline_name!r} is not a diffusers pipeline class "
                             "(e.g. ZImagePipeline, Flux2KleinPipeline, QwenImagePipeline, StableDiffusionXLPipeline)")
        pipe = load_pipeline(cls, self.id_or_path, self.revision, self.dtype, self.device, self.offload)
        if self.scheduler != "default":
            scheduler_cls = getattr(diffusers, SCHEDULERS[self.scheduler])
            pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, **self.scheduler_options)
        return pipe

    def make_reference(self, song: dict[str, Any], out_path: Path, character: str | None = None) -> None:
        """Generate an identity reference once (stored and reused by every segment that character sings)."""
        visual = song.get("visual") or {}
        character = character or (visual.get("characters") or ["a singer"])[0]
        prompt = (self.reference_prompt or "character reference portrait of {character}, front view, neutral "
                  "background, even light, {era}").format(character=character, era=visual.get("era", ""))
        image = self._run([{"prompt": " ".join(prompt.split()), "negative": "", "seed": self.seed}], None)[0]
        image.save(out_path)

    def generate(self, song: dict[str, Any], segment: dict[str, Any], prompts: list[dict[str, Any]],
                 out_dir: Path, reference: Path | None = None) -> None:
        from PIL import Image as PILImage

        reference_image = PILImage.open(reference).convert("RGB") if reference else None
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start:start + self.batch_size]
            for spec, image in zip(batch, self._run(batch, reference_image)):
                if image.size != (self.width, self.height):
                    image = image.resize((self.width, self.height), PILImage.LANCZOS)
                image.save(out_dir / f"cand_{spec['candidate']}.png")

    def _run(self, batch: list[dict[str, Any]], reference: Any) -> list[Any]:
        import inspect

        import torch

        pipe = self._pipe()
        parameters = inspect.signature(pipe.__call__).parameters
        kwargs: dict[str, Any] = {
            "prompt": [spec["prompt"] for spec in batch],
            "height": self.height, "width": self.width, "num_inference_steps": self.steps,
            "generator": [torch.Generator(device="cpu").manual_seed(spec["seed"]) for spec in batch],
            self.guidance_arg: self.guidance,
        }
        if self.negative_prompt and "negative_prompt" in parameters and any(spec.get("negative") for spec in batch):
            kwargs["negative_prompt"] = [spec.get("negative") or "" for spec in batch]
        if reference is not None:
            if "image" in parameters and type(pipe).__name__ in SHARED_REFERENCE_PIPELINES:
                kwargs["image"] = [reference]
            elif "image" in parameters:
                kwargs["image"] = [reference] * len(batch) if len(batch) > 1 else reference
            else:
                log.warning("%s takes no reference image; the identity reference is not used", self.pipeline_name)
        images = pipe(**kwargs, **self.extra).images
        if len(images) != len(batch):
            raise RuntimeError(f"{self.pipeline_name} returned {len(images)} images for {len(batch)} prompts")
        for image in images:
            if not np.isfinite(np.asarray(image, dtype=np.float32)).all():
                raise RuntimeError("the frame model produced non-finite pixels")
        return images


def build_frames(frames: FramesStage, song: dict[str, Any], segment: dict[str, Any], prompts: list[dict[str, Any]],
                 reference: Path | None, tmp: Path) -> dict[str, Any]:
    """One segment's candidate frames and prompts.json (a top-level function: picklable for fan-out workers)."""
    from mvgen.util import write_json
    from mvgen.validate import check_image

    frames.generate(song, segment, prompts, tmp, reference=reference)
    flags = {spec["candidate"]: check_image(tmp / f"cand_{spec['candidate']}.png", (frames.width, frames.height))
             for spec in prompts}
    write_json(tmp / "prompts.json", {"segment": segment["name"], "candidates": prompts})
    return {"candidates": len(prompts), "flags": {k: v for k, v in flags.items() if v}}
