"""The ``mvgen`` entry point: Hydra at the edge, stage objects instantiated from config.

    mvgen [OVERRIDES]                   one run (Hydra's own flags work: -m, --cfg job, --info defaults)
    mvgen rerun RUN_DIR [OVERRIDES]     replay RUN_DIR/.hydra/overrides.yaml against conf/ into a new run
    mvgen compare SWEEP_DIR             rebuild compare.html + compare.json for a sweep
    mvgen review RUN_DIR                serve the review page (lyric timing, frames) for a run
    mvgen eval RUN_DIR [TRUTH]          alignment accuracy against ground truth
    mvgen models [OVERRIDES]            the models the composed config loads, whether each is present, peak GPU memory

Overrides are checked by composing the config before Hydra runs, so a typo or a wrong type is one
line naming the key. Nothing on the ``--help`` path imports torch.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from mvgen.errors import MvgenError
from mvgen.schema import register_configs

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("music", "annotate", "segment", "prompts", "frames", "review", "render", "assemble")

log = logging.getLogger("mvgen")

register_configs()


# ------------------------------------------------------------------------------------ the run itself
def build_pipeline(cfg: DictConfig, run_dir: Path) -> Any:
    """Instantiate every stage from its config group and wire them into a Pipeline."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from mvgen.pipeline import Pipeline, Stages
    from mvgen.store import ArtifactStore

    from mvgen.limits import check_limits
    from mvgen.safety import check_stage_config

    check_limits(cfg)
    built = {}
    for group in GROUPS:
        check_stage_config(group, OmegaConf.to_container(cfg[group], resolve=True))  # type: ignore[arg-type]
        try:
            built[group] = instantiate(cfg[group], _convert_="all")
        except InstantiationException as exc:
            if isinstance(exc.__cause__, MvgenError):
                raise exc.__cause__ from None
            raise
    configs: dict[str, Any] = {g: OmegaConf.to_container(cfg[g], resolve=True) for g in GROUPS}
    configs["seed"] = cfg.seed
    song = OmegaConf.to_container(cfg.song, resolve=True)
    assert isinstance(song, dict)
    if cfg.runtime.devices < 1:
        raise MvgenError(f"runtime.devices={cfg.runtime.devices}; use 1 or more")
    accelerator = cfg.runtime.accelerator
    if accelerator == "auto":
        accelerator = "cuda" if str(cfg.runtime.device).startswith("cuda") else "cpu"
    retry = OmegaConf.to_container(cfg.runtime.retry, resolve=True)
    assert isinstance(retry, dict)
    return Pipeline(song=song, stages=Stages(**built), configs=configs, store=ArtifactStore(cfg.store.root),
                    run_dir=run_dir, progress=cfg.runtime.progress, devices=cfg.runtime.devices,
                    accelerator=accelerator, retry=retry, nodes=cfg.runtime.nodes, node=cfg.runtime.node)


