"""Stage 2, annotate: lyric timing for the song -> ``annotation.json`` (+ ``song.lrc``, ``song.srt``).

Backends:
- ``StableTsAligner``: stable-ts forced alignment (``align``: the known lyrics, not a transcription) on
  a Whisper model (see ``whisper_models``), with the repairs real songs need:
  * section tags are stripped before alignment and kept as phrase metadata;
  * one phrase per lyric line (``original_split=True``); a line's onset is held to at most
    ``max_onset_lead`` before its first word ends (stable-ts stretches first words back into the music);
  * vocalise lines ("ooh ooh", "la la", "hey") are left out of the main alignment, where one can drag
    every later line onto itself, and are then aligned alone inside the gap between their neighbours;
  * a run of lines squeezed into too little time (collapse) or out of order is re-aligned inside the
    window between its good neighbours;
  * optionally (``isolate_vocals``), the vocals are first extracted with ACE-Step's own extraction task
    and aligned alone (the stem is kept as ``vocals.wav``); off by default, as it needs the weights;
  * gaps without vocals of at least ``instrumental_min_gap`` become instrumental phrases, so the
    timeline covers the song;
  * a quality gate flags low word probability, implausible words per second, words stretched over
    music and lines out of order; ``gate: warn`` logs a summary, ``gate: fail`` stops the run.
- ``LrcAnnotation``: timings from a timed-lyrics (LRC) file instead of alignment.

annotation.json, version 1 (``ANNOTATION_SCHEMA`` below is the JSON Schema)::

    {"version": 1, "duration": s, "language": "en", "aligner": {...},
     "phrases": [{"index", "kind": "lyric"|"instrumental", "text", "line" (lyric line index or null),
                  "section", "section_index", "performers": [names], "start", "end", "confidence",
                  "vocalise", "flags": [...],
                  "words": [{"word", "start", "end", "probability"}]}],
     "flags": [{"phrase", "line", "problem"}]}
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from mvgen.errors import MvgenError
from mvgen.lyrics import LyricLine, parse_lyrics, performer_names
from mvgen.media.audio import read_wav, to_mono_16k, write_wav
from mvgen.util import read_json, write_json
from mvgen.stages.protocols import AnnotateStage

from mvgen.stages.vocals import HOP_SECONDS as HOP_SECONDS_VOICE, VocalActivity, active_runs, spleeter_vocals

RING = 1.0  # seconds after a line's aligned end during which its voice (smoothed) may still be heard
SMOOTH_SPILL = 0.6  # voice activity starts up to half its 1 s smoothing window (plus a hop) before the voice

log = logging.getLogger("mvgen")

ANNOTATION_JSON, SONG_LRC, SONG_SRT, VOCALS_WAV = "annotation.json", "song.lrc", "song.srt", "vocals.wav"
ANNOTATION_VERSION = 1
WHISPER_RATE = 16000
MAX_WORD_GAP = 1.5  # seconds of silence inside one lyric line beyond which a word is taken as misplaced

# Non-lexical singing: a token made only of these syllables, once repeated letters are squeezed ("yeeaha"
# -> "yeaha" = "ye" + "a" + "ha"; "dam", "doo", "shoo", "whoa"). Real words that happen to split into them are
# rare, and a line counts as vocalise only when every token does.
_VOCALISE_SYLLABLES = ("ba", "bam", "bap", "bop", "da", "dam", "dum", "dee", "doo", "la", "lala", "na", "nah",
                       "pa", "pam", "ram", "sha", "shoo", "ya", "yah", "yea", "yeah", "hey", "hei", "ha", "oh",
                       "ah", "aha", "uh", "eh", "ay", "oo", "ooh", "mm", "hm", "hmm", "woo", "whoa", "wow",
                       "ooo", "do", "di", "m", "sho", "wo", "wop", "huh", "ho", "hoh", "hoo")
_VOCALISE_TOKEN = re.compile(f"^(?:{'|'.join(sorted(_VOCALISE_SYLLABLES, key=len, reverse=True))})+$")
_WORD_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")

ANNOTATION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "mvgen annotation.json",
    "type": "object",
    "required": ["version", "duration", "language", "phrases", "flags"],
    "properties": {
        "version": {"const": ANNOTATION_VERSION},
        "duration": {"type": "number", "minimum": 0},
        "language": {"type": "string"},
        "aligner": {"type": "object"},
        "phrases": {"type": "array", "items": {
            "type": "object",
            "required": ["index", "kind", "text", "line", "section", "section_index", "start", "end",
                         "confidence", "words"],
            "properties": {
                "index": {"type": "integer", "minimum": 0},
                "kind": {"enum": ["lyric", "instrumental"]},
                "text": {"type": "string"},
                "line": {"type": ["integer", "null"]},
                "section": {"type": "string"},
                "section_index": {"type": "integer", "minimum": 1},
                "start": {"type": "number"}, "end": {"type": "number"},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "vocalise": {"type": "boolean"},
                "flags": {"type": "array", "items": {"type": "string"}},
                "words": {"type": "array", "items": {
                    "type": "object", "required": ["word", "start", "end", "probability"],
                    "properties": {"word": {"type": "string"}, "start": {"type": "number"},
                                   "end": {"type": "number"}, "probability": {"type": "number"}}}},
            }}},
        "flags": {"type": "array", "items": {"type": "object", "required": ["phrase", "problem"]}},
    },
}


def is_vocalise(text: str) -> bool:
    """True for lines of non-lexical singing only: "Ooh ooh", "la la la", "Hey!", "ba da da dam", "yeeaha"."""
    tokens = [re.sub(r"(.)\1+", r"\1", t) for t in _WORD_TOKEN.findall(text.lower())]
    return bool(tokens) and all(_VOCALISE_TOKEN.match(t) for t in tokens)


class StableTsAligner(AnnotateStage):
    def __init__(self, model: str = "auto", device: str = "cpu", compute_type: str = "int8", language: str = "en",
                 max_onset_lead: float = 0.5, instrumental_min_gap: float = 2.0, gate: str = "warn",
                 min_confidence: float = 0.2, max_words_per_second: float = 7.0,
                 min_words_per_second: float = 0.2, max_word_seconds: float = 3.0, allow_pickle: bool = False,
                 isolate_vocals: bool = False, vocals_model: str = "ACE-Step/acestep-v15-xl-turbo-diffusers",
                 vocals_dtype: str = "bfloat16", vocals_steps: int = 8, seed: int = 0, anchors: bool = True,
                 vocal_guide: str = "spleeter", snap_to_onsets: bool = True) -> None:
        from mvgen.stages.whisper_models import resolve_name

        if gate not in ("warn", "fail"):
            raise MvgenError(f"annotate.gate={gate!r}; use warn or fail")
        if vocal_guide not in ("spleeter", "none"):
            raise MvgenError(f"annotate.vocal_guide={vocal_guide!r}; use spleeter or none")
        if language != "en" and resolve_name(model, language).endswith(".en"):
            raise MvgenError(f"the song's language is {language!r} but annotate.model={model} is English-only; "
                             "use annotate.model=base or auto")
        self.model_name, self.device, self.compute_type = model, device, compute_type
        self.language, self.allow_pickle = language, allow_pickle
        self.max_onset_lead = max_onset_lead
        self.instrumental_min_gap = instrumental_min_gap
        self.gate = gate
        self.limits = {"min_confidence": min_confidence, "max_wps": max_words_per_second,
                       "min_wps": min_words_per_second, "max_word_seconds": max_word_seconds}
        self.isolate_vocals, self.vocals_model = isolate_vocals, vocals_model
        self.vocals_dtype, self.vocals_steps, self.seed = vocals_dtype, vocals_steps, seed
        self.anchors, self.vocal_guide, self.snap_to_onsets = anchors, vocal_guide, snap_to_onsets
        self._voice: VocalActivity | None = None  # the vocal activity of the song being aligned

    # ----------------------------------------------------------------------------------------- API
    def annotate(self, song: dict[str, Any], song_wav: Path, out_dir: Path) -> dict[str, Any]:
        from mvgen.stages.whisper_models import load_aligner

        lines = parse_lyrics(song["lyrics"], performer_names(song))
        samples, rate = read_wav(song_wav)
        duration = len(samples) / rate
        if len(lines) > max(4, duration / 0.5):
            raise MvgenError(f"{len(lines)} lyric lines cannot be sung in a {duration:.0f} s song; check that "
                             "song.lyrics belongs to this audio")
        activity = self._activity(samples, rate)
        self._voice = activity  # read by _phrase while this song is aligned
        if self.isolate_vocals:
            samples = self._vocals(song, samples, rate)
            write_wav(out_dir / VOCALS_WAV, samples, rate)
        audio = to_mono_16k(samples, rate)
        aligner = load_aligner(self.model_name, self.language, self.device, self.compute_type, self.allow_pickle)
        sung = activity.span() if activity is not None else None
        first, last = (max(0.0, sung[0] - SPAN_PAD), min(duration, sung[1] + SPAN_PAD)) if sung else (0.0, duration)

        lexical = [line for line in lines if not is_vocalise(line.text)] or lines
        vocalise = [line for line in lines if line not in lexical]
        phrases = {line.index: phrase
                   for line, phrase in zip(lexical, self._align(aligner, audio, lexical, first, last))}
        evidence = self._evidence(aligner, audio, lexical) if self.anchors else Evidence({}, {}, transcribed=False)
        if evidence.anchors:
            self._fill_between_anchors(aligner, audio, lexical, phrases, evidence, first, last, activity)
        self._repair_collapse(aligner, audio, lexical, phrases, first, last)
        if activity is not None:
            self._repair_unvoiced(aligner, audio, lexical, phrases, first, last, activity)
        flag_uncertain(lexical, phrases, evidence)
        # The words were not heard: most lines unplaced, or half of them when the free transcription matched
        # no lyric word at all. Then where the voice is says more than the alignment.
        unplaced = sum(phrases[line.index]["confidence"] < self.limits["min_confidence"] for line in lexical)
        nothing_heard = evidence.transcribed and not evidence.heard
        not_heard = 2 * unplaced > len(lexical) or (nothing_heard and 2 * unplaced >= len(lexical))
        laid_out = activity is not None and not_heard and layout_by_voice(lines, activity, first, last, phrases)
        for run in [] if laid_out else _runs(vocalise):
            before = [phrases[i]["end"] for i in phrases if i < run[0].index]
            after = [phrases[i]["start"] for i in phrases if i > run[-1].index]
            start, end = max(before, default=first), min(after, default=last)
            if activity is not None and layout_by_voice(run, activity, start, end, phrases,
                                                        "vocalise: placed where the voice is between its neighbours"):
                continue  # nonsense syllables are where Whisper is weakest: the voice itself says more
            for line, phrase in zip(run, self._align(aligner, audio, run, start, end)):
                phrase["vocalise"] = True
                phrase["flags"].append("vocalise: aligned alone between its neighbours")
                phrases[line.index] = phrase
        ordered = [phrases[line.index] for line in lines]
        if activity is not None and not laid_out:
            if self.snap_to_onsets:
                snap_to_onsets(ordered, activity.onsets)
            flag_unvoiced(ordered, activity)
        flag_quality(ordered, self.limits)
        annotation = build_annotation(ordered, duration, self.language, self.instrumental_min_gap,
                                      {"backend": "stable-ts", "model": aligner.name, "source": aligner.source,
                                       "compute_type": self.compute_type, "anchors": len(evidence.anchors),
                                       "heard_lines": len(evidence.heard),
                                       "vocals": self.vocals_model if self.isolate_vocals else None,
                                       "vocal_guide": self.vocal_guide, "laid_out_by_voice": bool(laid_out),
                                       "sung_span": [round(t, 2) for t in sung] if sung else None,
                                       "voiced": activity.stretches() if activity is not None else None})
        lyric = [p for p in annotation["phrases"] if p["kind"] == "lyric"]
        unplaced = sum(p["confidence"] < self.limits["min_confidence"] for p in lyric)
        if lyric and unplaced > len(lyric) / 2:  # most lines unheard: probably the wrong lyrics for this audio
            annotation["lyrics_mismatch"] = {"unplaced": unplaced, "lines": len(lyric)}
        summary = quality_summary(annotation)
        if annotation["flags"] and self.gate == "fail":
            raise MvgenError(f"alignment quality gate failed: {summary}; check the lyrics match the song, "
                             "or set annotate.gate=warn to continue")
        log.info("annotate: %s", summary)
        write_annotation(annotation, out_dir)
        return {"phrases": len(annotation["phrases"]), "flags": len(annotation["flags"])}

    def _activity(self, samples: np.ndarray, rate: int) -> "VocalActivity | None":
        """Where the voice is, from the Spleeter vocal stem (``vocal_guide=spleeter``), or None."""
        if self.vocal_guide == "none":
            return None
        return VocalActivity.from_stem(spleeter_vocals(samples, rate), rate)

    def _vocals(self, song: dict[str, Any], samples: np.ndarray, rate: int) -> np.ndarray:
        """The vocal stem, by ACE-Step's own extraction task (``task_type="extract"``, track "vocals")."""
        import torch
        from diffusers import AceStepPipeline

        from mvgen.media.audio import resample
        from mvgen.models import load_pipeline

        pipe = load_pipeline(AceStepPipeline, self.vocals_model, None, self.vocals_dtype, self.device)
        source = resample(samples, rate, pipe.sample_rate)
        result = pipe(prompt=song.get("style") or "", lyrics=song["lyrics"], task_type="extract",
                      track_name="vocals", src_audio=torch.from_numpy(np.ascontiguousarray(source.T)),
                      vocal_language=self.language, num_inference_steps=self.vocals_steps,
                      generator=torch.Generator(device="cpu").manual_seed(self.seed))
        stem = result.audios[0].float().cpu().numpy().T
        if not np.isfinite(stem).all():
            raise RuntimeError("vocal extraction produced non-finite audio")
        stem = resample(np.ascontiguousarray(stem[:, :2]), pipe.sample_rate, rate)
        return stem[: len(samples)] if len(stem) >= len(samples) else np.pad(stem, ((0, len(samples) - len(stem)), (0, 0)))

    # ----------------------------------------------------------------------------------- alignment
    def _evidence(self, aligner: Any, audio: np.ndarray, lines: list[LyricLine]) -> "Evidence":
        """Transcribe the song (word timestamps) and read anchors from it (``transcript_evidence``)."""
        if self.language in UNSPACED_LANGUAGES:
            return Evidence({}, {}, transcribed=False)  # words are not space-separated: no token matching
        captured = io.StringIO()
        with contextlib.redirect_stderr(captured):
            try:
                try:
                    result = aligner.model.transcribe(audio, language=self.language, verbose=None, beam_size=1,
                                                      condition_on_previous_text=False, temperature=0.0)
                except TypeError:  # a backend without those decoding options
                    result = aligner.model.transcribe(audio, language=self.language, verbose=None)
            except (ValueError, RuntimeError) as exc:  # anchors are a refinement: align without them
                log.warning("annotate: no anchors, %s cannot transcribe (%s)", aligner.name,
                            str(exc).splitlines()[0][:160])
                return Evidence({}, {}, transcribed=False)
        heard = [(w.word, float(w.start)) for w in result.all_words()]
        return transcript_evidence(lines, heard)

    def _fill_between_anchors(self, aligner: Any, audio: np.ndarray, lines: list[LyricLine],
                              phrases: dict[int, dict[str, Any]], evidence: "Evidence", first: float,
                              last: float, activity: "VocalActivity | None" = None) -> None:
        """Anchor-and-fill: each group of lines from one anchor to the next is also force-aligned inside its own
        window. The group takes the windowed alignment where the whole-song alignment put one of its lines
        outside that window (the line had drifted across an anchor), or where the windowed words are clearly
        more probable. Otherwise the whole-song alignment stays, except for a run of lines the two place more
        than ``DISAGREEMENT`` apart that the windowed alignment puts clearly more where the voice is, and for
        such a line that the windowed alignment puts in a stretch of voice no other line claims. Either way, a
        line the two place more than ``DISAGREEMENT`` apart is flagged."""
        for group, start, end in anchor_windows(lines, evidence.anchors, first, last):
            windowed = self._align(aligner, audio, group, start, end)
            whole = [phrases[line.index] for line in group]
            drifted = any(not start - 1.0 <= phrase["start"] <= end + 1.0 for phrase in whole)
            drifted = drifted or _mean_confidence(windowed) > _mean_confidence(whole) + CONFIDENCE_MARGIN
            apart = [k for k in range(len(group)) if abs(whole[k]["start"] - windowed[k]["start"]) > DISAGREEMENT]
            taken = set(range(len(group))) if drifted else set()
            for run in [] if drifted or activity is None else _runs(apart, key=lambda k: k):
                if _voiced_share([windowed[k] for k in run], activity) > \
                        _voiced_share([whole[k] for k in run], activity) + VOICED_MARGIN and \
                        _fits_between(windowed[run[0]]["start"], windowed[run[-1]]["end"], whole, run):
                    taken.update(run)
            for k in [] if drifted or activity is None else [k for k in apart if k not in taken]:
                if _alone_in_voice(windowed[k]["start"], activity, phrases.values(), group[k].index) and \
                        _fits_between(windowed[k]["start"], windowed[k]["end"], whole, [k]):
                    taken.add(k)  # the voice there is otherwise unexplained: the song's last "Yeah, heah!"
            for k, (line, phrase) in enumerate(zip(group, windowed)):
                other = whole[k]
                if k in apart:
                    kept = phrase if k in taken else other
                    kept["flags"].append(f"alignments disagree: {other['start']:.1f} s whole-song, "
                                         f"{phrase['start']:.1f} s between anchors")
                if k in taken:
                    phrase["flags"].append("re-aligned between anchors")
                    phrases[line.index] = phrase

    def _align(self, aligner: Any, audio: np.ndarray, lines: list[LyricLine], start: float,
               end: float | None = None) -> list[dict[str, Any]]:
        """Align ``lines`` to audio[start:end] (seconds); times come back in song time, inside the window."""
        a = int(start * WHISPER_RATE)
        b = len(audio) if end is None else int(end * WHISPER_RATE)
        window = audio[a:b]
        if len(window) < WHISPER_RATE // 10:  # no room: park the lines at the window start
            return [self._phrase(line, [], start) for line in lines]
        captured = io.StringIO()
        with contextlib.redirect_stderr(captured):  # stable-ts draws an "Adjustment" bar even with verbose=None
            result = aligner.model.align(window, "\n".join(line.text for line in lines), language=self.language,
                                         original_split=True, verbose=None)
        for message in captured.getvalue().replace("\r", "\n").splitlines():
            if message.strip() and "Adjustment" not in message:
                log.warning("stable-ts: %s", message.strip())
        limit = start + len(window) / WHISPER_RATE
        return [self._phrase(line, words, start, limit) for line, words in zip(lines, _split_words(result, lines))]

    def _phrase(self, line: LyricLine, words: list[Any], offset: float, limit: float | None = None) -> dict[str, Any]:
        def clamp(t: float) -> float:
            t = offset + float(t)
            return min(max(t, offset), limit) if limit is not None else max(t, offset)

        aligned = [{"word": w.word.strip(), "start": clamp(w.start), "end": clamp(w.end),
                    "probability": round(float(w.probability), 4)} for w in words]
        flags = []
        if aligned:
            # A word that lasts longer than any sung word has swallowed the music after it (typically the
            # last word of a line before an instrumental break): end it after twice a typical word.
            durations = sorted(w["end"] - w["start"] for w in aligned)
            typical = max(0.25, durations[len(durations) // 2])
            for word in aligned:
                if word["end"] - word["start"] > self.limits["max_word_seconds"]:
                    word["end"] = word["start"] + min(2 * typical, self.limits["max_word_seconds"])
                    flags.append(f"trimmed {word['word']!r}, stretched over the music")
            first = aligned[0]
            flags += regroup_line(aligned, MAX_WORD_GAP, typical, self._voice)
            first["start"] = max(first["start"], first["end"] - self.max_onset_lead)
            for word in aligned:  # words set before the line's main group stay inside the window
                word["start"] = max(word["start"], offset)
                word["end"] = max(word["end"], word["start"])
        confidence = sum(w["probability"] for w in aligned) / len(aligned) if aligned else 0.0
        return lyric_phrase(line, aligned[0]["start"] if aligned else offset, aligned[-1]["end"] if aligned else offset,
                            aligned, round(confidence, 4), flags)

    def _repair_collapse(self, aligner: Any, audio: np.ndarray, lines: list[LyricLine],
                         phrases: dict[int, dict[str, Any]], first: float, last: float) -> None:
        """Re-align runs of squeezed or out-of-order lines inside the window their good neighbours leave
        (the song's sung span, ``first`` to ``last``, at the ends). When a line of the run is left with no time
        at all, the "good" neighbour after it was wrong too (it left no room): the run is aligned once more
        with that line.

        One squeezed line on its own is a fast line, not a collapse: the quality gate flags it instead.
        """
        def out_of_order(i: int) -> bool:
            return i > 0 and phrases[lines[i].index]["start"] < phrases[lines[i - 1].index]["end"] - 0.5

        bad = [i for i in range(len(lines)) if self._squeezed(phrases[lines[i].index]) or out_of_order(i)]
        for run in _runs(bad, key=lambda i: i):
            if len(run) == 1 and not out_of_order(run[0]):
                continue
            for extended in (run, run + [run[-1] + 1]):
                if extended[-1] >= len(lines):
                    break
                start, end = _room(lines, phrases, extended, first, last)
                group = [lines[i] for i in extended]
                if end - start < 0.25 * sum(len(line.text.split()) for line in group):
                    break  # no room to spread them out: the gate flags them
                aligned = self._align(aligner, audio, group, start, end)
                for line, phrase in zip(group, aligned):
                    phrase["flags"].append("re-aligned after a collapse")
                    phrases[line.index] = phrase
                if not any(phrase["end"] <= phrase["start"] for phrase in aligned):
                    break  # fast lines stay fast; only lines with no time at all mean the room was wrong

    def _repair_unvoiced(self, aligner: Any, audio: np.ndarray, lines: list[LyricLine],
                         phrases: dict[int, dict[str, Any]], first: float, last: float,
                         activity: "VocalActivity") -> None:
        """Align a run of lines placed where no one sings again, inside the stretches of voice between their
        neighbours that no other line claims (the song's last chorus line put in the silence before the
        outro), and keep that alignment when it puts them where the voice is."""
        unvoiced = [i for i in range(len(lines))
                    if _voiced_share([phrases[lines[i].index]], activity) < UNVOICED_SHARE]
        for run in _runs(unvoiced, key=lambda i: i):
            start, end = _room(lines, phrases, run, first, last)
            others = [phrases[line.index] for k, line in enumerate(lines) if k not in run]
            free = [(a, b) for a, b in _unclaimed_stretches(activity, others) if b > start and a < end]
            if not free:
                continue
            group = [lines[i] for i in run]
            aligned = self._align(aligner, audio, group, max(start, free[0][0] - SPAN_PAD),
                                  min(end, free[-1][1] + SPAN_PAD))
            if _voiced_share(aligned, activity) >= _voiced_share([phrases[line.index] for line in group],
                                                                 activity) + VOICED_MARGIN:
                for line, phrase in zip(group, aligned):
                    phrase["flags"].append("re-aligned where the voice is")
                    phrases[line.index] = phrase

    def _squeezed(self, phrase: dict[str, Any]) -> bool:
        length = phrase["end"] - phrase["start"]
        return len(phrase["words"]) > 1 and (length <= 0 or len(phrase["words"]) / length > self.limits["max_wps"])


UNSPACED_LANGUAGES = ("ja", "zh", "th", "lo", "km", "my", "bo")
ANCHOR_RUN = 3  # consecutive lyric words, unique in the lyrics and heard once in order, make an anchor
ANCHOR_PAD = 0.4  # a window opens this long before an anchored line's heard onset
SECONDS_PER_WORD = 0.3  # to step back from an anchored word to its line's onset
CONFIDENCE_MARGIN = 0.05  # the windowed alignment of a group wins when its words are this much more probable
VOICED_MARGIN = 0.2  # a run of disputed lines is re-placed when it sits this much more where the voice is
UNCLAIMED_SECONDS = 1.0  # ... and a disputed line when it alone is placed in a stretch of voice this long
DISAGREEMENT = 1.5  # seconds between where a line was placed and where the transcript heard it
SPAN_PAD = 0.5  # the whole-song alignment runs from this long before the voice is first heard to after the last
_VOWEL_GROUP = re.compile(r"[aeiouyàáâäãåèéêëìíîïòóôöõùúûüœæ]+")
SNAP_BEFORE, SNAP_AFTER = 1.0, 0.5  # a line's start moves to a vocal onset at most this much earlier / later
UNVOICED_SHARE = 0.25  # a line placed where the vocal stem is this quiet or quieter for most of it is flagged


class Evidence:
    """What a free transcription says about the lyric lines: ``anchors`` {line index: onset} where a run of at
    least ``ANCHOR_RUN`` lyric words was heard in order, and ``heard`` {line index: onset} wherever any of a
    line's words were matched (weaker: used only to flag disagreement). ``transcribed``: a transcript was
    made at all (an empty one is evidence too: nothing of the lyrics was heard)."""

    def __init__(self, anchors: dict[int, float], heard: dict[int, float], transcribed: bool = True) -> None:
        self.anchors, self.heard, self.transcribed = anchors, heard, transcribed


def _token(word: str) -> str:
    import unicodedata

    text = unicodedata.normalize("NFKD", word.lower())
    text = "".join(c for c in text if c.isalnum())
    return re.sub(r"(.)\1+", r"\1", text)


def transcript_evidence(lines: list[LyricLine], heard_words: list[tuple[str, float]]) -> Evidence:
    """Anchors from a free transcription. A run of ``ANCHOR_RUN`` lyric words that occurs once in the lyrics
    and is heard once, as one phrase, pins the time of the lines it touches; runs of a repeated chorus never
    do, so a repeated line is never pinned to a repetition by guesswork. Of those runs, the largest set that
    keeps lyric order and time order together is kept (a longest increasing subsequence); transcription errors
    elsewhere cost nothing."""
    import bisect

    lyric: list[tuple[int, int]] = []  # (line index, word position in the line) per lyric token
    tokens: list[str] = []
    for line in lines:
        for position, word in enumerate(line.text.split()):
            token = _token(word)
            if token:
                tokens.append(token)
                lyric.append((line.index, position))
    heard = [(_token(w), t) for w, t in heard_words]
    heard = [(w, t) for w, t in heard if w]
    n = ANCHOR_RUN

    def grams(sequence: list[str]) -> dict[tuple[str, ...], list[int]]:
        found: dict[tuple[str, ...], list[int]] = {}
        for i in range(len(sequence) - n + 1):
            found.setdefault(tuple(sequence[i:i + n]), []).append(i)
        return found

    in_lyrics, in_transcript = grams(tokens), grams([w for w, _ in heard])

    def compact(b: int) -> bool:  # heard as one phrase, not words picked up across a stretch the model missed
        return all(heard[b + k + 1][1] - heard[b + k][1] <= MAX_WORD_GAP for k in range(n - 1))

    pairs = sorted((a[0], b[0]) for gram, a in in_lyrics.items() if len(a) == 1
                   for b in [in_transcript.get(gram, [])] if len(b) == 1 and compact(b[0]))
    # longest chain increasing in both lyric position and transcript position
    tails: list[int] = []
    tail_index: list[int] = []
    parent = [-1] * len(pairs)
    for i, (_, b) in enumerate(pairs):
        k = bisect.bisect_left(tails, b)
        if k == len(tails):
            tails.append(b)
            tail_index.append(i)
        else:
            tails[k], tail_index[k] = b, i
        parent[i] = tail_index[k - 1] if k else -1
    chain: list[tuple[int, int]] = []
    i = tail_index[-1] if tail_index else -1
    while i >= 0:
        chain.append(pairs[i])
        i = parent[i]
    anchors: dict[int, float] = {}
    any_match: dict[int, float] = {}
    for a, b in sorted(chain):
        for k in range(n):
            line, position = lyric[a + k]
            onset = heard[b + k][1] - position * SECONDS_PER_WORD
            any_match.setdefault(line, onset)
            if position <= 2:
                anchors.setdefault(line, onset)
    ordered: dict[int, float] = {}
    last = -1.0
    for line in sorted(anchors):
        if anchors[line] > last + 0.5:
            ordered[line] = max(anchors[line], 0.0)
            last = anchors[line]
    return Evidence(ordered, any_match)


def _unclaimed_stretches(activity: "VocalActivity", phrases: Iterable[dict[str, Any]]) -> list[list[float]]:
    """The stretches of voice (at least ``UNCLAIMED_SECONDS`` long) that none of ``phrases`` overlaps."""
    phrases = list(phrases)
    return [[a, b] for a, b in activity.stretches(UNCLAIMED_SECONDS)
            if not any(p["start"] < b and p["end"] > a for p in phrases)]


def _alone_in_voice(time: float, activity: "VocalActivity", phrases: Iterable[dict[str, Any]], line: int) -> bool:
    """Whether ``time`` is inside a stretch of voice that no phrase but ``line``'s own overlaps."""
    others = [p for p in phrases if p["line"] != line]
    return any(a <= time < b for a, b in _unclaimed_stretches(activity, others))


def _room(lines: list[LyricLine], phrases: dict[int, dict[str, Any]], run: list[int], first: float,
          last: float) -> tuple[float, float]:
    """The window a run of lines (positions in ``lines``) has between its neighbours' placements: from the end
    of the line before to the start of the line after (``first`` and ``last`` at the ends)."""
    start = phrases[lines[run[0] - 1].index]["end"] if run[0] else first
    end = phrases[lines[run[-1] + 1].index]["start"] if run[-1] + 1 < len(lines) else last
    return start, end


def _fits_between(start: float, end: float, phrases: list[dict[str, Any]], run: list[int]) -> bool:
    """Whether a run of lines placed from ``start`` to ``end`` keeps order with the lines around it."""
    before = phrases[run[0] - 1]["end"] if run[0] > 0 else -math.inf
    after = phrases[run[-1] + 1]["start"] if run[-1] + 1 < len(phrases) else math.inf
    return start >= before - 0.5 and end <= after + 0.5


def _voiced_share(phrases: list[dict[str, Any]], activity: "VocalActivity") -> float:
    """The mean share of its time each line spends where the vocal stem is heard."""
    return float(np.mean([activity.share_active(p["start"], max(p["end"], p["start"] + HOP_SECONDS_VOICE))
                          for p in phrases]))


def _mean_confidence(phrases: list[dict[str, Any]]) -> float:
    words = [w["probability"] for p in phrases for w in p["words"]]
    return sum(words) / len(words) if words else 0.0


def anchor_windows(lines: list[LyricLine], anchors: dict[int, float], first: float,
                   last: float) -> list[tuple[list[LyricLine], float, float]]:
    """Split the lines at anchored lines: each group is force-aligned only inside the window between its
    anchor and the next, so no line can drift across an anchor. A group with too little room for its words
    (0.2 s each) is merged into the group before it."""
    groups: list[list[LyricLine]] = []
    starts: list[float] = []
    for line in lines:
        if line.index in anchors or not groups:
            groups.append([line])
            starts.append(max(anchors[line.index] - ANCHOR_PAD, first) if line.index in anchors else first)
        else:
            groups[-1].append(line)
    starts[0] = first
    bounds = starts[1:] + [last]
    merged: list[tuple[list[LyricLine], float, float]] = []
    for group, start, end in zip(groups, starts, bounds):
        words = sum(len(line.text.split()) for line in group)
        if merged and (end - start < 0.2 * words or start < merged[-1][1]):
            previous, previous_start, _ = merged.pop()
            merged.append((previous + group, previous_start, end))
        else:
            merged.append((group, start, end))
    return merged


def flag_uncertain(lines: list[LyricLine], phrases: dict[int, dict[str, Any]], evidence: Evidence) -> None:
    """Flag lines whose timing rests on weak evidence (in place): the transcript heard the line elsewhere, or
    a repeated line has no anchor to say which repetition it is, or a long run of lines has no anchor at all."""
    if not evidence.transcribed:
        return
    texts = [_token(line.text) for line in lines]
    unanchored_run = 0
    for i, line in enumerate(lines):
        phrase = phrases[line.index]
        heard = evidence.heard.get(line.index)
        if heard is not None and abs(phrase["start"] - heard) > DISAGREEMENT:
            phrase["flags"].append(f"alignments disagree: placed at {phrase['start']:.1f} s, heard at {heard:.1f} s")
        if line.index in evidence.anchors:
            unanchored_run = 0
            continue
        unanchored_run += 1
        if texts.count(texts[i]) > 1:
            phrase["flags"].append("repeated line without an anchor: which repetition is uncertain")
        elif unanchored_run >= 4 and heard is None:
            phrase["flags"].append(f"weak anchor support: {unanchored_run} lines since the last anchor")


def lyric_phrase(line: LyricLine, start: float, end: float, words: list[dict[str, Any]], confidence: float,
                 flags: list[str], vocalise: bool = False) -> dict[str, Any]:
    """One lyric line as an annotation phrase (``index`` is given when the phrases are assembled)."""
    return {"kind": "lyric", "text": line.text, "line": line.index, "section": line.section,
            "performers": list(line.performers), "section_index": line.section_index, "start": start, "end": end,
            "confidence": confidence, "vocalise": vocalise, "flags": flags, "words": words}


def layout_by_voice(lines: list[LyricLine], activity: "VocalActivity", first: float, last: float,
                    phrases: dict[int, dict[str, Any]],
                    flag: str = "placed by where the voice is: the model did not hear the words") -> bool:
    """Place every line by where the voice is, for a song whose words the model does not hear (operatic singing:
    most lines unplaced): the voiced time between ``first`` and ``last`` is shared among the lines in order, in
    proportion to their syllables, and each line's words evenly over its share. Fills ``phrases`` in place and
    flags every line; False (nothing changed) when no voice is heard there."""
    hop = HOP_SECONDS_VOICE
    runs = voiced_runs(activity.active, int(first / hop), min(len(activity.active), int(math.ceil(last / hop))))
    if not runs:
        return False
    voiced = np.concatenate([np.arange(a, b) for a, b in runs])
    weights = [max(1, len(_VOWEL_GROUP.findall(line.text.lower())) or len(line.text.split())) for line in lines]
    total, done = float(sum(weights)), 0
    for line, weight in zip(lines, weights):
        a = int(voiced[min(len(voiced) - 1, int(len(voiced) * done / total))])
        b = int(voiced[max(0, min(len(voiced) - 1, int(len(voiced) * (done + weight) / total) - 1))])
        done += weight
        for run_start, run_end in runs:  # a line does not reach across a silence longer than a breath
            if run_start <= a < run_end:
                later = [r for r in runs if r[0] >= run_end and r[0] <= b]
                if later and (later[0][0] - run_end) * hop > MAX_WORD_GAP:
                    b = run_end - 1
        start, end = a * hop, (b + 1) * hop
        texts = line.text.split() or [line.text]
        step = (end - start) / len(texts)
        words = [{"word": w, "start": round(start + k * step, 3), "end": round(start + (k + 1) * step, 3),
                  "probability": 0.0} for k, w in enumerate(texts)]
        phrases[line.index] = lyric_phrase(line, start, end, words, 0.0, [flag], vocalise=is_vocalise(line.text))
    return True


def voiced_runs(active: np.ndarray, a: int, b: int, min_hops: int = 5) -> list[tuple[int, int]]:
    """The stretches [start, end) of hops a..b in which the voice is heard, as long as something is left:
    without runs under ``min_hops``, a short run that only leads into the next line at ``b``, or the first
    ``RING`` seconds of a stretch that began well before ``a`` (the line before is still ringing there; all of
    it when little more is left)."""
    runs = active_runs(active, a, b)
    runs = [r for r in runs if r[1] - r[0] >= min_hops] or runs
    spill = int(round(SMOOTH_SPILL / HOP_SECONDS_VOICE))
    if len(runs) > 1 and b < len(active) and active[b] and runs[-1][1] == b and runs[-1][1] - runs[-1][0] <= spill:
        runs = runs[:-1]  # only the next line's onset, spread early by the loudness smoothing
    began = a
    while began > 0 and active[began - 1]:
        began -= 1
    if a - began > spill and runs and runs[0][0] == a:  # a stretch that began only just before a is a new onset
        ring = int(round(RING / HOP_SECONDS_VOICE))
        if runs[0][1] - a - ring >= max(min_hops, ring):
            runs[0] = (a + ring, runs[0][1])  # the voice goes on: the next line is sung in the same breath
        elif len(runs) > 1:
            runs = runs[1:]
    return runs


def snap_to_onsets(phrases: list[dict[str, Any]], onsets: np.ndarray) -> None:
    """Start each line whose words were heard at the vocal stem's onset nearest its aligned start, when there is
    one from ``SNAP_BEFORE`` before to ``SNAP_AFTER`` after it (in place). Whisper's word timing on sung vowels
    is often a few tenths late or early; the stem says when the voice starts after a breath. The new start stays
    after the previous line's end and before the first word's end."""
    previous_end = 0.0
    for phrase in phrases:
        words = phrase["words"]
        if words and phrase["confidence"] > 0:
            low = max(phrase["start"] - SNAP_BEFORE, previous_end - 0.1)
            high = min(phrase["start"] + SNAP_AFTER, words[0]["end"] - 0.05)
            near = onsets[(onsets >= low) & (onsets <= high)]
            if len(near):
                onset = float(near[np.argmin(np.abs(near - phrase["start"]))])
                if abs(onset - phrase["start"]) >= 0.01:
                    phrase["flags"].append(f"moved to the voice's onset at {onset:.2f} s "
                                           f"(aligned {phrase['start']:.2f} s)")
                    phrase["start"] = words[0]["start"] = onset
        previous_end = max(previous_end, phrase["end"])


def flag_unvoiced(phrases: list[dict[str, Any]], activity: "VocalActivity") -> None:
    """Flag lines placed where the vocal stem says no one sings (in place)."""
    for phrase in phrases:
        if phrase["end"] > phrase["start"] and activity.share_active(phrase["start"], phrase["end"]) < UNVOICED_SHARE:
            phrase["flags"].append("no voice heard where the line is placed")


def regroup_line(words: list[dict[str, Any]], max_gap: float, typical: float,
                 activity: "VocalActivity | None" = None) -> list[str]:
    """A line is sung in one breath-group. When its words fall into groups apart by more than ``max_gap``
    (an instrumental stretch between them), the group with the most words that are not filler ("la-la",
    "yeah") sung where the voice is heard (with ``activity``), then the most such words anywhere, then the most
    words, then the most probable, then the later, is where the line is sung; the others were pulled across the
    gap, so they are set right beside it. Nothing is ever moved towards the stray words: a line cannot be
    dragged into a break."""
    groups: list[list[dict[str, Any]]] = [[words[0]]]
    for previous, word in zip(words, words[1:]):
        if word["start"] - previous["end"] > max_gap:
            groups.append([])
        groups[-1].append(word)
    if len(groups) == 1:
        return []
    def lexical(group: list[dict[str, Any]], voiced_only: bool) -> int:  # "Alabama (la-la la-la)": 1
        return sum(not is_vocalise(w["word"]) and (not voiced_only or activity is None or
                                                   activity.share_active(w["start"], w["end"]) >= 0.5)
                   for w in group)

    main_index = max(range(len(groups)), key=lambda i: (
        lexical(groups[i], True), lexical(groups[i], False), len(groups[i]),
        sum(w["probability"] for w in groups[i]) / len(groups[i]), i))
    main = groups[main_index]
    before = [w for g in groups[:main_index] for w in g]
    after = [w for g in groups[main_index + 1:] for w in g]
    cursor = main[0]["start"]
    for word in reversed(before):
        length = min(word["end"] - word["start"], 2 * typical)
        word["start"], word["end"] = cursor - length, cursor
        cursor = word["start"]
    cursor = main[-1]["end"]
    for word in after:
        length = min(word["end"] - word["start"], 2 * typical)
        word["start"], word["end"] = cursor, cursor + length
        cursor = word["end"]
    stray = ", ".join(repr(w["word"]) for w in before + after)
    return [f"split line: {stray} set beside the {len(main)} word(s) sung at {main[0]['start']:.2f} s"]


def _split_words(result: Any, lines: list[LyricLine]) -> list[list[Any]]:
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


def _runs(items: list[Any], key: Any = lambda line: line.index) -> list[list[Any]]:
    """Group consecutive items (by key) into runs."""
    runs: list[list[Any]] = []
    for item in items:
        if runs and key(item) == key(runs[-1][-1]) + 1:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


# --------------------------------------------------------------------------------- shared helpers
def flag_quality(phrases: list[dict[str, Any]], limits: dict[str, float]) -> None:
    """Append quality problems to each lyric phrase's ``flags`` (in place)."""
    previous_end = 0.0
    for phrase in phrases:
        length = phrase["end"] - phrase["start"]
        words = phrase["words"]
        if words and phrase["confidence"] < limits["min_confidence"]:
            phrase["flags"].append(f"low word probability {phrase['confidence']:.2f}")
        if len(words) > 1:
            rate = len(words) / length if length > 0 else float("inf")
            if not limits["min_wps"] <= rate <= limits["max_wps"]:
                phrase["flags"].append(f"{rate:.1f} words per second")
        for word in words:
            if word["end"] - word["start"] > limits["max_word_seconds"]:
                phrase["flags"].append(f"word {word['word']!r} lasts {word['end'] - word['start']:.1f} s "
                                       "(stretched over music?)")
                break
        if phrase["start"] < previous_end - 0.5:
            phrase["flags"].append("out of order with the line before")
        previous_end = max(previous_end, phrase["end"])


def build_annotation(lyric: list[dict[str, Any]], duration: float, language: str, min_gap: float,
                     aligner: dict[str, Any]) -> dict[str, Any]:
    phrases = with_instrumentals(lyric, duration, min_gap)
    flags = [{"phrase": p["index"], "line": p["line"], "problem": problem}
             for p in phrases for problem in p.get("flags", [])
             if not problem.startswith(("vocalise:", "re-aligned", "trimmed", "moved"))]
    return {"version": ANNOTATION_VERSION, "duration": duration, "language": language, "aligner": aligner,
            "phrases": phrases, "flags": flags}


def with_instrumentals(lyric: list[dict[str, Any]], duration: float, min_gap: float) -> list[dict[str, Any]]:
    """Order the lyric phrases, remove overlaps, add instrumental phrases in long gaps, renumber.

    Short gaps between lyric phrases stay gaps (breaths); they are not phrases.
    """
    ordered, previous_end = [], 0.0
    for phrase in sorted(lyric, key=lambda p: (p["start"], p.get("line") or 0)):
        start = min(max(phrase["start"], previous_end), duration)
        end = min(max(phrase["end"], start), duration)
        words = [{**w, "start": round(min(max(w["start"], start), end), 3),
                  "end": round(min(max(w["end"], start), end), 3)} for w in phrase["words"]]
        ordered.append({**phrase, "start": round(start, 3), "end": round(end, 3), "words": words,
                        "flags": list(phrase.get("flags", [])), "vocalise": phrase.get("vocalise", False)})
        previous_end = end

    def instrumental(start: float, end: float, section: str) -> dict[str, Any]:
        return {"kind": "instrumental", "text": "", "line": None, "section": section, "section_index": 1,
                "start": round(start, 3), "end": round(end, 3), "confidence": 1.0, "vocalise": False,
                "flags": [], "words": [], "performers": []}

    out: list[dict[str, Any]] = []
    cursor = 0.0
    for i, phrase in enumerate(ordered):
        if phrase["start"] - cursor >= min_gap:
            out.append(instrumental(cursor, phrase["start"], "intro" if i == 0 else "break"))
        out.append(phrase)
        cursor = phrase["end"]
    if duration - cursor >= min_gap or not out:
        out.append(instrumental(cursor, duration, "outro"))
    breaks = 0
    for index, phrase in enumerate(out):
        phrase["index"] = index
        if phrase["section"] == "break":
            breaks += 1
            phrase["section_index"] = breaks
    return out


LYRICS_EDITS_JSON = "lyrics_edits.json"


def check_line_edit(annotation: dict[str, Any], line: int, start: float, end: float) -> None:
    """One line of error when a hand edit cannot apply: an unknown line, or times outside the song."""
    if not any(p["kind"] == "lyric" and p["line"] == line for p in annotation["phrases"]):
        raise MvgenError(f"no lyric line {line} in this annotation")
    if not (0.0 <= start < end <= float(annotation["duration"])):
        raise MvgenError(f"line {line}: start {start:.2f} s and end {end:.2f} s must satisfy "
                         f"0 <= start < end <= {float(annotation['duration']):.2f}")


def apply_line_edits(annotation: dict[str, Any], edits: dict[str, Any], min_gap: float) -> dict[str, Any]:
    """The annotation with hand-set line times (``lyrics_edits.json``: {"lines": {"<line>": {"start", "end"}}}):
    each edited line's words keep their relative timing inside the new window, its uncertainty flags go (a
    person has looked), and the instrumental phrases are rebuilt around the result."""
    wanted = {int(k): v for k, v in (edits.get("lines") or {}).items()}
    lyric = []
    for phrase in annotation["phrases"]:
        if phrase["kind"] != "lyric":
            continue
        edit = wanted.get(phrase["line"])
        if edit is None:
            lyric.append(phrase)
            continue
        start, end = float(edit["start"]), float(edit["end"])
        check_line_edit(annotation, phrase["line"], start, end)
        old_start, old_length = phrase["start"], max(phrase["end"] - phrase["start"], 1e-6)
        scale = (end - start) / old_length
        words = [{**w, "start": round(start + (w["start"] - old_start) * scale, 3),
                  "end": round(start + (w["end"] - old_start) * scale, 3)} for w in phrase["words"]]
        lyric.append({**phrase, "start": start, "end": end, "words": words, "flags": [], "edited": True})
    phrases = with_instrumentals(lyric, float(annotation["duration"]), min_gap)
    flags = [{"phrase": p["index"], "line": p["line"], "problem": f["problem"]}
             for p in phrases for f in annotation["flags"] if p["kind"] == "lyric" and f["line"] == p["line"]
             and not p.get("edited")]
    return {**annotation, "phrases": phrases, "flags": flags,
            "edits": {str(k): {"start": float(v["start"]), "end": float(v["end"])} for k, v in sorted(wanted.items())}}


def mismatch_summary(annotation: dict[str, Any]) -> str | None:
    """The warning for lyrics that do not belong to the audio (most lines unplaced), or None."""
    mismatch = annotation.get("lyrics_mismatch")
    if not mismatch:
        return None
    return (f"LYRICS DO NOT MATCH THE AUDIO? {mismatch['unplaced']} of {mismatch['lines']} lines could not be "
            "placed with confidence; check song.lyrics (annotate.gate=fail stops such runs)")


def build_edited_annotation(aligned: Path, edits: dict[str, Any], min_gap: float, out_dir: Path) -> dict[str, Any]:
    """The store build of hand-set line times: the edited annotation (with its LRC/SRT) and the edits."""
    from mvgen.validate import check_annotation

    edited = apply_line_edits(read_json(aligned), edits, min_gap)
    check_annotation(edited)
    write_annotation(edited, out_dir)
    write_json(out_dir / LYRICS_EDITS_JSON, edits)
    return {"edited_lines": len(edits["lines"])}


def quality_summary(annotation: dict[str, Any]) -> str:
    lyric = [p for p in annotation["phrases"] if p["kind"] == "lyric"]
    flagged = sorted({f["line"] for f in annotation["flags"]})
    text = f"{len(lyric)} lyric lines, {len(flagged)} flagged"
    mismatch = mismatch_summary(annotation)
    if mismatch:
        text = f"{text}; {mismatch}"
    if annotation["flags"]:
        shown = "; ".join(f"line {f['line'] + 1}: {f['problem']}" for f in annotation["flags"][:3])
        more = len(annotation["flags"]) - 3
        text += f" ({shown}{f'; {more} more' if more > 0 else ''})"
    return text


def _clock(seconds: float, separator: str = ".", hours: bool = False) -> str:
    total_ms = int(round(seconds * 1000))
    h, rem = divmod(total_ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    if hours:
        return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"
    return f"{h * 60 + m:02d}:{s:02d}{separator}{ms // 10:02d}"


def write_annotation(annotation: dict[str, Any], out_dir: Path) -> None:
    """annotation.json plus the same timing as LRC (enhanced, with word tags) and SRT subtitles."""
    write_json(out_dir / ANNOTATION_JSON, annotation)
    lyric = [p for p in annotation["phrases"] if p["kind"] == "lyric"]
    lrc = []
    for p in lyric:
        words = " ".join(f"<{_clock(w['start'])}>{w['word']}" for w in p["words"]) or p["text"]
        lrc.append(f"[{_clock(p['start'])}]{words}")
    (out_dir / SONG_LRC).write_text("\n".join(lrc) + "\n", encoding="utf-8")
    srt = [f"{i}\n{_clock(p['start'], ',', True)} --> {_clock(p['end'], ',', True)}\n{p['text']}\n"
           for i, p in enumerate(lyric, start=1)]
    (out_dir / SONG_SRT).write_text("\n".join(srt), encoding="utf-8")


# ------------------------------------------------------------------------------------------- LRC
_LRC_LINE = re.compile(r"^\[(\d+):(\d{1,2}(?:\.\d+)?)\](.*)$")
_LRC_WORD = re.compile(r"<(\d+):(\d{1,2}(?:\.\d+)?)>\s*([^<]*)")


def parse_lrc(text: str) -> list[dict[str, Any]]:
    """[mm:ss.xx]line, optionally with <mm:ss.xx>word tags (enhanced LRC). Metadata tags are skipped."""
    entries = []
    for raw in text.splitlines():
        match = _LRC_LINE.match(raw.strip())
        if not match:
            continue
        start = int(match.group(1)) * 60 + float(match.group(2))
        body = match.group(3).strip()
        words = [{"word": w.strip(), "start": int(m) * 60 + float(s)} for m, s, w in _LRC_WORD.findall(body) if w.strip()]
        plain = " ".join(w["word"] for w in words) if words else body
        if plain:
            entries.append({"start": start, "text": plain, "words": words})
    return sorted(entries, key=lambda e: e["start"])


class LrcAnnotation(AnnotateStage):
    """Lyric timing from an LRC file (line times, and word times when the file has <mm:ss.xx> tags)."""

    def __init__(self, path: str, language: str = "en", instrumental_min_gap: float = 2.0,
                 seconds_per_word: float = 0.45) -> None:
        self.path = Path(path).expanduser()
        self.language = language
        self.instrumental_min_gap = instrumental_min_gap
        self.seconds_per_word = seconds_per_word

    def fingerprint(self) -> dict[str, str]:
        from mvgen.util import sha256_file

        if not self.path.is_file():
            raise MvgenError(f"LRC file not found: {self.path}; check annotate.path")
        return {"lrc": sha256_file(self.path)}

    def annotate(self, song: dict[str, Any], song_wav: Path, out_dir: Path) -> dict[str, Any]:
        self.fingerprint()  # a missing file is a one-line error
        entries = parse_lrc(self.path.read_text(encoding="utf-8"))
        if not entries:
            raise MvgenError(f"{self.path} has no timed lines ([mm:ss.xx]text); give an LRC file")
        samples, rate = read_wav(song_wav)
        duration = len(samples) / rate
        lines = parse_lyrics(song["lyrics"], performer_names(song))
        if len(lines) != len(entries):
            log.warning("the LRC file has %d lines, the song's lyrics %d; sections come from the LRC order",
                        len(entries), len(lines))
        phrases = []
        for i, entry in enumerate(entries):
            line = lines[i] if i < len(lines) else LyricLine(i, entry["text"], "verse", 1)
            next_start = entries[i + 1]["start"] if i + 1 < len(entries) else duration
            tokens = entry["text"].split()
            end = min(next_start, entry["start"] + self.seconds_per_word * len(tokens) + 0.3, duration)
            if entry["words"]:
                starts = [w["start"] for w in entry["words"]] + [end]
                words = [{"word": w["word"], "start": starts[k], "end": max(starts[k], min(starts[k + 1], end)),
                          "probability": 1.0} for k, w in enumerate(entry["words"])]
            else:
                step = (end - entry["start"]) / max(len(tokens), 1)
                words = [{"word": t, "start": entry["start"] + k * step, "end": entry["start"] + (k + 1) * step,
                          "probability": 1.0} for k, t in enumerate(tokens)]
            phrases.append({"kind": "lyric", "text": entry["text"], "line": i, "section": line.section,
                            "performers": list(line.performers),
                            "section_index": line.section_index, "start": entry["start"], "end": end,
                            "confidence": 1.0, "vocalise": is_vocalise(entry["text"]), "flags": [], "words": words})
        annotation = build_annotation(phrases, duration, self.language, self.instrumental_min_gap,
                                      {"backend": "lrc", "path": str(self.path)})
        write_annotation(annotation, out_dir)
        return {"phrases": len(annotation["phrases"]), "flags": 0}
