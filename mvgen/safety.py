"""Shared files are data, never code.

People share song files and run directories. Hydra would run code from either: a ``hydra:`` block with
callbacks, a ``_target_`` anywhere in a config, ``--experimental-rerun`` (a pickle), or a log-file path.
So before Hydra sees anything that came from a file:

- a song file may hold ``song:`` and a defaults list choosing options of mvgen's own groups, nothing else;
- a rerun passes none of the run directory's text to Hydra's command-line parser: it reads the saved group
  choices (each must be an existing mvgen option) and the saved config as data (mvgen's own keys only,
  stage classes from mvgen's backends, no other ``_target_``), writes the values back with
  ``yaml.safe_dump`` as one config, and uses the song file the run directory carries (``song.yaml``), never
  a path from another machine; ``.hydra/overrides.yaml`` (where ``--`` flags could hide) is not read;
- every stage is instantiated only from mvgen's own backend classes, and no ``_target_`` may sit inside a
  stage's settings (free-form dicts such as ``frames.extra`` stay plain values).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from mvgen.errors import MvgenError

GROUPS = ("music", "annotate", "segment", "prompts", "frames", "review", "render", "assemble", "profile", "song")
CARRIED_SONG = "song.yaml"  # the run directory's own copy of its song, so it reruns anywhere
EXTRA_TARGETS_ENV = "MVGEN_EXTRA_TARGETS"  # comma-separated extra classes (the test suite's fault backends)
_OPTION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def allowed_targets() -> set[str]:
    from mvgen.schema import SCHEMAS

    targets = {node._target_ for nodes in SCHEMAS.values() for node in nodes.values()
               if hasattr(node, "_target_")}
    extra = os.environ.get(EXTRA_TARGETS_ENV, "")
    return targets | {t.strip() for t in extra.split(",") if t.strip()}


def _targets_inside(value: Any, path: str) -> list[str]:
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "_target_":
                found.append(path or "(top)")
            found += _targets_inside(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _targets_inside(item, f"{path}[{i}]")
    return found


def check_stage_config(group: str, config: dict[str, Any]) -> None:
    """The stage's class is one of mvgen's own, and nothing inside its settings names a class to build."""
    target = config.get("_target_")
    if target not in allowed_targets():
        raise MvgenError(f"{group}._target_={target!r} is not one of mvgen's backends; choose a {group} option "
                         f"(mvgen --help lists them)")
    nested = [p for p in _targets_inside({k: v for k, v in config.items() if k != "_target_"}, group)]
    if nested:
        raise MvgenError(f"{nested[0]} holds a _target_; settings are plain values and are never instantiated "
                         "(remove it)")


def options(group: str, config_dir: Path | None = None) -> set[str]:
    from mvgen.app import CONF_DIR

    found = {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
    if config_dir is not None:
        found |= {p.stem for p in (config_dir / group).glob("*.yaml")}
    return found


def check_song_file(path: Path) -> None:
    """A song file is data: ``song:`` and a defaults list of mvgen group options, nothing else."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MvgenError(f"song file {path} cannot be read as YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise MvgenError(f"song file {path} must be a mapping with song: (and optionally defaults:)")
    extra = sorted(set(data) - {"song", "defaults"})
    if extra:
        raise MvgenError(f"song file {path} sets {', '.join(map(str, extra))}; a song file may only hold song: and "
                         "defaults: (it is shared as data: no hydra:, no other settings)")
    for entry in data.get("defaults") or []:
        if isinstance(entry, str) and entry in ("_self_", "base_song@song"):
            continue
        if isinstance(entry, dict) and len(entry) == 1:
            (key, option), = entry.items()
            group = str(key).removeprefix("override ").strip().lstrip("/")
            if group in GROUPS and group != "song" and isinstance(option, str) and option in options(group):
                continue
        raise MvgenError(f"song file {path}: defaults entry {entry!r} is not a choice of one of mvgen's groups "
                         "(e.g. '- override /prompts: noir')")
    if _targets_inside(data.get("song"), "song"):
        raise MvgenError(f"song file {path} holds a _target_ at {_targets_inside(data.get('song'), 'song')[0]}; "
                         "a song file is data (remove it)")


def find_song_file(name: str, config_dir: str | None) -> Path | None:
    from mvgen.app import CONF_DIR

    for root in ([Path(config_dir)] if config_dir else []) + [CONF_DIR]:
        candidate = root / "song" / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return None