class _JobFailed(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def _task(cfg: DictConfig, rerun_of: Path | None = None) -> None:
    """One run. Alone, a failure is one line and an exit status. In a sweep the job writes its one line to
    ``job_error.txt`` and returns, so the other jobs go on and the sweep's end reports every failed job
    (``mvgen.report.compare.failure_lines``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from mvgen.report.compare import JOB_ERROR

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        _run(cfg, run_dir, rerun_of)
    except _JobFailed as failed:
        if not in_sweep:
            print(f"mvgen: error: {failed.message}", file=sys.stderr)
            sys.exit(failed.code)
        (run_dir / JOB_ERROR).write_text(failed.message + "\n", encoding="utf-8")
    except Exception as exc:  # noqa: BLE001 -- one job's failure must not stop the sweep's other jobs
        if not in_sweep or cfg.runtime.debug:
            raise
        first = _first_line(str(exc))
        (run_dir / JOB_ERROR).write_text(f"{type(exc).__name__}: {first}; rerun this job with runtime.debug=true "
                                         "for the traceback\n", encoding="utf-8")


def _run(cfg: DictConfig, run_dir: Path, rerun_of: Path | None) -> None:
    from mvgen.model_catalog import preflight

    try:
        _carry_song(run_dir)
        preflight(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
        pipeline = build_pipeline(cfg, run_dir)
        if rerun_of is not None:
            pipeline.manifest_extra["rerun_of"] = str(rerun_of)
            _warn_if_config_drifted(cfg, rerun_of)
            from mvgen.util import read_json

            if (rerun_of / "review.json").is_file():  # approvals and new-seed requests carry over
                pipeline.previous_review = read_json(rerun_of / "review.json")
            if (rerun_of / "lyrics_edits.json").is_file():  # hand-set line times carry over
                pipeline.lyrics_edits = read_json(rerun_of / "lyrics_edits.json")
            if (rerun_of / "clip_review.json").is_file():  # clip approvals and re-roll requests carry over
                pipeline.clip_review = read_json(rerun_of / "clip_review.json")
        manifest = pipeline.run()
    except MvgenError as exc:
        if cfg.runtime.debug:
            raise
        raise _JobFailed(str(exc), 2) from None
    if manifest["status"] == "failed_segments":
        failures = manifest["failures"]
        listed = "; ".join(f"{f['stage']} {f['segment']}: {f['error']}" for f in failures[:3])
        raise _JobFailed(f"{len(failures)} segment(s) failed after retries ({listed}); everything else is saved in "
                         f"{run_dir}. Run the same command again to retry only those, or add "
                         "assemble.allow_gaps=true to make the master with stills in their place", 3)
    if manifest["status"] == "gaps":
        print(f"mvgen: warning: {len(manifest['gaps'])} segment(s) failed and hold a still in the master: "
              f"{', '.join(g['segment'] for g in manifest['gaps'])}", file=sys.stderr)
    if manifest["status"] == "awaiting_review":
        print(f"mvgen: frames are ready for review ({len(manifest['awaiting_review'])} segments to approve): "
              f"mvgen review {run_dir}  then  mvgen rerun {run_dir}")
        return
    for warning in manifest.get("warnings", [])[:5]:
        print(f"mvgen: warning: {warning}", file=sys.stderr)
    stages = manifest["stages"]
    hits = sum(s["hits"] for s in stages.values())
    misses = sum(s["misses"] for s in stages.values())
    print(f"mvgen: {run_dir / 'master.mp4'} ({manifest['master']['duration']:.2f} s, "
          f"{manifest['master']['frames']} frames) in {manifest['wall_seconds']:.1f} s; "
          f"store hits {hits}, misses {misses}")


def _carry_song(run_dir: Path) -> None:
    """Keep the run's song file in its run directory, so the directory reruns on another machine."""
    from hydra.core.hydra_config import HydraConfig

    from mvgen.safety import carry_song, find_song_file

    runtime = HydraConfig.get().runtime
    config_dirs = [s.path for s in runtime.config_sources if s.provider == "command-line" and s.schema == "file"]
    song_file = find_song_file(str(runtime.choices.get("song")), config_dirs[0] if config_dirs else None)
    if song_file is not None:
        carry_song(song_file.read_text(encoding="utf-8"), run_dir)


def _warn_if_config_drifted(cfg: DictConfig, original: Path) -> None:
    saved = OmegaConf.load(original / ".hydra" / "config.yaml")
    now = OmegaConf.to_container(cfg, resolve=False)
    before = OmegaConf.to_container(saved, resolve=False)
    assert isinstance(now, dict) and isinstance(before, dict)
    drifted = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
    if drifted:
        log.warning("conf/ has changed since %s: %s differ from the saved config; the rerun uses the current files",
                    original, ", ".join(drifted))


# ------------------------------------------------------------------------------ override checking
def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def describe_config_error(exc: BaseException) -> str:
    """One line from Hydra/OmegaConf's multi-line errors: the first line of each cause, plus the key."""
    parts: list[str] = []
    key, seen, options = None, set(), ""
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        line = _first_line(text).rstrip(".")
        if line and "$VALUE" not in line and not line.startswith(("Error merging override", "invalid literal")) \
                and line not in parts:
            parts.append(line)
        if "Available options" in text and not options:
            listing = text.split("Available options", 1)[1].split("Config search path")[0]
            names = [n.strip() for n in listing.splitlines()[1:]]
            names = [n for n in names if n and not n.startswith("base_")]
            options = "; available: " + ", ".join(names) if names else ""
        key = key or getattr(current, "full_key", None)
        current = current.__cause__ or current.__context__
    message = ": ".join(parts) or type(exc).__name__
    if key and key not in message:
        message += f" (key: {key})"
    return message + options


def check_overrides(overrides: Sequence[str], config_dir: str | None = None) -> None:
    """Compose the config once per sweep value; raise MvgenError with one line on the first failure."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except HydraException as exc:
            key, _, value = override.partition("=")
            hint = (f"; quote the value for Hydra: \"{key}='{value}'\"" if value and not value.startswith(("'", '"'))
                    else "")
            raise MvgenError(f"cannot parse the override {override!r}: {describe_config_error(exc)}{hint}") from exc
    parsed = parser.parse_overrides(list(overrides))
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    sweeps = [(o.input_line.split("=", 1)[0], list(o.sweep_string_iterator())) for o in parsed if o.is_sweep_override()]
    firsts = [f"{key}={values[0]}" for key, values in sweeps if values]
    trials = [fixed + firsts]
    for i, (key, values) in enumerate(sweeps):
        others = firsts[:i] + firsts[i + 1:]
        trials += [fixed + others + [f"{key}={v}"] for v in values[1:]]
    for trial in trials:
        compose_config(trial, config_dir, this_machine=False)


def compose_config(overrides: Sequence[str], config_dir: str | None = None, this_machine: bool = True) -> DictConfig:
    """The config these (non-sweep) overrides compose, resolved and within its limits; else one-line MvgenError.
    ``this_machine=False`` skips the limits that depend on this machine (a sweep's jobs may run on others)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from mvgen.limits import check_limits

    trial = list(overrides)
    if config_dir:
        trial.append(f"hydra.searchpath=[file://{Path(config_dir).resolve()}]")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=trial)
            OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
            check_limits(cfg, this_machine=this_machine)
            return cfg
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise MvgenError(describe_config_error(exc)) from exc
    finally:
        GlobalHydra.instance().clear()


def _check_song_file(args: Any) -> None:
    """The chosen song file is data before Hydra reads it (``mvgen.safety.check_song_file``)."""
    from mvgen.safety import check_song_file, find_song_file

    chosen = [o.split("=", 1)[1] for o in args.overrides if o.startswith("song=")]
    song_file = find_song_file(chosen[-1] if chosen else "demo", args.config_dir)
    if song_file is not None and "," not in (chosen[-1] if chosen else ""):
        check_song_file(song_file)


def _needs_check(args: Any) -> bool:
    """Only overrides can be wrong at compose time; without any, skip the extra composition (about 0.4 s)."""
    flags = (args.help, args.hydra_help, args.cfg, args.info, args.shell_completion)
    return bool(args.overrides) and not any(flags)


# ------------------------------------------------------------------------------------- file names
# Keys whose values are file names or model folders: taken literally, whatever characters they hold.
PATH_KEYS = ("path", "reference_image", "id_or_path", "upsampler_id_or_path", "vocals_model", "clip_model",
             "model", "root")
_OVERRIDE = re.compile(r"^(\+{0,2})([A-Za-z_][\w.]*)=(.*)$", re.DOTALL)
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_./~@%+-]*$")


