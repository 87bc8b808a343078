"""Scale-out, run for real: one run split across worker processes (``runtime.devices``), and a two-job sweep
under every launcher the README names, each job fanning its segments out inside its launcher's worker.

The song is planned into 5 segments, so 2 and 3 workers get uneven shares. Every run's bytes are compared
with a single-process run of the same config.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mvgen.media.video import probe, read_frames
from mvgen.util import read_json

from .conftest import FAST, run_dir_of, run_mvgen

pytestmark = pytest.mark.slow

SEGMENTS = 5


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scale")


@pytest.fixture(scope="module")
def base_args(song_conf: Path) -> list[str]:
    return ["--config-dir", str(song_conf), *FAST, "segment.target_seconds=4.5"]


@pytest.fixture(scope="module")
def single(workdir: Path, base_args: list[str]) -> Path:
    """The reference: one process, its own store."""
    run = run_dir_of(run_mvgen([*base_args, f"store.root={workdir / 'single-store'}"], workdir))
    assert len(read_json(run / "segments.json")["segments"]) == SEGMENTS
    return run


def outputs(run_dir: Path) -> dict[str, str]:
    return read_json(run_dir / "manifest.json")["outputs"]


def assert_frame_exact(run_dir: Path) -> None:
    """The master has exactly the planned frames, and each segment's first frame is its clip's first frame."""
    plan = read_json(run_dir / "segments.json")
    assert probe(run_dir / "master.mp4", decode=True)["video"]["decoded_frames"] == plan["total_frames"]
    master = read_frames(run_dir / "master.mp4")
    for segment in plan["segments"]:
        first = read_frames(run_dir / "clips" / f"{segment['name']}.mp4")[0]
        assert np.array_equal(master[segment["start_frame"]], first), segment["name"]


@pytest.mark.parametrize("devices", [2, 3])
def test_devices_split_an_uneven_segment_count_with_identical_bytes(single: Path, workdir: Path, base_args: list[str],
                                                                    tmp_path: Path, devices: int) -> None:
    """3 workers on a 2-core machine is allowed: CPU workers may number twice the cores (mvgen/limits.py)."""
    proc = run_mvgen([*base_args, f"runtime.devices={devices}", f"store.root={tmp_path / 'store'}"], workdir)
    log = proc.stdout + proc.stderr
    for stage in ("frames", "render"):
        assert f"{stage}: {SEGMENTS} pending segments across {devices} cpu processes" in log
    run = run_dir_of(proc)
    stages = read_json(run / "manifest.json")["stages"]
    assert stages["frames"]["misses"] == stages["render"]["misses"] == SEGMENTS  # built here, by the workers
    assert outputs(run) == outputs(single)


def test_a_killed_worker_fails_the_run_in_one_line_and_the_rerun_finishes_it(single: Path, workdir: Path,
                                                                             base_args: list[str],
                                                                             tmp_path: Path) -> None:
    """Worker 1 of 3 (segments 0 and 3) is SIGKILLed after its first clip; the other two finish theirs."""
    args = [*base_args, "runtime.devices=3", f"store.root={tmp_path / 'store'}"]
    proc = run_mvgen(args, workdir, env={"MVGEN_FAULT_KILL_AFTER": "render:1", "MVGEN_FAULT_WORKER": "0"},
                     check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "mvgen: error: render: worker 1/3 was killed by SIGKILL; 4 of 5 segments were finished and are kept in "
        "the store; run the same command again to build the rest")
    assert "Traceback" not in proc.stderr
    proc = run_mvgen(args, workdir)
    assert "render: 1 pending segments across 1 cpu processes" in proc.stdout + proc.stderr
    rerun = run_dir_of(proc)
    stages = read_json(rerun / "manifest.json")["stages"]
    assert (stages["render"]["hits"], stages["render"]["misses"]) == (SEGMENTS - 1, 1)
    assert outputs(rerun) == outputs(single)


LAUNCHERS = {
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
    # a local Ray instance, started by the sweep's own process (ray.init with no address) and stopped with it
    "ray": ["hydra/launcher=ray", "hydra.launcher.ray.init.address=null", "+hydra.launcher.ray.init.num_cpus=2"],
}
PLUGINS = {"joblib": "hydra_plugins.hydra_joblib_launcher", "submitit_local": "hydra_plugins.hydra_submitit_launcher",
           "ray": "hydra_plugins.hydra_ray_launcher"}


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_two_job_sweep_runs_under_each_launcher(single: Path, workdir: Path, base_args: list[str], tmp_path: Path,
                                                  launcher: str) -> None:
    """Two jobs at once in the launcher's workers, one fresh store, each job splitting its segments over 2
    fan-out workers: frame-exact masters, compare.json, upstream work computed once across the jobs."""
    pytest.importorskip(PLUGINS[launcher], reason=f"the {launcher} launcher plugin is not installed "
                                                  "(pip install -e '.[test]' installs it)")
    proc = run_mvgen(["-m", *base_args, *LAUNCHERS[launcher], "runtime.devices=2", f"store.root={tmp_path / 'store'}",
                      "render.zoom=0.12,0.3"], tmp_path)
    match = re.search(r"sweep comparison: (\S+compare\.html)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    page = Path(match.group(1))
    sweep = (page if page.is_absolute() else tmp_path / page).parent
    jobs = read_json(sweep / "compare.json")["jobs"]
    assert [j["overrides"][-1] for j in jobs] == ["render.zoom=0.12", "render.zoom=0.3"]
    assert [j["status"] for j in jobs] == ["ok", "ok"]
    reference = read_json(single / "manifest.json")["stages"]
    for stage in ("music", "annotate", "segment", "frames"):  # built by one job, store hits for the other
        assert sum(j["stages"][stage]["misses"] for j in jobs) == reference[stage]["misses"], stage
        assert sum(j["stages"][stage]["hits"] for j in jobs) == reference[stage]["misses"], stage
    assert [j["stages"]["render"]["misses"] for j in jobs] == [SEGMENTS, SEGMENTS]  # a render setting differs
    for job in jobs:
        assert_frame_exact(sweep / job["dir"])
    first, second = (outputs(sweep / j["dir"]) for j in jobs)
    for name in ("song.wav", "annotation.json", "segments.json", "review.json"):  # one upstream, shared
        assert first[name] == second[name], name


def test_a_failed_sweep_job_is_one_line_and_the_other_jobs_finish(single: Path, workdir: Path,
                                                                  base_args: list[str]) -> None:
    """A job that fails on its input does not stop the sweep (the basic launcher used to stop at it)."""
    proc = run_mvgen(["-m", *base_args, f"store.root={workdir / 'single-store'}",
                      "+song.overrides.seg_000.candidate=7,0"], workdir, check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "mvgen: job 0 (+song.overrides.seg_000.candidate=7) failed: song.overrides.seg_000.candidate=7 does not "
        "exist; seg_000 has candidates 0..1",
        f"mvgen: error: 1 of 2 sweep jobs failed; the others finished; see {_page(proc)}"]
    jobs = read_json(workdir / _page(proc).parent / "compare.json")["jobs"]
    assert [j["status"] for j in jobs] == ["failed", "ok"]
    assert_frame_exact(workdir / _page(proc).parent / jobs[1]["dir"])


def _page(proc: subprocess.CompletedProcess[str]) -> Path:
    match = re.search(r"sweep comparison: (\S+compare\.html)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return Path(match.group(1))


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_sweep_whose_workers_die_reports_each_job_in_one_line(workdir: Path, single: Path, base_args: list[str],
                                                                launcher: str) -> None:
    """Each job's process is SIGKILLed after its first clip (as the kernel's OOM killer would): no
    BrokenProcessPool or Ray traceback, one line per job, the launcher's cause in the summary."""
    pytest.importorskip(PLUGINS[launcher], reason=f"the {launcher} launcher plugin is not installed "
                                                  "(pip install -e '.[test]' installs it)")
    zooms = [f"{z + list(LAUNCHERS).index(launcher) / 100:g}" for z in (0.2, 0.3)]  # clips not yet in the store
    proc = run_mvgen(["-m", *base_args, *LAUNCHERS[launcher], f"store.root={workdir / 'single-store'}",
                      f"render.zoom={zooms[0]},{zooms[1]}"], workdir,
                     env={"MVGEN_FAULT_KILL_AFTER": "render:1"}, check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenProcessPool" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("mvgen:")]
    assert lines[:2] == [f"mvgen: job {i} (render.zoom={z}) failed: its worker stopped before the job ended"
                         for i, z in enumerate(zooms)]
    assert re.fullmatch(r"mvgen: error: the sweep stopped \(\w+: .+\); 0 of the 2 jobs that started finished; "
                        r"see \S+compare\.html", lines[2]), lines[2]
    assert len(lines) == 3


def test_one_run_spread_over_two_nodes_by_a_sweep_over_runtime_node(single: Path, workdir: Path,
                                                                    base_args: list[str], tmp_path: Path) -> None:
    """The multi-node recipe of the README with two joblib workers standing in for two machines: each builds
    its share of frames and clips first, takes the other's from the shared store, and both end with the
    single-process master. Upstream entries are copied from the reference store, so the bytes compare."""
    import shutil

    for stage in ("music", "annotate", "segment"):
        shutil.copytree(workdir / "single-store" / stage, tmp_path / "store" / stage)
    proc = run_mvgen(["-m", *base_args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "runtime.nodes=2",
                      "runtime.node=0,1", f"store.root={tmp_path / 'store'}"], tmp_path)
    log = proc.stdout + proc.stderr
    for stage in ("frames", "render"):
        assert f"{stage}: node 1 of 2 builds 3 of {SEGMENTS} segments first" in log
        assert f"{stage}: node 2 of 2 builds 2 of {SEGMENTS} segments first" in log
    sweep = (tmp_path / _page(proc)).parent
    jobs = read_json(sweep / "compare.json")["jobs"]
    assert [j["status"] for j in jobs] == ["ok", "ok"]
    for stage in ("frames", "render", "assemble"):  # each built once, by one node or the other
        assert sum(j["stages"][stage]["misses"] for j in jobs) == read_json(single / "manifest.json")[
            "stages"][stage]["misses"], stage
    for job in jobs:
        assert outputs(sweep / job["dir"]) == outputs(single)


def test_a_segment_that_fails_in_a_worker_is_retried_and_recorded_by_the_run(workdir: Path, single: Path,
                                                                             base_args: list[str]) -> None:
    """The worker notes the failure and goes on; the run retries the segment under its policy, keeps the
    others, and fails in one line, as a single-process run does (tests/test_reliability.py)."""
    from .conftest import REPO

    env = {"MVGEN_TEST_FAIL": "seg_001:error", "PYTHONPATH": str(REPO),
           "MVGEN_EXTRA_TARGETS": "tests.fault_backends.FlakyAnimatic"}
    proc = run_mvgen([*base_args, "render._target_=tests.fault_backends.FlakyAnimatic", "runtime.devices=2",
                      "runtime.retry.render.backoff_seconds=0", "render.zoom=0.4",
                      f"store.root={workdir / 'single-store'}"], workdir, env=env, check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert re.search(r"^mvgen: fan-out worker 2: render \w{12} failed \(RuntimeError: simulated render failure "
                     r"in seg_001\); the main process retries it$", proc.stderr, re.MULTILINE), proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "mvgen: error: 1 segment(s) failed after retries (render seg_001: RuntimeError: simulated render failure")
    run = max((p for p in (workdir / "outputs").glob("*/*") if (p / ".hydra").is_dir()), key=lambda p: p.name)
    manifest = read_json(run / "manifest.json")
    assert manifest["failures"] == [{"stage": "render", "segment": "seg_001", "attempts": 2,
                                     "error": "RuntimeError: simulated render failure in seg_001"}]
    assert manifest["stages"]["render"]["misses"] == SEGMENTS - 1
