"""Sweep comparison: ``compare.json`` + ``compare.html`` in a multirun's sweep directory.

One row per job: its overrides, status, stage wall times, cache hits/misses, the master's duration,
and a thumbnail linking to its master. Written by a Hydra callback when a sweep ends, and by
``mvgen compare SWEEP_DIR`` at any time. When a sweep ends, each failed job is also one line on stderr
(its number, the overrides that set it apart, the cause), then a summary.
"""

from __future__ import annotations

import html
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mvgen.util import read_json, write_json

COMPARE_JSON, COMPARE_HTML = "compare.json", "compare.html"
JOB_ERROR = "job_error.txt"  # a failed sweep job's one line (mvgen.app._task)
FINISHED = ("ok", "gaps", "awaiting_review")
SWEEP: dict[str, Any] = {}  # this process's sweep: its folder, and how many jobs failed


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = []
    job_dirs = sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()),
                      key=lambda p: (len(p.name), p.name))
    for job_dir in job_dirs:
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        row: dict[str, Any] = {"job": job_dir.name, "dir": job_dir.name, "overrides": overrides or []}
        manifest_file = job_dir / "manifest.json"
        if manifest_file.is_file():
            manifest = read_json(manifest_file)
            row.update({
                "status": manifest.get("status", "unknown"),
                "wall_seconds": manifest.get("wall_seconds"),
                "stages": {name: {k: s.get(k) for k in ("seconds", "hits", "misses")}
                           for name, s in manifest.get("stages", {}).items()},
                "hits": sum(s.get("hits", 0) for s in manifest.get("stages", {}).values()),
                "misses": sum(s.get("misses", 0) for s in manifest.get("stages", {}).values()),
                "duration": (manifest.get("master") or {}).get("duration"),
                "config_hash": manifest.get("config_hash"),
                "error": manifest.get("error"),
            })
        else:
            row["status"] = "no manifest (job did not finish)"
        if (job_dir / JOB_ERROR).is_file():
            row["status"] = row["status"] if row["status"].startswith("failed") else "failed"
            row["error"] = (job_dir / JOB_ERROR).read_text(encoding="utf-8").strip()
        for name in ("master.mp4", "thumb.jpg", "timeline.png", "contact_sheet.png"):
            if (job_dir / name).is_file():
                row[name.split(".")[0]] = f"{job_dir.name}/{name}"
        rows.append(row)
    return rows


def write_compare(sweep_dir: str | os.PathLike[str]) -> Path:
    sweep = Path(sweep_dir)
    rows = collect(sweep)
    write_json(sweep / COMPARE_JSON, {"version": 1, "sweep_dir": str(sweep), "jobs": rows})
    (sweep / COMPARE_HTML).write_text(render_html(rows, sweep.name), encoding="utf-8")
    return sweep / COMPARE_HTML


