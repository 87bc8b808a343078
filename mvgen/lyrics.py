"""Lyrics with section tags -> lines with section metadata.

Format (ACE-Step's): a tag on its own line opens a section, ``[verse]``, ``[chorus]``, ``[verse 2]``,
``[bridge]``...; every other non-empty line is one phrase. Lines before any tag belong to ``verse``.
Section names are sanitized (letters, digits, ``_``); a half-bracketed line is an error.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from mvgen.errors import MvgenError
from mvgen.util import safe_name

_TRAILING_NUMBER = re.compile(r"\s*\d+\s*$")


@dataclass(frozen=True)
class LyricLine:
    index: int  # 0-based position among all lines
    text: str
    section: str  # lower-case tag name: verse, chorus, bridge, ...
    section_index: int  # 1-based occurrence of this section name (verse 1, verse 2, ...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_lyrics(lyrics: str) -> list[LyricLine]:
    lines: list[LyricLine] = []
    section, counts = "verse", {}
    for raw in lyrics.splitlines():
        text = raw.strip()
        if not text:
            continue
        if text.startswith("[") and text.endswith("]"):
            # a section tag: its name becomes metadata (and may end up in file names), so it is sanitized
            name = _TRAILING_NUMBER.sub("", text[1:-1].strip())
            section = safe_name(name, fallback="section").replace("-", "_")
            counts[section] = counts.get(section, 0) + 1
            continue
        if text.startswith("[") or text.endswith("]"):
            raise MvgenError(f"lyric line {text!r} looks like a broken section tag; write tags on their own line "
                             "as [verse], [chorus], [bridge]")
        counts.setdefault(section, 1)
        lines.append(LyricLine(len(lines), text, section, counts[section]))
    if not lines:
        raise MvgenError("the song has no lyric lines; put one phrase per line under [verse]/[chorus] tags "
                         "in song.lyrics")
    return lines


def plain_text(lines: list[LyricLine]) -> str:
    """The lyrics without tags, one line per phrase: what the aligner reads."""
    return "\n".join(line.text for line in lines)
