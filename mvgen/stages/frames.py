"""Stage 4a, frames: candidate start frames per segment -> ``frames/<segment>/cand_<k>.png``.

``StoryboardFrames`` (CPU preview) draws a storyboard card per candidate: the shot's composition
(subject size from the shot type, placed on a third), the song's palette, the location's skyline and
lights, a shot label and the lyric. Candidates differ in palette, placement and lighting; everything
is a pure function of the candidate's seed.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

from mvgen.errors import MvgenError
from mvgen.media.fonts import font

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


class StoryboardFrames:
    def __init__(self, candidates: int = 4, width: int = 960, height: int = 544, seed: int = 0) -> None:
        if candidates < 1:
            raise MvgenError(f"frames.candidates={candidates}; ask for at least 1")
        if width < 64 or height < 64:
            raise MvgenError(f"frame size {width}x{height} is too small; use at least 64x64")
        self.candidates = candidates
        self.width, self.height = width, height
        self.seed = seed

    def generate(self, song: dict[str, Any], segment: dict[str, Any], prompts: list[dict[str, Any]],
                 out_dir: Path) -> None:
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
