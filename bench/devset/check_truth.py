"""Check a dev set's line timings against the voice itself, independently of any aligner.

For every line of a song's LRC, find the first vocal onset in the Spleeter vocal stem near the line's start:
the loudness (0.1 s hops, 0.1 s smoothing) rising above ``ONSET_DB`` below the stem's loud part after at
least 0.3 s under ``QUIET_DB`` below it. A song whose lines are consistently late or early against those
onsets has an LRC timed to another edit of the recording; its median shift is what `truth_offset_s` in the
dev set's manifest corrects.

    python bench/devset/check_truth.py DEV_SET_DIR
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import numpy as np

from mvgen.evaluate import dev_set_songs
from mvgen.media.audio import decode_audio
from mvgen.stages import vocals
from mvgen.stages.annotate import parse_lrc

ONSET_DB, QUIET_DB = 12.0, 30.0  # below the stem's 95th-percentile loudness
SEARCH = (-1.0, 2.5)  # seconds around the LRC line start in which the onset is looked for


def onsets(loudness: np.ndarray, hop: float) -> list[float]:
    return list(vocals.onset_times(loudness, hop, float(np.percentile(loudness, 95)), ONSET_DB, QUIET_DB, 0.3))


def check(folder: Path) -> list[dict[str, object]]:
    rows = []
    for song in dev_set_songs(folder):
        rate = 48000
        samples = decode_audio(song["audio"], rate, channels=2)
        stem = vocals.spleeter_vocals(samples, rate)
        heard = onsets(vocals.loudness_db(stem, rate, smooth_seconds=vocals.HOP_SECONDS), vocals.HOP_SECONDS)
        deltas = []
        for line in parse_lrc(song["lrc"].read_text(encoding="utf-8")):
            near = [t - line["start"] for t in heard if SEARCH[0] <= t - line["start"] <= SEARCH[1]]
            if near:
                deltas.append(min(near, key=abs))
        rows.append({"id": song["id"], "lines_with_onset": len(deltas),
                     "median_shift_s": round(statistics.median(deltas), 2) if deltas else None,
                     "iqr_s": round(float(np.subtract(*np.percentile(deltas, [75, 25]))), 2) if len(deltas) > 3
                     else None})
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/devset/check_truth.py DEV_SET_DIR")
    check(Path(sys.argv[1]))
