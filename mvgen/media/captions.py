"""Lyric captions painted on frames: the current line at the bottom, its sung words lit as they are sung.
Used by the animatic and by the burned-in lyric master."""

from __future__ import annotations

import math
from typing import Any

from PIL import Image, ImageDraw

from mvgen.media.fonts import font


class CaptionPainter:
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
