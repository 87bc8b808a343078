"""Loading model weights: a hub id (users online) or a local folder (everyone else), the same code path.

Safetensors only, never ``trust_remote_code``. Every model loads once per process (``cached``) and is
shared by every segment and every stage instance that asks for the same one; ``release_models`` frees
them all before an out-of-memory retry.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from mvgen.errors import MvgenError

log = logging.getLogger("mvgen")

_PIPELINES: dict[tuple[Any, ...], Any] = {}

DTYPES = ("float32", "float16", "bfloat16")


def wheel_weights(package: str, pip_name: str, what: str, folder: str, names: list[str], needed_by: str,
                  instead: str = "") -> list[Path]:
    """Weight files that ship inside an installed package (``folder`` below its root), found without importing
    it (its ``__init__`` may pull in what mvgen does not install). One line saying what to run when absent."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MvgenError(f"{needed_by} needs the {pip_name} package (its {what}); run scripts/setup.sh{instead}")
    root = Path(list(spec.submodule_search_locations)[0]) / folder
    paths = [root / name for name in names]
    for path in paths:
        if not path.is_file():
            raise MvgenError(f"{what}: {path} is missing; reinstall {pip_name} (scripts/setup.sh)")
    return paths


def torch_dtype(name: str) -> Any:
    import torch

    if name not in DTYPES:
        raise MvgenError(f"dtype {name!r} is not one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def describe_source(id_or_path: str) -> str:
    return f"local folder {id_or_path}" if Path(id_or_path).expanduser().is_dir() else f"hub id {id_or_path}"


def is_hub_id(id_or_path: str) -> bool:
    """Shaped like a Hugging Face hub id (owner/name), not like a path."""
    return "/" in id_or_path and not id_or_path.startswith((".", "/", "~"))


def _resolve(id_or_path: str) -> tuple[str, bool]:
    """(the path or id to load from, whether it is a local folder); anything else is one line."""
    source = os.path.expanduser(id_or_path)
    local = Path(source).is_dir()
    if not local and not is_hub_id(id_or_path):
        raise MvgenError(f"model {id_or_path!r} is neither a local folder nor a hub id (owner/name); "
                         "fix id_or_path")
    return source, local


_LOAD_SECONDS = [0.0]


def cached(key: tuple[Any, ...], load: Callable[[], Any]) -> Any:
    """The process-wide model cache: ``load()`` runs once per key; ``release_models`` empties it."""
    if key not in _PIPELINES:
        start = time.perf_counter()
        try:
            _PIPELINES[key] = load()
        finally:
            _LOAD_SECONDS[0] += time.perf_counter() - start
    return _PIPELINES[key]


def load_seconds() -> float:
    """Seconds this process has spent loading models through ``cached`` (progress leaves them out of the
    time per item)."""
    return _LOAD_SECONDS[0]


def from_pretrained(cls: Any, id_or_path: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` from a local folder (no hub lookups) or a hub id; a failure is one line.
    Weight-carrying classes are called with ``use_safetensors=True`` by their callers."""
    source, local = _resolve(id_or_path)
    try:
        return cls.from_pretrained(source, local_files_only=local, **kwargs)
    except (OSError, ValueError) as exc:
        hint = (f"check the folder holds a {cls.__name__} saved with safetensors" if local else
                "download it first (huggingface-cli download) and set id_or_path to the folder, or go online")
        raise MvgenError(f"cannot load {cls.__name__} from {describe_source(id_or_path)}: "
                         f"{str(exc).splitlines()[0][:200]}; {hint}") from exc


def load_config(cls: Any, id_or_path: str, subfolder: str | None = None, revision: str | None = None) -> dict[str, Any]:
    """A component's ``config.json`` only (no weights): what a renderer derives its frame rule from."""
    source, local = _resolve(id_or_path)
    try:
        return dict(cls.load_config(source, subfolder=subfolder, revision=revision, local_files_only=local))
    except (OSError, ValueError) as exc:
        raise MvgenError(f"cannot read the {subfolder or cls.__name__} config of {describe_source(id_or_path)}: "
                         f"{str(exc).splitlines()[0][:200]}; check id_or_path (a folder saved with "
                         "save_pretrained, or a hub id while online)") from exc


def load_pipeline(pipeline_class: Any, id_or_path: str, revision: str | None = None, dtype: str = "float32",
                  device: str = "cpu", offload: bool = False) -> Any:
    """``pipeline_class.from_pretrained`` with safetensors only, cached per process."""

    def load() -> Any:
        pipe = from_pretrained(pipeline_class, id_or_path, revision=revision, dtype=torch_dtype(dtype),
                               use_safetensors=True)
        if offload and device.startswith("cuda"):
            pipe.enable_model_cpu_offload()
        else:
            pipe = pipe.to(device)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        log.info("loaded %s from %s (%s, %s)", pipeline_class.__name__, describe_source(id_or_path), dtype, device)
        return pipe

    return cached((pipeline_class.__name__, id_or_path, revision, dtype, device, offload), load)


def release_models() -> None:
    """Drop every cached pipeline and return its memory (before a retry with memory-saving settings)."""
    import gc

    if not _PIPELINES:
        return
    _PIPELINES.clear()
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
