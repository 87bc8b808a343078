"""Loading model weights: a hub id (users online) or a local folder (everyone else), the same code path.

Safetensors only, never ``trust_remote_code``. Every pipeline loads once per process and is shared by
every segment and every stage instance that asks for the same (class, id_or_path, revision, dtype,
device, offload).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from mvgen.errors import MvgenError

log = logging.getLogger("mvgen")

_PIPELINES: dict[tuple[Any, ...], Any] = {}

DTYPES = ("float32", "float16", "bfloat16")


def torch_dtype(name: str) -> Any:
    import torch

    if name not in DTYPES:
        raise MvgenError(f"dtype {name!r} is not one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def describe_source(id_or_path: str) -> str:
    return f"local folder {id_or_path}" if Path(id_or_path).expanduser().is_dir() else f"hub id {id_or_path}"


def load_pipeline(pipeline_class: Any, id_or_path: str, revision: str | None = None, dtype: str = "float32",
                  device: str = "cpu", offload: bool = False) -> Any:
    """``pipeline_class.from_pretrained`` with safetensors only, cached per process."""
    key = (pipeline_class.__name__, id_or_path, revision, dtype, device, offload)
    if key in _PIPELINES:
        return _PIPELINES[key]
    source = os.path.expanduser(id_or_path)
    local = Path(source).is_dir()
    if not local and ("/" not in id_or_path or id_or_path.startswith((".", "/", "~"))):
        raise MvgenError(f"model {id_or_path!r} is neither a local folder nor a hub id (owner/name); "
                         "fix id_or_path")
    try:
        pipe = pipeline_class.from_pretrained(source, revision=revision, dtype=torch_dtype(dtype),
                                              use_safetensors=True, local_files_only=local)
    except (OSError, ValueError) as exc:
        hint = ("check the folder holds a diffusers pipeline saved with safetensors" if local else
                "download it first (huggingface-cli download) and set id_or_path to the folder, or go online")
        raise MvgenError(f"cannot load {pipeline_class.__name__} from {describe_source(id_or_path)}: "
                         f"{str(exc).splitlines()[0][:200]}; {hint}") from exc
    if offload and device.startswith("cuda"):
        pipe.enable_model_cpu_offload()
    else:
        pipe = pipe.to(device)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    log.info("loaded %s from %s (%s, %s)", pipeline_class.__name__, describe_source(id_or_path), dtype, device)
    _PIPELINES[key] = pipe
    return pipe


def release_models() -> None:
    """Drop every cached pipeline and return its memory (before a retry with memory-saving settings)."""
    import gc

    _PIPELINES.clear()
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
