"""A TrueType font that every install has: the DejaVu Sans shipped inside matplotlib's package data."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from PIL import ImageFont


@functools.lru_cache(maxsize=None)
def _font_path(bold: bool) -> str:
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("matplotlib is not installed; run scripts/setup.sh")
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return str(Path(list(spec.submodule_search_locations)[0]) / "mpl-data" / "fonts" / "ttf" / name)


@functools.lru_cache(maxsize=64)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(_font_path(bold), max(6, int(size)))
