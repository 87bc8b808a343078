"""Stage 4b, review: approve one candidate frame per segment -> ``review.json``.

``AutoReview`` scores every candidate and approves the best. The score, stated in review.json:

    score = clip_weight * CLIP similarity(prompt, image)            (when clip_model is set)
            + contrast_weight * z(contrast) + colourfulness_weight * z(colourfulness)
            + sharpness_weight * z(sharpness)

``ManualReview``: a person approves candidates on the review page (``mvgen review RUN_DIR``); the run
stops after the frames until every segment has an approval.

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

from mvgen.stages.protocols import ReviewStage

SCORE_FORMULA = ("clip_weight*cosine(CLIP text, CLIP image) [if clip_model] + contrast_weight*z(luma std) + "
                 "colourfulness_weight*z(Hasler-Suesstrunk colourfulness) + sharpness_weight*z(mean |Laplacian| of luma); "
                 "z = z-score within the segment; blank frames last; ties to the lower seed")



def image_measures(path: Path) -> dict[str, float]:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    colourfulness = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    laplacian = (-4 * luma[1:-1, 1:-1] + luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:])
    return {"contrast": float(luma.std()), "colourfulness": colourfulness,
            "sharpness": float(np.abs(laplacian).mean()), "blank": bool(luma.std() < 2.0)}


class AutoReview(ReviewStage):
    method = "auto"

    def __init__(self, contrast_weight: float = 1.0, colourfulness_weight: float = 1.0,
                 sharpness_weight: float = 1.0, clip_model: str | None = None, clip_weight: float = 3.0,
                 device: str = "cpu") -> None:
        self.weights = {"contrast": contrast_weight, "colourfulness": colourfulness_weight,
                        "sharpness": sharpness_weight}
        self.clip_model, self.clip_weight, self.device = clip_model, clip_weight, device

    def review(self, candidates: list[dict[str, Any]]) -> dict[str, Any]:
        """candidates: [{"candidate": k, "seed": s, "path": Path, "prompt": str}] of one segment."""
        measures = [image_measures(c["path"]) for c in candidates]
        scores = np.zeros(len(candidates))
        for name, weight in self.weights.items():
            values = np.array([m[name] for m in measures])
            spread = values.std()
            if spread > 1e-9:
                scores += weight * (values - values.mean()) / spread
        if self.clip_model:
            similarity = self._clip_similarity(candidates)
            scores += self.clip_weight * similarity
            for m, value in zip(measures, similarity):
                m["clip"] = float(value)
        rows = []
        for c, m, s in zip(candidates, measures, scores):
            rows.append({"candidate": c["candidate"], "seed": c["seed"], "score": round(float(s), 4),
                         **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}})
        best = min(rows, key=lambda r: (r["blank"], -r["score"], r["seed"]))
        return {"approved": best["candidate"], "method": "auto", "candidates": rows}

    def _clip_similarity(self, candidates: list[dict[str, Any]]) -> np.ndarray:
        import torch
        from transformers import CLIPModel, CLIPProcessor

        from mvgen.models import cached, from_pretrained

        def load() -> tuple[Any, Any]:
            model = from_pretrained(CLIPModel, self.clip_model, use_safetensors=True)
            return model.to(self.device).eval(), from_pretrained(CLIPProcessor, self.clip_model)

        model, processor = cached(("clip", self.clip_model, self.device), load)
        images = [Image.open(c["path"]).convert("RGB") for c in candidates]
        texts = [c.get("prompt") or "" for c in candidates]
        inputs = processor(text=texts, images=images, return_tensors="pt", padding=True, truncation=True)
        with torch.no_grad():
            image_features = model.get_image_features(pixel_values=inputs["pixel_values"].to(self.device))
            text_features = model.get_text_features(input_ids=inputs["input_ids"].to(self.device),
                                                    attention_mask=inputs["attention_mask"].to(self.device))
        image_features = torch.nn.functional.normalize(_tensor(image_features), dim=-1)
        text_features = torch.nn.functional.normalize(_tensor(text_features), dim=-1)
        return (image_features * text_features).sum(dim=-1).float().cpu().numpy()


def _tensor(features: Any) -> Any:
    """transformers 5 may return a model output instead of a tensor from get_*_features."""
    return features if hasattr(features, "dim") else features.pooler_output


class ManualReview(ReviewStage):
    """Approvals come from a person, through the review page; see mvgen/review_server.py."""

    manual = True

    def __init__(self, host: str = "127.0.0.1", port: int = 8765) -> None:
        self.host, self.port = host, port
