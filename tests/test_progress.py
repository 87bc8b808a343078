"""Time left per stage: measured from built items only (store hits and model loading left out), shown on the
bar or in the log, projected after the first built item, and recorded per segment in manifest.json."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from mvgen.manifest import StageStats, write_manifest
from mvgen.models import cached, release_models
from mvgen.progress import TimeLeft, format_seconds
from mvgen.store import ArtifactStore
from mvgen.util import read_json
from mvgen.workspace import Workspace


def test_time_left_counts_only_built_items_without_model_loading() -> None:
    timer = TimeLeft(total=5, to_build=3)
    assert timer.left() is None and timer.describe() == "0/5 done, measuring"
    timer.add(0.001, built=False)  # a store hit: instant, says nothing about the work left
    assert timer.left() is None
    timer.add(12.0, built=True, loading=8.0)  # the first built item also loaded the model
    assert timer.per_item() == pytest.approx(4.0) and timer.left() == pytest.approx(8.0)
    timer.add(6.0, built=True)
    assert timer.per_item() == pytest.approx(5.0) and timer.left() == pytest.approx(5.0)
    assert timer.describe() == "3/5 done, 5.0 s per item, about 5.0 s left"
    assert TimeLeft(total=2, to_build=0).left() == 0.0  # all from the store
    assert [format_seconds(s) for s in (4.24, 42.4, 185, 3720)] == ["4.2 s", "42 s", "3 min 05 s", "1 h 02 min"]


class _Backend:
    def degrade(self, exc: BaseException) -> str | None:
        return None


def _job(name: str, seconds: float, load: float = 0.0) -> tuple[dict[str, Any], str, Callable[[Path], Any]]:
    def build(tmp: Path) -> dict[str, Any]:
        if load:
            cached(("test-model", name), lambda: time.sleep(load))
        time.sleep(seconds)
        (tmp / "clip.mp4").write_bytes(name.encode())
        return {}

    return {"name": name}, ArtifactStore.key("render", {"test": 1}, {"segment": name}), build


def test_per_segment_times_reach_the_log_the_bar_and_the_manifest(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    store = ArtifactStore(tmp_path / "store")
    cached_job = _job("seg_000", 0.0)
    store.get_or_build("render", cached_job[1], cached_job[2])  # made by an earlier run
    jobs = [cached_job, _job("seg_001", 0.2, load=0.3), _job("seg_002", 0.2), _job("seg_003", 0.2)]
    ws = Workspace(store, tmp_path / "run", progress=True)
    stats = StageStats()
    with caplog.at_level(logging.INFO, logger="mvgen"):
        names = [segment["name"] for segment, _ in ws.per_segment("render", jobs, _Backend(), stats)]
    release_models()
    assert names == ["seg_000", "seg_001", "seg_002", "seg_003"] and (stats.hits, stats.misses) == (1, 3)
    assert stats.load_seconds == pytest.approx(0.3, abs=0.1)
    assert not stats.items["seg_000"]["built"] and stats.items["seg_000"]["seconds"] < 0.1
    assert all(stats.items[f"seg_00{i}"]["built"] and stats.items[f"seg_00{i}"]["seconds"] >= 0.2 for i in (1, 2, 3))

    projected = [r.getMessage() for r in caplog.records if "projected total" in r.getMessage()]
    assert len(projected) == 1  # once, after the first built clip
    match = re.match(r"render: first clip built in ([\d.]+) s \(([\d.]+) s of it loading models\); projected total "
                     r"for the 3 to build: about ([\d.]+) s, ([\d.]+) s left", projected[0])
    assert match, projected[0]
    first, loading, total, left = (float(g) for g in match.groups())
    assert first == pytest.approx(0.5, abs=0.15) and loading == pytest.approx(0.3, abs=0.1)
    assert left == pytest.approx(0.4, abs=0.15) and total == pytest.approx(first + left, abs=0.1)
    bar = capsys.readouterr().err.replace("\r", "\n")
    assert re.search(r"render: +\d+%\|.*\| [1-4]/4 \[00:0\d, 0\.\d s per item, about [\d.]+ s left\]", bar), bar

    write_manifest(tmp_path / "run", store.root, {}, "ok", None, 1.0, {"render": stats}, {}, [], [], {})
    render = read_json(tmp_path / "run" / "manifest.json")["stages"]["render"]
    assert set(render["items"]) == {"seg_000", "seg_001", "seg_002", "seg_003"}
    assert render["seconds_per_built_item"] == pytest.approx(0.2, abs=0.08)  # the model load is left out
    assert render["load_seconds"] == pytest.approx(0.3, abs=0.1)


def test_without_a_bar_each_item_is_logged_with_time_left(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ws = Workspace(ArtifactStore(tmp_path / "store"), tmp_path / "run", progress=False)
    with caplog.at_level(logging.INFO, logger="mvgen"):
        list(ws.per_segment("frames", [_job("seg_000", 0.1), _job("seg_001", 0.1)], _Backend(), StageStats()))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("frames seg_")]
    assert re.match(r"frames seg_000: 1/2 done, 0\.1 s per item, about 0\.[012] s left$", lines[0]), lines[0]
    assert lines[1].startswith("frames seg_001: 2/2 done")
