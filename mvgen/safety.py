"""Shared files are data, never code.

People share song files and run directories. Hydra would run code from either: a ``hydra:`` block with
callbacks, a ``_target_`` anywhere in a config, ``--experimental-rerun`` (a pickle), or a log-file path.
So before Hydra sees anything that came from a file:

- a song file may hold ``song:`` and a defaults list choosing options of mvgen's own groups, nothing else;
- a rerun reads the run directory's saved choices and overrides as data, and takes only ``key=value``
  entries for mvgen's own keys (never ``hydra.*``, never a ``--`` flag, never a ``_target_``), with the
  song file the run directory carries (``song.yaml``), not a path from another machine;
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
_KEY = re.compile(r"^(\+{0,2})([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)=(.*)$", re.DOTALL)
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


def check_override(text: str, origin: str) -> str:
    """One saved override, accepted only as ``key=value`` for mvgen's own keys, with no class in its value."""
    match = _KEY.match(text) if isinstance(text, str) else None
    if match is None:
        raise MvgenError(f"{origin}: {text!r} is not a key=value override; refusing to replay it")
    key, value = match.group(2), match.group(3)
    if key.split(".")[0] == "hydra" or key.split(".")[0] not in GROUPS + ("seed", "store", "runtime"):
        raise MvgenError(f"{origin}: {text!r} sets {key}, which a shared run directory may not set; refusing")
    if "_target_" in key or "_target_" in value:
        raise MvgenError(f"{origin}: {text!r} names a class (_target_); refusing")
    return text


def rerun_arguments(run_dir: Path, scratch: Path) -> list[str]:
    """The command line that reproduces ``run_dir``, built from its saved files read as data: the group
    choices (each an existing option), the overrides (checked by ``check_override``) and the carried song."""
    saved = run_dir / ".hydra" / "overrides.yaml"
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    if not saved.is_file() or not hydra_yaml.is_file():
        raise MvgenError(f"{run_dir} is not an mvgen run directory (no .hydra/overrides.yaml and hydra.yaml)")
    try:
        overrides = yaml.safe_load(saved.read_text(encoding="utf-8")) or []
        choices = (yaml.safe_load(hydra_yaml.read_text(encoding="utf-8")) or {}).get("hydra", {}).get(
            "runtime", {}).get("choices", {})
    except yaml.YAMLError as exc:
        raise MvgenError(f"{run_dir}/.hydra cannot be read as YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(overrides, list) or not isinstance(choices, dict):
        raise MvgenError(f"{run_dir}/.hydra is damaged (overrides must be a list, choices a mapping)")
    origin = f"{run_dir}/.hydra/overrides.yaml"
    chosen: dict[str, str] = {}
    for group in GROUPS:
        option = choices.get(group)
        if option is None or group == "song":
            continue
        if not isinstance(option, str) or not _OPTION.match(option) or option not in options(group):
            raise MvgenError(f"{run_dir}/.hydra/hydra.yaml chooses {group}={option!r}, which is not an mvgen "
                             f"option here; refusing")
        chosen[group] = option
    replayed = [check_override(o, origin) for o in overrides]
    head: list[str] = []
    song_file = run_dir / CARRIED_SONG
    if song_file.is_file():  # the run's own song, whatever folder it came from on the machine that made it
        check_song_file(song_file)
        name = "rerun_" + re.sub(r"[^A-Za-z0-9_]", "_", str(choices.get("song") or "song"))
        (scratch / "song").mkdir(parents=True, exist_ok=True)
        (scratch / "song" / f"{name}.yaml").write_text(song_file.read_text(encoding="utf-8"), encoding="utf-8")
        head = ["--config-dir", str(scratch)]
        chosen["song"] = name
        replayed = [o for o in replayed if _KEY.match(o).group(2) != "song"]  # type: ignore[union-attr]
    elif isinstance(choices.get("song"), str) and choices["song"] in options("song"):
        chosen["song"] = choices["song"]
    else:
        raise MvgenError(f"{run_dir} carries no {CARRIED_SONG} and its song {choices.get('song')!r} is not in "
                         "conf/song/; copy the song file there")
    overridden = {_KEY.match(o).group(2) for o in replayed}  # type: ignore[union-attr]
    return head + [f"{g}={o}" for g, o in chosen.items() if g not in overridden] + replayed


def carry_song(song_file_text: str, run_dir: Path) -> None:
    (run_dir / CARRIED_SONG).write_text(song_file_text, encoding="utf-8")