def quote_path_values(argv: list[str], multirun: bool = False) -> list[str]:
    """Quote the values of file-name keys for Hydra's override grammar, which takes no spaces, non-ASCII
    letters, ``=``, ``,`` or brackets unquoted: ``music.path=/x/Été 1.wav`` becomes ``music.path='/x/Été 1.wav'``.
    In a multirun a comma still separates sweep values."""
    out = []
    for arg in argv:
        match = _OVERRIDE.match(arg)
        if match:
            prefix, key, value = match.groups()
            literal = key.rsplit(".", 1)[-1] in PATH_KEYS and not value.startswith(("'", '"'))
            if literal and not _PLAIN_VALUE.match(value) and not (multirun and "," in value):
                escaped = value.replace("'", "\\'")
                arg = f"{prefix}{key}='{escaped}'"
        out.append(arg)
    return out


# -------------------------------------------------------------------------------------------- help
HELP = """mvgen: make a music video from a song with open generative models.

Usage:
  mvgen [OVERRIDE ...]                 run the pipeline (default: preview profile on the demo song)
  mvgen -m KEY=A,B [OVERRIDE ...]      sweep; writes compare.html + compare.json in the sweep directory
  mvgen rerun RUN_DIR [OVERRIDE ...]   reproduce a run from RUN_DIR/.hydra into a new run directory
  mvgen new AUDIO LYRICS [--title T]   write songs/<id>.yaml from an audio file and a .txt or .lrc lyrics
                                       file, and print the command that makes the video
  mvgen song=path/to/song.yaml ...     run a song file from anywhere
  mvgen compare SWEEP_DIR              (re)build compare.html + compare.json for a sweep directory
  mvgen review RUN_DIR [--port 8765]   the review page on 127.0.0.1: fix lyric timing, approve frames and clips
  mvgen eval RUN_DIR [TRUTH]           line-onset accuracy of RUN_DIR/annotation.json against truth.json
                                       or a JamendoLyrics CSV (start_time,end_time,lyrics_line)
  mvgen eval DEV_SET_DIR [--model M] [--out DIR]
                                       align a folder of real songs (audio + lyrics.lrc) and report
                                       per song and overall (see README, "Real-song dev set")
  mvgen models [OVERRIDE ...]          the models that configuration loads: id or folder, revision, download
                                       size, licence, where it is looked for and whether it is there; peak GPU
                                       memory and whether the visible GPU fits (a run with a model missing
                                       stops before loading any, naming the command that fetches it)
  mvgen --cfg job                      print the composed config (any KEY=VALUE there can be overridden)
  mvgen --info defaults                show which file fills each config group
  mvgen --hydra-help                   Hydra's own flags (--config-dir, --multirun, ...)

Stages: music -> annotate -> segment -> frames + review -> render + assemble. Every artifact is
cached in the store (store.root, shared by all runs) keyed by its config and inputs: a second
identical run computes nothing. Each run writes outputs/YYYY-MM-DD/HH-MM-SS-ffffff/ with
master.mp4, timeline.png, contact_sheet.png and manifest.json.
Errors are one line; add runtime.debug=true for the traceback.

Config groups (GROUP=OPTION; files in {conf}):
{groups}

Examples:
  mvgen segment.max_seconds=6 frames.candidates=2 render=animatic
  mvgen music=file music.path=my_song.flac song=my_song
  mvgen -m render.zoom=0.05,0.2
  mvgen -m prompts=default,noir
"""


