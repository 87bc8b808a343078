"""Runs that survive: failure isolation, retries, memory fallbacks, gaps, validation, SIGKILL at many
points, two processes on one store, hostile names."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from mvgen.util import read_json, sha256_file

from .conftest import FAST, REPO, run_dir_of, run_mvgen

pytestmark = pytest.mark.slow

FLAKY = "render._target_=tests.fault_backends.FlakyAnimatic"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def args(song_conf: Path) -> list[str]:
    return ["--config-dir", str(song_conf), *FAST, "runtime.retry.render.backoff_seconds=0"]


def _env(fail: str) -> dict[str, str]:
    return {"MVGEN_TEST_FAIL": fail, "PYTHONPATH": str(REPO),
            "MVGEN_EXTRA_TARGETS": "tests.fault_backends.FlakyAnimatic"}  # the allowlist, widened for tests


def _latest_run(workdir: Path) -> Path:
    return max((p for p in (workdir / "outputs").glob("*/*") if (p / ".hydra").is_dir()), key=lambda p: p.name)


def test_a_failing_segment_costs_only_itself_then_a_rerun_retries_only_it(workdir: Path, args: list[str]) -> None:
    proc = run_mvgen([*args, FLAKY], workdir, env=_env("seg_001:error"), check=False)
    assert proc.returncode == 3
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("mvgen: error: 1 segment(s) failed after retries (render seg_001: RuntimeError: "
                           "simulated render failure in seg_001)") and "Traceback" not in proc.stderr
    run = _latest_run(workdir)
    manifest = read_json(run / "manifest.json")
    assert manifest["status"] == "failed_segments" and not (run / "master.mp4").exists()
    assert manifest["failures"] == [{"stage": "render", "segment": "seg_001", "attempts": 2,
                                     "error": "RuntimeError: simulated render failure in seg_001"}]
    segments = read_json(run / "segments.json")["segments"]
    assert sorted(p.stem for p in (run / "clips").glob("*.mp4")) == [s["name"] for s in segments if s["name"] != "seg_001"]

    again = run_dir_of(run_mvgen([*args, FLAKY], workdir, env=_env("")))
    stats = read_json(again / "manifest.json")["stages"]["render"]
    assert (stats["misses"], stats["hits"]) == (1, len(segments) - 1)  # only the failed segment is rendered


def test_allow_gaps_holds_a_still_and_records_it(workdir: Path, args: list[str]) -> None:
    proc = run_mvgen([*args, FLAKY, "assemble.allow_gaps=true", "render.zoom=0.2"], workdir, env=_env("seg_002:error"))
    assert "hold a still in the master: seg_002" in proc.stderr
    run = run_dir_of(proc)
    manifest = read_json(run / "manifest.json")
    assert manifest["status"] == "gaps"
    assert manifest["gaps"] == [{"segment": "seg_002", "start": manifest["gaps"][0]["start"],
                                 "end": manifest["gaps"][0]["end"], "filled_with": "approved frame"}]
    plan = read_json(run / "segments.json")
    assert manifest["master"]["frames"] == plan["total_frames"]


def test_out_of_memory_retries_with_a_memory_fallback(workdir: Path, args: list[str]) -> None:
    proc = run_mvgen([*args, FLAKY, "render.zoom=0.25"], workdir, env=_env("seg_003:oom"))
    run = run_dir_of(proc)
    manifest = read_json(run / "manifest.json")
    assert manifest["status"] == "ok" and manifest["failures"] == []
    log = (run / "app.log").read_text() if (run / "app.log").exists() else proc.stdout
    assert "out of memory, retrying with simulated memory saving" in log


def test_a_transient_failure_is_retried(workdir: Path, args: list[str]) -> None:
    run = run_dir_of(run_mvgen([*args, FLAKY, "render.zoom=0.27"], workdir, env=_env("seg_000:once")))
    assert read_json(run / "manifest.json")["failures"] == []


def test_a_clip_that_fails_validation_never_enters_the_store(workdir: Path, args: list[str]) -> None:
    proc = run_mvgen([*args, FLAKY, "render.zoom=0.29"], workdir, env=_env("seg_001:badclip"), check=False)
    assert proc.returncode == 3
    failure = read_json(_latest_run(workdir) / "manifest.json")["failures"][0]
    assert failure["segment"] == "seg_001" and "ArtifactInvalid" in failure["error"] and "frames, expected" in failure["error"]


@pytest.mark.parametrize("mode,expected,extra", [
    ("blank", "is blank", ["render.zoom=0.31"]),
    ("slow", "TimeoutError: took longer than 2 s", ["render.zoom=0.33", "runtime.retry.render.timeout_seconds=2",
                                                    "runtime.retry.render.attempts=1"]),
])
def test_blank_output_and_timeouts_are_segment_failures(workdir: Path, args: list[str], mode: str, expected: str,
                                                        extra: list[str]) -> None:
    proc = run_mvgen([*args, FLAKY, *extra], workdir, env=_env(f"seg_002:{mode}"), check=False)
    assert proc.returncode == 3, proc.stderr[-800:]
    failure = read_json(_latest_run(workdir) / "manifest.json")["failures"][0]
    assert failure["segment"] == "seg_002" and expected in failure["error"]


def test_sigkill_at_ten_points_then_the_master_is_byte_identical(args: list[str], tmp_path: Path) -> None:
    """Kill -9 at 10 random store commits across the stages, rerun after each, compare with a clean run."""
    reference = run_dir_of(run_mvgen([*args, f"store.root={tmp_path / 'reference-store'}"], tmp_path))
    expected = read_json(reference / "manifest.json")["outputs"]
    segments = len(read_json(reference / "segments.json")["segments"])
    store = tmp_path / "store"
    points = [("music", 1), ("annotate", 1), ("segment", 1)]
    points += [("frames", k) for k in range(1, segments + 1)] + [("review", 1)]
    points += [("render", k) for k in range(1, segments + 1)] + [("assemble", 1), ("timeline", 1), ("contact_sheet", 1)]
    chosen = sorted(random.Random(7).sample(range(len(points)), 10))
    seen: dict[str, float] = {}
    killed = 0
    for index in chosen:
        stage, count = points[index]
        done = {str(p): p.stat().st_mtime for p in store.glob("*/*/*/_entry.json")} if store.exists() else {}
        # the store already holds the earlier commits, so this run's count-th new commit of `stage` is the
        # count-th not yet made: kill points are expressed in new commits of this process
        already = len(list(store.glob(f"{stage}/*/*/_entry.json"))) if store.exists() else 0
        if count <= already:
            continue
        proc = run_mvgen([*args, f"store.root={store}"], tmp_path,
                         env={"MVGEN_FAULT_KILL_AFTER": f"{stage}:{count - already}"}, check=False)
        assert proc.returncode == -9, (stage, count, proc.stderr[-500:])
        killed += 1
        for path, mtime in done.items():  # finished entries are never rebuilt
            assert Path(path).stat().st_mtime == mtime, path
        seen.update(done)
    assert killed >= 8
    final = run_dir_of(run_mvgen([*args, f"store.root={store}"], tmp_path))
    manifest = read_json(final / "manifest.json")
    assert manifest["outputs"] == expected  # every artifact, master included, byte-identical
    for path, mtime in seen.items():
        assert Path(path).stat().st_mtime == mtime
    assert not list((store / ".tmp").iterdir())  # killed builders' leftovers were swept


def test_two_processes_on_one_store_and_song(args: list[str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MVGEN_", "HYDRA_"))}
    command = [sys.executable, "-m", "mvgen", *args, f"store.root={tmp_path / 'store'}"]
    procs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][1][-800:] + outputs[1][1][-800:]
    runs = [run_dir_of(subprocess.CompletedProcess(command, 0, out, err)) for out, err in outputs]
    manifests = [read_json(run / "manifest.json") for run in runs]
    assert manifests[0]["outputs"] == manifests[1]["outputs"]
    for stage in ("music", "annotate", "segment", "frames", "render", "assemble"):
        misses = sum(m["stages"][stage]["misses"] for m in manifests)
        hits = sum(m["stages"][stage]["hits"] for m in manifests)
        total = manifests[0]["stages"][stage]["misses"] + manifests[0]["stages"][stage]["hits"]
        assert misses == total, (stage, misses, total)  # each artifact computed exactly once between them
        assert hits == total, (stage, hits, total)  # ... and the other process read it from the store
    from mvgen.store import ArtifactStore

    store = ArtifactStore(tmp_path / "store")
    entries = list((tmp_path / "store").glob("*/*/*/_entry.json"))
    assert entries and all(store.get(p.parts[-4], p.parts[-2]) is not None for p in entries)  # none corrupt


def test_hostile_names_never_become_paths(song_conf: Path, tmp_path: Path) -> None:
    song = (song_conf / "song" / "short.yaml").read_text().replace("id: short", "id: ../../etc/evil")
    song = song.replace("[chorus]", "[../../chorus]")
    conf = tmp_path / "conf"
    (conf / "song").mkdir(parents=True)
    (conf / "song" / "hostile.yaml").write_text(song)
    work = tmp_path / "work"
    work.mkdir()
    run = run_dir_of(run_mvgen(["--config-dir", str(conf), *FAST[1:], "song=hostile"], work))
    assert not (tmp_path / "etc").exists() and not list(tmp_path.parent.glob("etc"))
    for path in work.rglob("*"):
        assert "evil" not in path.name and ".." not in path.name and path.resolve().is_relative_to(work.resolve())
    sections = {s["section"] for s in read_json(run / "segments.json")["segments"]}
    assert all("/" not in name and ".." not in name for name in sections)
    assert sha256_file(run / "master.mp4") == read_json(run / "manifest.json")["outputs"]["master.mp4"]
