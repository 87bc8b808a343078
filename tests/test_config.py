"""Every config group and profile composes through Hydra's compose API; typos fail at compose time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mvgen.app import CONF_DIR, GROUPS, check_overrides, help_text
from mvgen.errors import MvgenError

EXTRA = {"music/file": ["music.path=song.flac"], "annotate/lrc": ["annotate.path=song.lrc"]}


@pytest.fixture()
def composer() -> Iterator:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield lambda overrides=(): compose(config_name="config", overrides=list(overrides))
    GlobalHydra.instance().clear()


def _options() -> list[tuple[str, str]]:
    return [(group.name, f.stem) for group in sorted(CONF_DIR.iterdir()) if group.is_dir()
            for f in sorted(group.glob("*.yaml"))]


def test_default_is_the_preview_profile_on_the_demo_song(composer) -> None:
    cfg: DictConfig = composer()
    assert cfg.profile.name == "preview"
    assert cfg.song.id == "demo"
    assert cfg.render._target_.endswith("AnimaticRenderer")
    assert (cfg.render.width, cfg.render.height, cfg.render.fps) == (960, 544, 25)
    assert cfg.segment.fps == 25  # interpolated from render.fps
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize("group,option", _options())
def test_every_option_composes_resolves_and_instantiates(composer, group: str, option: str) -> None:
    cfg = composer([f"{group}={option}", *EXTRA.get(f"{group}/{option}", [])])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    if group in GROUPS:
        stage = instantiate(cfg[group], _convert_="all")
        assert type(stage).__name__ == cfg[group]._target_.rsplit(".", 1)[1]


def test_a_value_follows_interpolation(composer) -> None:
    cfg = composer(["render.fps=30"])
    assert cfg.segment.fps == 30


@pytest.mark.parametrize("override,key", [
    ("render.fps=abc", "render.fps"),
    ("segmnt.max_seconds=3", "segmnt"),
    ("segment.max_secnds=3", "max_secnds"),
    ("frames.candidates=many", "frames.candidates"),
    ("render=nope", "render/nope"),
    ("song.bpm=fast", "song.bpm"),
])
def test_bad_overrides_fail_at_compose_time_in_one_line(override: str, key: str) -> None:
    with pytest.raises(MvgenError) as info:
        check_overrides([override])
    message = str(info.value)
    assert key in message and "\n" not in message


def test_sweep_values_are_each_checked() -> None:
    check_overrides(["render.zoom=0.05,0.2"])
    with pytest.raises(MvgenError, match="render.fps"):
        check_overrides(["render.fps=25,abc"])


def test_song_file_picks_groups_and_the_command_line_wins(tmp_path: Path) -> None:
    (tmp_path / "song").mkdir()
    (tmp_path / "song" / "noirish.yaml").write_text(
        "# @package _global_\ndefaults:\n  - base_song@song\n  - override /prompts: noir\n  - _self_\n"
        "song:\n  id: noirish\n  lyrics: |\n    [verse]\n    one line\n")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        search = f"hydra.searchpath=[file://{tmp_path}]"
        assert "noir" in compose("config", overrides=["song=noirish", search]).prompts.lyric
        assert "noir" not in compose("config", overrides=["song=noirish", "prompts=default", search]).prompts.lyric
    GlobalHydra.instance().clear()


def test_help_lists_groups_without_importing_torch() -> None:
    assert "render:" in help_text() and "rerun RUN_DIR" in help_text()
    code = ("import sys; from mvgen.app import main\n"
            "try:\n    main(['--help'])\nfinally:\n    print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Config groups" in out and out.strip().endswith("NO-TORCH")


@pytest.mark.parametrize("subcommand", ["eval", "compare", "rerun"])
def test_subcommand_help_prints_its_usage_instead_of_taking_help_for_a_path(
        subcommand: str, capsys: pytest.CaptureFixture[str]) -> None:
    from mvgen.app import main

    main([subcommand, "--help"])
    out = capsys.readouterr().out
    assert out.startswith("Usage:") and f"mvgen {subcommand} " in out and "mvgen models" not in out


def test_joblib_launcher_is_ready_for_parallel_sweeps() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                      return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2


def test_the_readme_multi_node_command_passes_the_checks_on_a_machine_without_gpus() -> None:
    """The command line may send jobs to Slurm nodes: their GPUs are counted there, not on this machine."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher is not installed "
                                                                       "(pip install -e '.[test]' installs it)")
    check_overrides(["hydra/launcher=slurm_gpu", "hydra.launcher.gpus_per_node=8", "profile=production",
                     "runtime.accelerator=cuda", "runtime.devices=8", "runtime.nodes=4", "runtime.node=0,1,2,3"])
    with pytest.raises(MvgenError, match="runtime.node=4 but runtime.nodes=4"):
        check_overrides(["runtime.nodes=4", "runtime.node=0,4"])


def test_rerun_warns_when_conf_changed_since_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from mvgen.app import _warn_if_config_drifted

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config")
        then = compose("config", overrides=["render.zoom=0.5"])
    GlobalHydra.instance().clear()
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(then))
    with caplog.at_level("WARNING", logger="mvgen"):
        _warn_if_config_drifted(cfg, tmp_path)
    assert "render differ from the saved config" in caplog.text
    caplog.clear()
    (tmp_path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    with caplog.at_level("WARNING", logger="mvgen"):
        _warn_if_config_drifted(cfg, tmp_path)
    assert caplog.text == ""
