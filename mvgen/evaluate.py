"""Alignment accuracy: line-onset errors of an annotation against ground truth.

Truth is the demo song's ``truth.json`` ({"lines": [{"text", "start", ...}]}), in lyric-line order.
"""

from __future__ import annotations

import statistics
from typing import Any


def line_onset_report(annotation: dict[str, Any], truth: dict[str, Any]) -> dict[str, Any]:
    aligned = {p["line"]: p["start"] for p in annotation["phrases"] if p["kind"] == "lyric"}
    errors = [abs(aligned[i] - line["start"]) for i, line in enumerate(truth["lines"]) if i in aligned]
    if not errors:
        raise ValueError("no lyric lines to compare")
    return {
        "lines": len(errors),
        "mae": statistics.fmean(errors),
        "median": statistics.median(errors),
        "max": max(errors),
        "within_0.3": sum(e <= 0.3 for e in errors) / len(errors),
        "within_0.5": sum(e <= 0.5 for e in errors) / len(errors),
    }
