"""UltraStar karaoke file (song.txt) -> LRC line timings: how the dev set's CC songs got their truth.

Each UltraStar phrase (notes up to a ``-`` line break) becomes one LRC line. Its start is the phrase's first
note: ``GAP / 1000 + beat * 60 / (BPM * 4)`` seconds (UltraStar counts quarter-beats). Relative-timed and
duet files are refused.

    python bench/devset/ultrastar_to_lrc.py song.txt lyrics.lrc
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

NOTE = re.compile(r"^[:*FRG]\s*(-?\d+)\s+(\d+)\s+(-?\d+)\s?(.*)$")


def phrases(text: str) -> tuple[dict[str, str], list[tuple[float, str]]]:
    header: dict[str, str] = {}
    lines: list[list[tuple[int, str]]] = [[]]
    for raw in text.splitlines():
        line = raw.rstrip("\r\n")
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            header[key.strip().upper()] = value.strip()
        elif line.startswith("P"):
            sys.exit("duet files are not supported")
        elif line.startswith("E"):
            break
        elif line.startswith("-"):
            lines.append([])
        elif (match := NOTE.match(line)):
            lines[-1].append((int(match[1]), match[4]))
    if header.get("RELATIVE", "").lower() == "yes":
        sys.exit("relative-timed files are not supported")
    beat = 60.0 / (float(header["BPM"].replace(",", ".")) * 4)
    gap = float(header.get("GAP", "0").replace(",", ".")) / 1000
    out = []
    for notes in lines:
        words = " ".join("".join(syllable for _, syllable in notes).replace("~", "").split())
        if notes and words:
            out.append((gap + notes[0][0] * beat, words))
    return header, out


def main() -> None:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    header, out = phrases(source.read_text(encoding="utf-8", errors="replace"))
    body = "".join(f"[{int(t // 60):02d}:{t - 60 * int(t // 60):05.2f}]{words}\n" for t, words in out)
    target.write_text(f"[ti:{header.get('TITLE', '')}]\n[ar:{header.get('ARTIST', '')}]\n{body}", encoding="utf-8")
    print(f"{len(out)} lines, {out[0][0]:.2f}-{out[-1][0]:.2f} s -> {target}")


if __name__ == "__main__":
    main()