def help_text() -> str:
    """The --help page, built from conf/ without composing a config (Hydra's group listing takes seconds)."""
    lines = []
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra"):
        options = sorted(f.stem for f in group.glob("*.yaml"))
        lines.append(f"  {group.name + ':':10s} {', '.join(options)}")
    return HELP.format(conf=CONF_DIR, groups="\n".join(lines))


# ------------------------------------------------------------------------------------- subcommands
def _scratch_dir(prefix: str) -> Path:
    """A temporary config folder for this process, removed when it exits."""
    import atexit
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, scratch, True)
    return scratch


def _rerun(argv: list[str]) -> tuple[list[str], Path]:
    """Turn ``rerun RUN_DIR [OVERRIDES]`` into the command line that reproduces it (plus any new overrides).
    The run directory's files are read as data and checked (``mvgen.safety``): a shared run directory can
    choose mvgen options and set mvgen values, nothing else."""
    from mvgen.safety import rerun_arguments

    if not argv:
        raise MvgenError("usage: mvgen rerun RUN_DIR [OVERRIDE ...]")
    run_dir = Path(argv[0])
    scratch = _scratch_dir("mvgen-rerun-")
    replay = rerun_arguments(run_dir, scratch)
    shown = [a for a in replay if "=" in a and not a.startswith(("song=", "+rerun="))] + argv[1:]
    print(f"mvgen: rerun of {run_dir}: its saved config and song, options {shown}")
    return replay + argv[1:], run_dir.resolve()


def _compare(argv: list[str]) -> None:
    from mvgen.report.compare import write_compare

    if len(argv) != 1 or not Path(argv[0]).is_dir():
        raise MvgenError("usage: mvgen compare SWEEP_DIR (a multirun directory with numbered job folders)")
    print(f"mvgen: {write_compare(argv[0])}")


# -------------------------------------------------------------------------------------------- main
def _review_cli(argv: list[str]) -> None:
    from mvgen.review_server import review_cli

    review_cli(argv)


def _eval_cli(argv: list[str]) -> None:
    from mvgen.evaluate import evaluate_cli

    evaluate_cli(argv)


def _new_cli(argv: list[str]) -> None:
    from mvgen.new_song import new_song_cli

    new_song_cli(argv)


def _song_file_argument(args_in: list[str]) -> list[str]:
    """``song=path/to/my_song.yaml`` runs a song file from anywhere: it is offered to Hydra as the ``song``
    option of a scratch config folder (``--config-dir``), so no file has to move into conf/song/."""
    import shutil

    chosen = [i for i, a in enumerate(args_in) if a.startswith("song=") and a.endswith((".yaml", ".yml"))]
    if not chosen:
        return args_in
    index = chosen[-1]
    path = Path(args_in[index].split("=", 1)[1].strip("'\"")).expanduser()
    if not path.is_file():
        raise MvgenError(f"song file not found: {path}")
    if "--config-dir" in args_in or any(a.startswith("--config-dir=") for a in args_in):
        raise MvgenError("give the song as song=<file>.yaml or through --config-dir, not both")
    scratch = _scratch_dir("mvgen-song-")
    name = re.sub(r"[^A-Za-z0-9_]", "_", path.stem) or "song"
    (scratch / "song").mkdir()
    shutil.copyfile(path, scratch / "song" / f"{name}.yaml")
    return ["--config-dir", str(scratch)] + args_in[:index] + [f"song={name}"] + args_in[index + 1:]


