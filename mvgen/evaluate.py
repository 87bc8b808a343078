"""Alignment accuracy: line-onset errors of an annotation against ground truth.

Ground truth, matched to the annotation's lyric lines in order:
- the demo song's ``truth.json`` ({"lines": [{"text", "start", ...}]});
- a JamendoLyrics-style CSV with a ``start_time,end_time,lyrics_line`` header (one row per line).

    mvgen eval RUN_DIR_OR_ANNOTATION [TRUTH]     (TRUTH defaults to RUN_DIR/truth.json)
    mvgen eval DEV_SET_DIR [--model NAME] [--out DIR]

A dev set is a folder of songs, each a real recording with its line timings: ``manifest.json`` at the top
([{"id", "language", "audio", "lrc"}], paths relative to the folder), or one sub-folder per song holding one
audio file and ``lyrics.lrc`` (language from ``meta.json`` {"language": "fr"}, else English). The LRC's
lines are the lyrics to align and their timestamps the truth. Each song runs through the default annotate
stage (``StableTsAligner`` with the schema's defaults); the table and ``eval.json`` report per song and
overall: songs at line-onset MAE <= 0.5 s, lines more than 5 s off, the share of lines more than 1 s off
that carry a flag, and the real-time factor.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

from mvgen.errors import MvgenError
from mvgen.util import read_json

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac")


def load_truth(path: Path) -> list[dict[str, Any]]:
    """Truth lines [{"start", "text"}] from truth.json or a JamendoLyrics CSV."""
    if not path.is_file():
        raise MvgenError(f"ground truth not found: {path}")
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "start_time" not in reader.fieldnames:
                raise MvgenError(f"{path} needs a header with start_time,end_time,lyrics_line")
            return [{"start": float(row["start_time"]), "end": float(row.get("end_time") or row["start_time"]),
                     "text": row.get("lyrics_line", "")} for row in reader]
    data = read_json(path)
    if "lines" not in data:
        raise MvgenError(f"{path} is not a truth.json (no 'lines')")
    return data["lines"]


def line_onset_report(annotation: dict[str, Any], truth_lines: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
    """Mean/median/max absolute line-onset error and the share of lines within 0.3 s and 0.5 s."""
    lines = truth_lines["lines"] if isinstance(truth_lines, dict) else truth_lines
    aligned = sorted((p["line"], p["start"]) for p in annotation["phrases"] if p["kind"] == "lyric")
    if len(aligned) != len(lines):
        raise MvgenError(f"the annotation has {len(aligned)} lyric lines, the truth {len(lines)}; "
                         "they must describe the same lyrics")
    errors = [abs(start - line["start"]) for (_, start), line in zip(aligned, lines)]
    if not errors:
        raise MvgenError("no lyric lines to compare")
    return {
        "lines": len(errors),
        "mae": round(statistics.fmean(errors), 4),
        "median": round(statistics.median(errors), 4),
        "max": round(max(errors), 4),
        "within_0.3": round(sum(e <= 0.3 for e in errors) / len(errors), 4),
        "within_0.5": round(sum(e <= 0.5 for e in errors) / len(errors), 4),
        "errors": [round(e, 4) for e in errors],
    }


def dev_set_songs(folder: Path) -> list[dict[str, Any]]:
    """The songs of a dev set folder: {"id", "language", "audio": Path, "lrc": Path, "truth_offset_s"}.

    ``truth_offset_s`` (manifest only, default 0) shifts an LRC timed to another edit of the recording; it is
    measured against the vocal stem's onsets by ``bench/devset/check_truth.py``, never against an aligner."""
    manifest = folder / "manifest.json"
    if manifest.is_file():
        entries = read_json(manifest)
        songs = [{"id": e["id"], "language": e.get("language", "en"), "audio": folder / e["audio"],
                  "lrc": folder / e["lrc"], "truth_offset_s": float(e.get("truth_offset_s", 0.0))}
                 for e in entries]
    else:
        songs = []
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "lyrics.lrc").is_file()):
            audio = [f for f in sorted(sub.iterdir()) if f.suffix.lower() in AUDIO_SUFFIXES]
            meta = read_json(sub / "meta.json") if (sub / "meta.json").is_file() else {}
            if audio:
                songs.append({"id": sub.name, "language": meta.get("language", "en"), "audio": audio[0],
                              "lrc": sub / "lyrics.lrc", "truth_offset_s": 0.0})
    if not songs:
        raise MvgenError(f"{folder} holds no songs: add manifest.json or sub-folders with an audio file and "
                         "lyrics.lrc")
    for song in songs:
        for key in ("audio", "lrc"):
            if not song[key].is_file():
                raise MvgenError(f"dev set song {song['id']}: {song[key]} not found")
    return songs


