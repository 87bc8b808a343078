"""Shared files are data: crafted run directories and song files that would make Hydra run code are refused
with one line, and nothing is written outside the run and store directories."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import yaml

from mvgen.util import read_json, sha256_file

from .conftest import FAST, SHORT_SONG, run_dir_of, run_mvgen

pytestmark = pytest.mark.slow


class _Payload:
    """Unpickling this writes a marker file: proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "pwned"))


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real run made with a song file from a folder that is then deleted, as on another machine."""
    workdir = tmp_path_factory.mktemp("shared")
    conf = workdir / "their_conf"
    (conf / "song").mkdir(parents=True)
    (conf / "song" / "short.yaml").write_text(SHORT_SONG)
    run = run_dir_of(run_mvgen(["--config-dir", str(conf), *FAST], workdir))
    shutil.rmtree(conf)
    return workdir, run


def test_a_run_directory_reruns_without_the_folder_its_song_came_from(shared_run: tuple[Path, Path]) -> None:
    workdir, run = shared_run
    assert (run / "song.yaml").read_text() == SHORT_SONG  # the run carries its song file
    rerun = run_dir_of(run_mvgen(["rerun", str(run)], workdir))
    assert sha256_file(rerun / "master.mp4") == sha256_file(run / "master.mp4")
    assert read_json(rerun / "manifest.json")["stages"]["render"]["misses"] == 0


def _tampered(run: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    config = yaml.safe_load((copy / ".hydra" / "config.yaml").read_text())
    edit(config)
    (copy / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    return copy


def _nested(path: list[str], value: object):
    def edit(config: dict) -> None:
        node = config
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return edit


@pytest.mark.parametrize("path,expect", [
    (["hydra", "callbacks", "x"], "may not set"),
    (["hydra", "job_logging", "handlers", "file", "filename"], "may not set"),
    (["frames", "extra"], "holds a _target_"),
    (["render", "_target_"], "not one of mvgen's backends"),
    (["song", "visual", "extra"], "holds a _target_"),
    (["runtime", "callback"], "holds a _target_"),
])
def test_a_crafted_saved_config_is_refused(shared_run: tuple[Path, Path], tmp_path: Path, path: list[str],
                                           expect: str) -> None:
    workdir, run = shared_run
    marker = tmp_path / "pwned"
    payload = {"_target_": "pathlib.Path.write_text", "self": str(marker), "data": "pwned"}
    value = "pathlib.Path.touch" if path[-1] == "_target_" else (str(marker) if path[-1] == "filename" else payload)
    copy = _tampered(run, tmp_path, _nested(path, value))
    before = sorted((workdir / "outputs").rglob("*"))
    proc = run_mvgen(["rerun", str(copy)], workdir, check=False)
    assert proc.returncode == 2 and expect in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not marker.exists()
    assert sorted((workdir / "outputs").rglob("*")) == before  # no run directory was even started


def test_saved_overrides_are_never_replayed(shared_run: tuple[Path, Path], tmp_path: Path) -> None:
    """--experimental-rerun (a pickle), callbacks and log paths in overrides.yaml: never passed to Hydra."""
    workdir, run = shared_run
    marker = tmp_path / "pwned"
    pickle_file = tmp_path / "payload.pickle"
    pickle_file.write_bytes(pickle.dumps(_Payload(marker)))
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    hostile = ["--experimental-rerun", str(pickle_file),
               f"+hydra.callbacks.x={{_target_: pathlib.Path.write_text, self: {marker}, data: pwned}}",
               f"hydra.job_logging.handlers.file.filename={marker}"]
    (copy / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(hostile))
    rerun = run_dir_of(run_mvgen(["rerun", str(copy)], workdir))
    assert not marker.exists()
    assert sha256_file(rerun / "master.mp4") == sha256_file(run / "master.mp4")


def test_a_chosen_option_that_is_not_mvgens_is_refused(shared_run: tuple[Path, Path], tmp_path: Path) -> None:
    workdir, run = shared_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    hydra_yaml = yaml.safe_load((copy / ".hydra" / "hydra.yaml").read_text())
    hydra_yaml["hydra"]["runtime"]["choices"]["render"] = "../../../tmp/evil"
    (copy / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra_yaml))
    proc = run_mvgen(["rerun", str(copy)], workdir, check=False)
    assert proc.returncode == 2 and "not an mvgen option" in proc.stderr


@pytest.mark.parametrize("body,expect", [
    ("hydra:\n  callbacks:\n    x:\n      _target_: pathlib.Path.write_text\n      self: MARKER\n      data: pwned\n",
     "may only hold song: and defaults:"),
    ("render:\n  width: 64\n", "may only hold song: and defaults:"),
    ("  extra:\n    _target_: pathlib.Path.touch\n    self: MARKER\n", "holds a _target_"),
])
def test_a_song_file_is_data(tmp_path: Path, body: str, expect: str) -> None:
    marker = tmp_path / "pwned"
    conf = tmp_path / "conf" / "song"
    conf.mkdir(parents=True)
    text = SHORT_SONG.replace("  id: short\n", "  id: short\n" + body.replace("MARKER", str(marker))) \
        if body.startswith("  ") else SHORT_SONG + body.replace("MARKER", str(marker))
    (conf / "short.yaml").write_text(text)
    proc = run_mvgen(["--config-dir", str(tmp_path / "conf"), *FAST], tmp_path, check=False)
    assert proc.returncode == 2 and expect in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists() and not (tmp_path / "outputs").exists()


def test_stages_are_built_only_from_mvgens_backends(tmp_path: Path, song_conf: Path) -> None:
    marker = tmp_path / "copied"
    for override, expect in (("render._target_=shutil.copyfile", "not one of mvgen's backends"),
                             (f"+frames.scheduler_options={{_target_: shutil.copyfile, src: {song_conf}/song/short.yaml,"
                              f" dst: {marker}}}", "holds a _target_")):
        proc = run_mvgen(["--config-dir", str(song_conf), *FAST, override], tmp_path, check=False)
        assert proc.returncode == 2 and expect in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and not marker.exists()