def _models_cli(argv: list[str]) -> None:
    """``mvgen models [OVERRIDES]``: what the config those overrides compose will load (``mvgen.model_catalog``)."""
    from hydra._internal.utils import get_args_parser

    from mvgen.model_catalog import report

    if {"-h", "--help"} & set(argv):
        print("usage: mvgen models [OVERRIDE ...]  (the same overrides as a run, e.g. profile=production)")
        return
    args = get_args_parser().parse_args(quote_path_values(_song_file_argument(argv)))
    if args.multirun or "," in " ".join(o for o in args.overrides if not o.startswith("hydra.")):
        raise MvgenError("mvgen models takes one configuration, not a sweep; drop -m and the comma lists")
    _check_song_file(args)
    cfg = compose_config(args.overrides, args.config_dir)
    print(report(OmegaConf.to_container(cfg, resolve=True)))  # type: ignore[arg-type]


def _help(argv: list[str]) -> None:
    print(help_text(), end="")


def subcommand_usage(name: str) -> str:
    """The lines of the main help that describe ``mvgen NAME``, for ``mvgen NAME --help``."""
    usage, inside = [], False
    for line in HELP.splitlines():
        if line.startswith("  mvgen "):
            inside = line.split()[1] == name
        elif not line.startswith("      "):
            inside = False
        if inside:
            usage.append(line)
    return "Usage:\n" + "\n".join(usage) + "\n"


# Subcommands that run without Hydra; anything else is a Hydra command line (``rerun`` turns into one).
SUBCOMMANDS: dict[str, Callable[[list[str]], None]] = {
    "--help": _help, "-h": _help, "help": _help, "compare": _compare, "review": _review_cli, "eval": _eval_cli,
    "new": _new_cli, "models": _models_cli}


def main(argv: Sequence[str] | None = None) -> None:
    import hydra
    # Hydra has no public API for its command-line parser; mvgen needs it to check overrides before Hydra runs.
    from hydra._internal.utils import get_args_parser

    args_in = list(sys.argv[1:] if argv is None else argv)
    rerun_of = None
    try:
        if args_in and args_in[0] in ("eval", "compare", "rerun") and {"-h", "--help"} & set(args_in[1:]):
            print(subcommand_usage(args_in[0]), end="")
            return
        if args_in and args_in[0] in SUBCOMMANDS:
            SUBCOMMANDS[args_in[0]](args_in[1:])
            return
        if args_in and args_in[0] == "rerun":
            args_in, rerun_of = _rerun(args_in[1:])
        args_in = _song_file_argument(args_in)
        args_in = quote_path_values(args_in, multirun=any(a in ("-m", "--multirun") for a in args_in))
        args = get_args_parser().parse_args(args_in)
        _check_song_file(args)
        if _needs_check(args):
            check_overrides(args.overrides, args.config_dir)
    except MvgenError as exc:
        print(f"mvgen: error: {exc}", file=sys.stderr)
        sys.exit(2)

    def task(cfg: DictConfig) -> None:
        _task(cfg, rerun_of)

    sys.argv = [sys.argv[0]] + args_in
    multirun = bool(args.multirun)
    debug = "runtime.debug=true" in args.overrides
    if multirun and not debug:  # a launcher's failure (a worker that died) comes back to mvgen, not Hydra's printer
        os.environ.setdefault("HYDRA_FULL_ERROR", "1")
        os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")  # Ray's copy of a dead job's error: reported below
    try:
        hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(task)()
    except KeyboardInterrupt:
        print("\nmvgen: interrupted; finished segments are kept; run the same command to resume", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 -- the launcher broke off the sweep: one line per job, then the cause
        if not multirun or debug:
            raise
        from mvgen.report.compare import report_sweep

        report_sweep(stopped_by=f"{type(exc).__name__}: {_first_line(str(exc)).split('. ')[0]}")
        sys.exit(3)
    if multirun:
        from mvgen.report.compare import SWEEP

        if SWEEP.get("failed"):
            sys.exit(3)


if __name__ == "__main__":
    main()