def render_html(rows: list[dict[str, Any]], title: str) -> str:
    e = html.escape
    stage_names: list[str] = []
    for row in rows:
        for name in row.get("stages", {}):
            if name not in stage_names:
                stage_names.append(name)
    head = "".join(f"<th>{e(n)}<br><small>s · hit/miss</small></th>" for n in stage_names)
    varying = _varying_overrides(rows)
    body = []
    for row in rows:
        thumb = (f'<a href="{e(row["master"])}"><img src="{e(row["thumb"])}" alt="master of job {e(row["job"])}"></a>'
                 if row.get("thumb") and row.get("master") else "—")
        cells = []
        for name in stage_names:
            s = row.get("stages", {}).get(name)
            cells.append(f"<td>{s['seconds']:.2f}<br><small>{s['hits']}/{s['misses']}</small></td>" if s else "<td>—</td>")
        swept = "<br>".join(f"<b>{e(str(o))}</b>" for o in row["overrides"] if str(o) in varying) or "—"
        overrides = "<br>".join(e(str(o)) for o in row["overrides"] if str(o) not in varying) or "<i>defaults</i>"
        duration = f"{row['duration']:.3f} s" if isinstance(row.get("duration"), (int, float)) else "—"
        wall = f"{row['wall_seconds']:.2f} s" if isinstance(row.get("wall_seconds"), (int, float)) else "—"
        links = " ".join(f'<a href="{e(row[k])}">{k.replace("_", " ")}</a>'
                         for k in ("timeline", "contact_sheet") if row.get(k))
        body.append(f"<tr><td>{e(row['job'])}</td><td class=o>{swept}</td><td>{thumb}</td>"
                    f"<td>{e(str(row.get('status')))}</td><td>{wall}</td><td>{row.get('hits', '—')}/{row.get('misses', '—')}</td>"
                    f"<td>{duration}</td>{''.join(cells)}<td>{links}</td><td class=o><small>{overrides}</small></td></tr>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mvgen sweep {e(title)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; background: #111; color: #eee; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #333; padding: 6px 8px; vertical-align: top; }}
th {{ background: #222; }} td.o {{ font-family: monospace; }} img {{ width: 240px; display: block; }}
a {{ color: #8cf; }} small {{ color: #999; }}
</style></head><body>
<h1>Sweep {e(title)}</h1>
<p>{len(rows)} jobs. Click a thumbnail to play that job's master. Stage cells: wall seconds, cache hits/misses.</p>
<table><tr><th>job</th><th>swept setting</th><th>master</th><th>status</th><th>wall</th><th>hits/misses</th><th>duration</th>{head}<th>pictures</th><th>shared overrides</th></tr>
{''.join(body)}
</table></body></html>
"""


def _varying_overrides(rows: list[dict[str, Any]]) -> set[str]:
    """The overrides that differ between jobs: what the sweep compares."""
    if len(rows) < 2:
        return {str(o) for row in rows for o in row["overrides"]}
    common = set.intersection(*(set(map(str, row["overrides"])) for row in rows))
    return {str(o) for row in rows for o in row["overrides"]} - common


def failure_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per job that did not finish well: its number, the overrides that set it apart, the cause."""
    varying = _varying_overrides(rows)
    lines = []
    for row in rows:
        if row.get("status") in FINISHED:
            continue
        named = " ".join(str(o) for o in row["overrides"] if str(o) in varying) or "no overrides"
        cause = row.get("error") or "its worker stopped before the job ended"
        lines.append(f"mvgen: job {row['job']} ({named}) failed: {cause}")
    return lines


def report_sweep(stopped_by: str | None = None) -> None:
    """Write compare.json + compare.html for this process's sweep; print the failed jobs and a summary."""
    sweep_dir = SWEEP.get("dir")
    if sweep_dir is None or not Path(sweep_dir).is_dir():
        if stopped_by:
            print(f"mvgen: error: the sweep stopped before any job started: {stopped_by}", file=sys.stderr)
        return
    page = write_compare(sweep_dir)
    rows = read_json(Path(sweep_dir) / COMPARE_JSON)["jobs"]
    print(f"mvgen: sweep comparison: {page}")
    failed = failure_lines(rows)
    SWEEP["failed"] = len(failed)
    for line in failed:
        print(line, file=sys.stderr)
    if stopped_by:
        print(f"mvgen: error: the sweep stopped ({stopped_by}); {len(rows) - len(failed)} of the {len(rows)} jobs "
              f"that started finished; see {page}", file=sys.stderr)
    elif failed:
        print(f"mvgen: error: {len(failed)} of {len(rows)} sweep jobs failed; the others finished; see {page}",
              file=sys.stderr)


class SweepCompareCallback(Callback):
    """Hydra callback: remember the sweep's folder; build the comparison page when the multirun ends."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SWEEP.clear()
        SWEEP["dir"] = str(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        SWEEP["dir"] = str(config.hydra.sweep.dir)
        report_sweep()
