"""``mvgen new SONG_AUDIO LYRICS_FILE``: a song file from what a creator has, an audio file and a lyrics file.

- the id comes from the audio file's name (sanitized); the title from ``--title`` or the file name;
- the lyrics come from a ``.txt`` (section tags kept) or an ``.lrc`` (its lines; its timings can be used as
  they are with ``annotate=lrc``);
- the language is detected from the audio with the bundled multilingual Whisper when ``--language`` is not
  given;
- the visual bible is a commented template to fill in.

The file is written to ``songs/<id>.yaml`` (``--out`` to choose), and ``mvgen song=<that path>`` runs it:
a song file can live anywhere. The command that makes the video is printed. The audio and lyrics stay
where they are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mvgen.errors import MvgenError
from mvgen.util import safe_name

TEMPLATE = """# @package _global_
# A song for mvgen, written by `mvgen new`. Fill in the style and the visual bible, then run:
#   {command}
defaults:
  - base_song@song
  - _self_
song:
  id: {id}
  title: {title}
  language: {language}
  style: ""  # the music style, e.g. "indie folk, warm acoustic guitar" (used for prompts and moods)
  lyrics: {lyrics}
  visual:
    # performers: name who sings ([chorus: Ana & Leo] in the lyrics, or "Ana: ..." at the start of a line)
    performers: []
    #  - name: Ana
    #    description: a singer in her twenties with a red scarf
    characters: [a singer]  # who appears when no performer is named
    locations: [a city street at night]
    palette: []  # hex colours, e.g. ["#102030", "#f0a020"]
    era: present day
    camera: ""  # e.g. handheld 35mm
"""


def lyrics_from(path: Path) -> tuple[str, bool]:
    """The lyrics text (tags kept) and whether the file carries line timings (LRC)."""
    from mvgen.stages.annotate import parse_lrc

    if not path.is_file():
        raise MvgenError(f"lyrics file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MvgenError(f"{path} is not UTF-8 text; save the lyrics as UTF-8") from exc
    if path.suffix.lower() == ".lrc":
        lines = [entry["text"] for entry in parse_lrc(text)]
        if not lines:
            raise MvgenError(f"{path} has no timed lyric lines ([mm:ss.xx] text)")
        return "\n".join(lines), True
    return "\n".join(line.rstrip() for line in text.strip().splitlines()), False


def detect_language(audio: Path) -> str:
    """The sung language, from the first 30 s of the song, by the bundled multilingual Whisper."""
    from mvgen.media.audio import decode_audio, to_mono_16k
    from mvgen.stages.whisper_models import load_aligner

    samples = decode_audio(audio, 48000, channels=2)
    mono = to_mono_16k(samples[: 30 * 48000], 48000)
    model = load_aligner("base", "fr")  # "base" is multilingual; the language argument only checks that
    language, _probability, _all = model.model.detect_language(mono)
    return str(language)


def new_song(audio: Path, lyrics_file: Path, title: str | None, language: str | None, out: Path | None) -> Path:
    from mvgen.lyrics import parse_lyrics

    if not audio.is_file():
        raise MvgenError(f"audio file not found: {audio}")
    lyrics, timed = lyrics_from(lyrics_file)
    parse_lyrics(lyrics)  # one-line errors for broken tags before anything is written
    song_id = safe_name(audio.stem, fallback="song").replace("-", "_")
    language = language or detect_language(audio)
    target = out or Path("songs") / f"{song_id}.yaml"
    if target.exists():
        raise MvgenError(f"{target} already exists; choose another --out or remove it")
    command = f'mvgen song={target} music=file "music.path={audio.resolve()}"'
    if timed:
        command += f' annotate=lrc "annotate.path={lyrics_file.resolve()}"'
    target.parent.mkdir(parents=True, exist_ok=True)
    block = "|\n" + "".join(f"    {line}\n" for line in lyrics.splitlines()) if lyrics else '""'
    target.write_text(TEMPLATE.format(command=command, id=song_id, title=json.dumps(title or audio.stem),
                                      language=language, lyrics=block.rstrip("\n")), encoding="utf-8")
    print(f"mvgen: wrote {target} (language {language}{', LRC timings usable' if timed else ''}); "
          f"fill in the style and the visual bible, then make the video with:\n  {command}")
    return target


def new_song_cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="mvgen new", description="Write a song file from an audio file and a "
                                     "lyrics file (.txt with [section] tags, or .lrc).")
    parser.add_argument("audio", type=Path)
    parser.add_argument("lyrics", type=Path)
    parser.add_argument("--title")
    parser.add_argument("--language", help="ISO 639-1 code; detected from the audio when left out")
    parser.add_argument("--out", type=Path, help="where to write the song file (default songs/<id>.yaml)")
    args = parser.parse_args(argv)
    new_song(args.audio, args.lyrics, args.title, args.language, args.out)