TOP_LEVEL = {"song", "music", "annotate", "segment", "prompts", "frames", "review", "render", "assemble", "seed",
             "store", "runtime", "profile"}
STAGE_GROUPS = ("music", "annotate", "segment", "prompts", "frames", "review", "render", "assemble")


def check_saved_config(config: Any, origin: str) -> dict[str, Any]:
    """A saved ``.hydra/config.yaml`` as plain data: mvgen's own keys only, each stage one of mvgen's backends,
    no class named anywhere else."""
    if not isinstance(config, dict):
        raise MvgenError(f"{origin} is not a mapping; refusing")
    unknown = sorted(map(str, set(config) - TOP_LEVEL))
    if unknown:
        raise MvgenError(f"{origin} sets {', '.join(unknown)}, which a shared run directory may not set; refusing")
    for group in STAGE_GROUPS:
        if not isinstance(config.get(group), dict):
            raise MvgenError(f"{origin} has no {group} settings; refusing")
        check_stage_config(group, config[group])
    for key in ("song", "store", "runtime", "profile"):
        found = _targets_inside(config.get(key), key)
        if found:
            raise MvgenError(f"{origin} holds a _target_ at {found[0]}; refusing")
    return config


def rerun_arguments(run_dir: Path, scratch: Path) -> list[str]:
    """The command line that reproduces ``run_dir`` without passing any of its text to Hydra's parser: the
    group choices (each an existing mvgen option name), the run's carried song file, and the saved config
    (checked by ``check_saved_config``) written back by ``yaml.safe_dump`` as one config that sets every value."""
    hydra_yaml, saved = run_dir / ".hydra" / "hydra.yaml", run_dir / ".hydra" / "config.yaml"
    if not hydra_yaml.is_file():
        raise MvgenError(f"{run_dir} is not an mvgen run directory (no .hydra/hydra.yaml)")
    if not saved.is_file():
        raise MvgenError(f"{run_dir} has no .hydra/config.yaml; it is not a complete mvgen run directory")
    try:
        choices = (yaml.safe_load(hydra_yaml.read_text(encoding="utf-8")) or {}).get("hydra", {}).get(
            "runtime", {}).get("choices", {})
        config = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (yaml.YAMLError, AttributeError) as exc:
        raise MvgenError(f"{run_dir}/.hydra cannot be read as mvgen's YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(choices, dict):
        raise MvgenError(f"{run_dir}/.hydra/hydra.yaml is damaged (choices must be a mapping)")
    check_saved_config(config, f"{run_dir}/.hydra/config.yaml")
    chosen: dict[str, str] = {}
    for group in GROUPS:
        option = choices.get(group)
        if option is None or group == "song":
            continue
        if not isinstance(option, str) or not _OPTION.match(option) or option not in options(group):
            raise MvgenError(f"{run_dir}/.hydra/hydra.yaml chooses {group}={option!r}, which is not an mvgen "
                             f"option here; refusing")
        chosen[group] = option
    song_file = run_dir / CARRIED_SONG
    if song_file.is_file():  # the run's own song, whatever folder it came from on the machine that made it
        check_song_file(song_file)
        text = song_file.read_text(encoding="utf-8")
    elif isinstance(choices.get("song"), str) and choices["song"] in options("song"):
        text = (Path(__file__).resolve().parent.parent / "conf" / "song" / f"{choices['song']}.yaml").read_text(
            encoding="utf-8")
    else:
        raise MvgenError(f"{run_dir} carries no {CARRIED_SONG} and its song {choices.get('song')!r} is not in "
                         "conf/song/; copy the song file there")
    (scratch / "song").mkdir(parents=True, exist_ok=True)
    (scratch / "song" / "rerun.yaml").write_text(text, encoding="utf-8")
    (scratch / "rerun").mkdir(parents=True, exist_ok=True)
    (scratch / "rerun" / "values.yaml").write_text("# @package _global_\n" + yaml.safe_dump(config, sort_keys=False),
                                                   encoding="utf-8")
    return (["--config-dir", str(scratch)] + [f"{g}={o}" for g, o in chosen.items()]
            + ["song=rerun", "+rerun=values"])


def carry_song(song_file_text: str, run_dir: Path) -> None:
    (run_dir / CARRIED_SONG).write_text(song_file_text, encoding="utf-8")
