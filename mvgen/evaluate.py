"""Alignment accuracy: line-onset errors of an annotation against ground truth.

Ground truth, matched to the annotation's lyric lines in order:
- the demo song's ``truth.json`` ({"lines": [{"text", "start", ...}]});
- a JamendoLyrics-style CSV with a ``start_time,end_time,lyrics_line`` header (one row per line).

    mvgen eval RUN_DIR_OR_ANNOTATION [TRUTH]     (TRUTH defaults to RUN_DIR/truth.json)
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

from mvgen.errors import MvgenError
from mvgen.util import read_json


def load_truth(path: Path) -> list[dict[str, Any]]:
    """Truth lines [{"start", "text"}] from truth.json or a JamendoLyrics CSV."""
    if not path.is_file():
        raise MvgenError(f"ground truth not found: {path}")
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "start_time" not in reader.fieldnames:
                raise MvgenError(f"{path} needs a header with start_time,end_time,lyrics_line")
            return [{"start": float(row["start_time"]), "end": float(row.get("end_time") or row["start_time"]),
                     "text": row.get("lyrics_line", "")} for row in reader]
    data = read_json(path)
    if "lines" not in data:
        raise MvgenError(f"{path} is not a truth.json (no 'lines')")
    return data["lines"]


def line_onset_report(annotation: dict[str, Any], truth_lines: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
    """Mean/median/max absolute line-onset error and the share of lines within 0.3 s and 0.5 s."""
    lines = truth_lines["lines"] if isinstance(truth_lines, dict) else truth_lines
    aligned = sorted((p["line"], p["start"]) for p in annotation["phrases"] if p["kind"] == "lyric")
    if len(aligned) != len(lines):
        raise MvgenError(f"the annotation has {len(aligned)} lyric lines, the truth {len(lines)}; "
                         "they must describe the same lyrics")
    errors = [abs(start - line["start"]) for (_, start), line in zip(aligned, lines)]
    if not errors:
        raise MvgenError("no lyric lines to compare")
    return {
        "lines": len(errors),
        "mae": round(statistics.fmean(errors), 4),
        "median": round(statistics.median(errors), 4),
        "max": round(max(errors), 4),
        "within_0.3": round(sum(e <= 0.3 for e in errors) / len(errors), 4),
        "within_0.5": round(sum(e <= 0.5 for e in errors) / len(errors), 4),
        "errors": [round(e, 4) for e in errors],
    }


def evaluate_cli(argv: list[str]) -> dict[str, Any]:
    if not argv or len(argv) > 2:
        raise MvgenError("usage: mvgen eval RUN_DIR_OR_ANNOTATION_JSON [TRUTH_JSON_OR_CSV]")
    target = Path(argv[0])
    annotation_path = target / "annotation.json" if target.is_dir() else target
    if not annotation_path.is_file():
        raise MvgenError(f"no annotation at {annotation_path}")
    truth_path = Path(argv[1]) if len(argv) == 2 else annotation_path.parent / "truth.json"
    report = line_onset_report(read_json(annotation_path), load_truth(truth_path))
    print(f"line onsets: {report['lines']} lines, MAE {report['mae']:.3f} s, median {report['median']:.3f} s, "
          f"max {report['max']:.3f} s, within 0.3 s {100 * report['within_0.3']:.0f} %, "
          f"within 0.5 s {100 * report['within_0.5']:.0f} %")
    return report