def evaluate_song(song: dict[str, Any], model: str, out_dir: Path) -> dict[str, Any]:
    """Align one dev-set song with the default annotate settings and score it against its LRC."""
    import dataclasses
    import time

    from mvgen.media.audio import decode_audio, write_wav
    from mvgen.schema import StableTsAlignConfig
    from mvgen.stages.annotate import StableTsAligner, parse_lrc

    truth = [{**line, "start": line["start"] + song.get("truth_offset_s", 0.0)}
             for line in parse_lrc(song["lrc"].read_text(encoding="utf-8"))]
    if len(truth) < 2:
        raise MvgenError(f"dev set song {song['id']}: {song['lrc']} has fewer than two timed lines")
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = decode_audio(song["audio"], 48000, channels=2)
    write_wav(out_dir / "song.wav", samples, 48000)
    defaults = {f.name: f.default for f in dataclasses.fields(StableTsAlignConfig)
                if f.name != "_target_" and isinstance(f.default, (int, float, str, bool)) and
                not str(f.default).startswith("${")}
    aligner = StableTsAligner(**{**defaults, "model": model, "language": song["language"], "device": "cpu"})
    start = time.perf_counter()
    aligner.annotate({"lyrics": "\n".join(line["text"] for line in truth)}, out_dir / "song.wav", out_dir)
    seconds = time.perf_counter() - start
    annotation = read_json(out_dir / "annotation.json")
    report = line_onset_report(annotation, truth)
    flagged = {f["line"] for f in annotation["flags"]}
    far = [i for i, e in enumerate(report["errors"]) if e > 1.0]
    return {"id": song["id"], "language": song["language"], "duration": round(len(samples) / 48000, 2),
            **{k: report[k] for k in ("lines", "mae", "median", "max", "within_0.3", "within_0.5")},
            "over_1s": len(far), "over_5s": sum(e > 5.0 for e in report["errors"]),
            "over_1s_flagged": sum(i in flagged for i in far), "flagged": len(flagged),
            "rtf": round(seconds / (len(samples) / 48000), 4), "errors": report["errors"]}


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The dev-set figures over some songs' rows (``evaluate_song``)."""
    far = sum(r["over_1s"] for r in rows)
    return {"songs": len(rows), "songs_mae_within_0.5": sum(r["mae"] <= 0.5 for r in rows),
            "lines": sum(r["lines"] for r in rows), "lines_over_5s": sum(r["over_5s"] for r in rows),
            "lines_over_1s": far,
            "over_1s_flagged_share": round(sum(r["over_1s_flagged"] for r in rows) / far, 4) if far else 1.0,
            "median_song_mae": round(statistics.median(r["mae"] for r in rows), 4),
            "rtf": round(statistics.fmean(r["rtf"] for r in rows), 4)}


def evaluate_dev_set(folder: Path, model: str = "auto", out: Path | None = None) -> dict[str, Any]:
    from tqdm import tqdm

    songs = dev_set_songs(folder)
    out = out or folder / "_eval"
    rows = [evaluate_song(song, model, out / song["id"]) for song in tqdm(songs, desc="eval", unit="song")]
    summary = {**aggregate(rows), "model": model,
               "by_language": {language: aggregate([r for r in rows if r["language"] == language])
                               for language in sorted({r["language"] for r in rows})}}
    result = {"summary": summary, "songs": rows}
    from mvgen.util import write_json

    write_json(out / "eval.json", result)
    return result


def format_dev_set(result: dict[str, Any]) -> str:
    head = f"{'song':32s} {'lang':4s} {'lines':>5s} {'MAE':>6s} {'median':>6s} {'max':>6s} {'>1s':>4s} {'>5s':>4s} " \
           f"{'flag>1s':>7s} {'RTF':>5s}"
    rows = [head] + [f"{r['id'][:32]:32s} {r['language']:4s} {r['lines']:5d} {r['mae']:6.2f} {r['median']:6.2f} "
                     f"{r['max']:6.1f} {r['over_1s']:4d} {r['over_5s']:4d} {r['over_1s_flagged']:3d}/{r['over_1s']:<3d} "
                     f"{r['rtf']:5.2f}" for r in result["songs"]]

    def line(s: dict[str, Any]) -> str:
        return (f"{s['songs_mae_within_0.5']}/{s['songs']} songs at MAE <= 0.5 s; {s['lines_over_5s']} of "
                f"{s['lines']} lines > 5 s off; {s['lines_over_1s']} lines > 1 s off, "
                f"{100 * s['over_1s_flagged_share']:.0f} % of them flagged; median song MAE "
                f"{s['median_song_mae']:.2f} s; RTF {s['rtf']:.3f}")

    summary = result["summary"]
    rows.append(f"{line(summary)} ({summary['model']})")
    if len(summary["by_language"]) > 1:
        rows += [f"  {language}: {line(part)}" for language, part in summary["by_language"].items()]
    return "\n".join(rows)


def evaluate_cli(argv: list[str]) -> dict[str, Any]:
    options = {"--model": "auto", "--out": None}
    positional = []
    args = iter(argv)
    for arg in args:
        if arg in options:
            options[arg] = next(args, None)
            if options[arg] is None:
                raise MvgenError(f"{arg} needs a value")
        else:
            positional.append(arg)
    if len(positional) == 1 and Path(positional[0]).is_dir() and not (Path(positional[0]) / "annotation.json").exists():
        result = evaluate_dev_set(Path(positional[0]), str(options["--model"]),
                                  Path(options["--out"]) if options["--out"] else None)
        print(format_dev_set(result))
        return result
    argv = positional
    if not argv or len(argv) > 2:
        raise MvgenError("usage: mvgen eval RUN_DIR_OR_ANNOTATION_JSON [TRUTH_JSON_OR_CSV] | "
                         "mvgen eval DEV_SET_DIR [--model NAME] [--out DIR]")
    target = Path(argv[0])
    annotation_path = target / "annotation.json" if target.is_dir() else target
    if not annotation_path.is_file():
        raise MvgenError(f"no annotation at {annotation_path}")
    truth_path = Path(argv[1]) if len(argv) == 2 else annotation_path.parent / "truth.json"
    report = line_onset_report(read_json(annotation_path), load_truth(truth_path))
    print(f"line onsets: {report['lines']} lines, MAE {report['mae']:.3f} s, median {report['median']:.3f} s, "
          f"max {report['max']:.3f} s, within 0.3 s {100 * report['within_0.3']:.0f} %, "
          f"within 0.5 s {100 * report['within_0.5']:.0f} %")
    return report
