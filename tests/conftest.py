"""Shared fixtures: a short song the tests synthesise, and a helper that runs the real CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SHORT_SONG = """\
# @package _global_
defaults:
  - base_song@song
  - _self_
song:
  id: short
  title: Short Test Song
  language: en
  bpm: 120
  lyrics: |
    [verse]
    Paper boats are sailing down the street
    Morning light is dancing at my feet
    [chorus]
    Sing it loud and carry me away
  visual:
    characters: [a drummer in a yellow raincoat]
    locations: [a flooded street, a harbour at dawn]
    palette: ["#102030", "#f0a020", "#20c0a0"]
"""

# Small and quick, same code paths as the default run.
FAST = ["song=short", "render.width=320", "render.height=192", "frames.candidates=2", "runtime.progress=false"]


@pytest.fixture(scope="session")
def song_conf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config directory (passed with --config-dir) holding the short test song."""
    conf = tmp_path_factory.mktemp("conf")
    (conf / "song").mkdir()
    (conf / "song" / "short.yaml").write_text(SHORT_SONG)
    return conf


def run_mvgen(args: list[str], cwd: Path, env: dict[str, str] | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mvgen`` as a user would, in ``cwd`` (so outputs/ and the store land there)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MVGEN_", "HYDRA_"))}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "mvgen", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"mvgen {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_dir_of(proc: subprocess.CompletedProcess[str]) -> Path:
    match = re.search(r"^mvgen: (\S+)/master\.mp4 ", proc.stdout, re.MULTILINE)
    assert match, f"no master line in output:\n{proc.stdout}\n{proc.stderr}"
    return Path(match.group(1))


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SDXL saved with save_pretrained (tests/tiny_models.py)."""
    from .tiny_models import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP with its processor, saved with save_pretrained."""
    from .tiny_models import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_ltx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny random LTX-2 pipeline and x2 latent upsampler, saved with save_pretrained."""
    from .tiny_models import build_tiny_ltx2, build_tiny_ltx2_upsampler

    root = tmp_path_factory.mktemp("ltx")
    return build_tiny_ltx2(root / "ltx2"), build_tiny_ltx2_upsampler(root / "upsampler")
