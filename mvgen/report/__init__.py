"""Pictures and pages a person looks at: timeline plot, contact sheet, sweep comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


def run_pictures(song: dict[str, Any], annotation: dict[str, Any], plan: dict[str, Any],
                 candidates: dict[str, list[dict[str, Any]]], review: dict[str, Any],
                 title: str) -> list[tuple[str, dict[str, Any], dict[str, Any], Callable[[Path], Any]]]:
    """A run's pictures as store steps (name, config, inputs, build): ``timeline.png`` and ``contact_sheet.png``.
    ``song``, ``annotation`` and ``plan`` are the coordinator's {"data"/"wav", "hash"} records; ``review``
    is review.json's content."""
    from mvgen.report.contact_sheet import contact_sheet, sheet_rows
    from mvgen.report.timeline import plot_timeline

    return [
        ("timeline", {"title": title},
         {"song.wav": song["hash"], "annotation": annotation["hash"], "plan": plan["hash"]},
         lambda tmp: plot_timeline(song["wav"], annotation["data"], plan["data"], tmp / "timeline.png", title)),
        ("contact_sheet", {},
         {"frames": {n: [c["hash"] for c in r] for n, r in candidates.items()},
          "review": {n: r["approved"] for n, r in review["segments"].items()}, "plan": plan["hash"]},
         lambda tmp: contact_sheet(sheet_rows(plan["data"]["segments"], candidates, review),
                                   tmp / "contact_sheet.png")),
    ]
