"""Stage 4b, review: approve one candidate frame per segment -> ``review.json``.

``AutoReview`` scores every candidate and approves the best. The score, stated in review.json:

    score = contrast_weight * z(contrast) + colourfulness_weight * z(colourfulness)
            + sharpness_weight * z(sharpness)

with z() the z-score among the segment's candidates, contrast the standard deviation of luma,
colourfulness Hasler and Suesstrunk's metric, sharpness the mean absolute Laplacian of luma.
A blank frame (luma spread under 2/255) is never approved while another candidate exists.
Ties go to the candidate with the lower seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SCORE_FORMULA = ("contrast_weight*z(luma std) + colourfulness_weight*z(Hasler-Suesstrunk colourfulness) + "
                 "sharpness_weight*z(mean |Laplacian| of luma); z = z-score within the segment; blank frames last; "
                 "ties to the lower seed")


def image_measures(path: Path) -> dict[str, float]:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    colourfulness = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    laplacian = (-4 * luma[1:-1, 1:-1] + luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:])
    return {"contrast": float(luma.std()), "colourfulness": colourfulness,
            "sharpness": float(np.abs(laplacian).mean()), "blank": bool(luma.std() < 2.0)}


class AutoReview:
    def __init__(self, contrast_weight: float = 1.0, colourfulness_weight: float = 1.0,
                 sharpness_weight: float = 1.0) -> None:
        self.weights = {"contrast": contrast_weight, "colourfulness": colourfulness_weight,
                        "sharpness": sharpness_weight}

    def review(self, candidates: list[dict[str, Any]]) -> dict[str, Any]:
        """candidates: [{"candidate": k, "seed": s, "path": Path}] of one segment -> its review record."""
        measures = [image_measures(c["path"]) for c in candidates]
        scores = np.zeros(len(candidates))
        for name, weight in self.weights.items():
            values = np.array([m[name] for m in measures])
            spread = values.std()
            if spread > 1e-9:
                scores += weight * (values - values.mean()) / spread
        rows = []
        for c, m, s in zip(candidates, measures, scores):
            rows.append({"candidate": c["candidate"], "seed": c["seed"], "score": round(float(s), 4),
                         **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}})
        best = min(rows, key=lambda r: (r["blank"], -r["score"], r["seed"]))
        return {"approved": best["candidate"], "method": "auto", "candidates": rows}
