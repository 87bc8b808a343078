"""``contact_sheet.png``: every segment's candidate frames in a grid, the approved one outlined."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from mvgen.media.fonts import font

APPROVED = (46, 204, 113)


def contact_sheet(rows: list[dict[str, Any]], out_path: Path, thumb_width: int = 240) -> None:
    """rows: [{"label": str, "paths": [Path, ...], "approved": index or None}] -> one PNG."""
    if not rows:
        raise ValueError("no segments for a contact sheet")
    with Image.open(rows[0]["paths"][0]) as first:
        aspect = first.height / first.width
    thumb_height = int(thumb_width * aspect)
    columns = max(len(r["paths"]) for r in rows)
    label_width, pad = 260, 6
    sheet = Image.new("RGB", (label_width + columns * (thumb_width + pad) + pad,
                              len(rows) * (thumb_height + pad) + pad), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    text_font = font(13)
    for r, row in enumerate(rows):
        y = pad + r * (thumb_height + pad)
        for line, text in enumerate(row["label"].splitlines()[:6]):
            draw.text((pad, y + 4 + line * 17), text[:34], font=text_font, fill=(230, 230, 230))
        for c, path in enumerate(row["paths"]):
            x = label_width + pad + c * (thumb_width + pad)
            with Image.open(path) as image:
                sheet.paste(image.convert("RGB").resize((thumb_width, thumb_height), Image.BILINEAR), (x, y))
            if c == row.get("approved"):
                draw.rectangle([x - 3, y - 3, x + thumb_width + 2, y + thumb_height + 2], outline=APPROVED, width=4)
                draw.text((x + 6, y + 4), "APPROVED", font=font(13, bold=True), fill=APPROVED,
                          stroke_width=2, stroke_fill=(0, 0, 0))
    sheet.save(out_path)


def sheet_rows(segments: list[dict[str, Any]], candidates: dict[str, list[dict[str, Any]]],
               review: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per segment that has frames: its label, its candidates' paths and the approved one."""
    return [{"label": f"{s['name']}  {s['kind']}\n{s['start']:.2f}-{s['end']:.2f} s"
                      f"\n{s['section']} {s['section_index']}"
                      f"{'  ' + ' & '.join(s['performers']) if s.get('performers') else ''}\n{s['text'][:60]}",
             "paths": [c["path"] for c in candidates[s["name"]]],
             "approved": review["segments"].get(s["name"], {}).get("approved")}
            for s in segments if s["name"] in candidates]
