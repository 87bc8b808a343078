"""Lyrics with section tags -> lines with section metadata.

Format (ACE-Step's): a tag on its own line opens a section, ``[verse]``, ``[chorus]``, ``[verse 2]``,
``[bridge]``...; every other non-empty line is one phrase. Lines before any tag belong to ``verse``.
Section names are sanitized (letters, digits, ``_``); a half-bracketed line is an error.

Performers (duets, features):

- a tag may name who sings its section: ``[verse 1: Ana]``, ``[chorus: Ana & Leo]`` (names joined by ``&`` or
  ``,``);
- a line may name its own singer with a prefix, ``Leo: I will be there``. A prefix counts only for a name the
  song's visual bible lists (``song.visual.performers``), so "Listen: the night is young" stays a lyric.

When the visual bible lists performers, every name in a tag must be one of them. A tag that names nobody
(``[chorus: ]``) is an error.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from mvgen.errors import MvgenError
from mvgen.util import safe_name

_TRAILING_NUMBER = re.compile(r"\s*\d+\s*$")


@dataclass(frozen=True)
class LyricLine:
    index: int  # 0-based position among all lines
    text: str
    section: str  # lower-case tag name: verse, chorus, bridge, ...
    section_index: int  # 1-based occurrence of this section name (verse 1, verse 2, ...)
    performers: tuple[str, ...] = ()  # who sings it, from the section tag or the line's prefix

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _performer_names(text: str, tag: str, known: Sequence[str]) -> tuple[str, ...]:
    names = tuple(n.strip() for n in re.split(r"\s*(?:&|,|\band\b)\s*", text) if n.strip())
    if not names or len(names) != len(re.split(r"\s*(?:&|,|\band\b)\s*", text.strip())):
        raise MvgenError(f"section tag {tag} names no performer (or an empty one); write [chorus: Ana] or "
                         "[chorus: Ana & Leo]")
    unknown = [n for n in names if known and n not in known]
    if unknown:
        raise MvgenError(f"performer {unknown[0]!r} in {tag} is not in song.visual.performers "
                         f"({', '.join(known)}); add it there or fix the tag")
    return names


def parse_lyrics(lyrics: str, performers: Sequence[str] = ()) -> list[LyricLine]:
    """Lines with their section and performers. ``performers``: the names the visual bible lists."""
    lines: list[LyricLine] = []
    section, counts, singers = "verse", {}, ()
    prefix = re.compile(rf"^({'|'.join(re.escape(p) for p in performers)})\s*:\s*(.+)$") if performers else None
    for raw in lyrics.splitlines():
        text = raw.strip()
        if not text:
            continue
        if text.startswith("[") and text.endswith("]"):
            # a section tag: its name becomes metadata (and may end up in file names), so it is sanitized
            name, colon, who = text[1:-1].partition(":")
            singers = _performer_names(who, text, performers) if colon else ()
            section = safe_name(_TRAILING_NUMBER.sub("", name.strip()), fallback="section").replace("-", "_")
            counts[section] = counts.get(section, 0) + 1
            continue
        if text.startswith("[") or text.endswith("]"):
            raise MvgenError(f"lyric line {text!r} looks like a broken section tag; write tags on their own line "
                             "as [verse], [chorus: Ana & Leo], [bridge]")
        counts.setdefault(section, 1)
        own = prefix.match(text) if prefix else None
        line_singers = (own.group(1),) if own else singers
        lines.append(LyricLine(len(lines), own.group(2).strip() if own else text, section, counts[section],
                               line_singers))
    if not lines:
        raise MvgenError("the song has no lyric lines; put one phrase per line under [verse]/[chorus] tags "
                         "in song.lyrics")
    return lines


def performer_names(song: dict[str, Any]) -> list[str]:
    """The performers the song's visual bible lists, by name."""
    return [str(p.get("name")) for p in ((song.get("visual") or {}).get("performers") or []) if p.get("name")]


def plain_text(lines: list[LyricLine]) -> str:
    """The lyrics without tags, one line per phrase: what the aligner reads."""
    return "\n".join(line.text for line in lines)
