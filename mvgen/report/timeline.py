"""``timeline.png``: the song's waveform (with the stretches where the vocal stem says someone sings), its
phrases (lyric vs instrumental; flagged lines hatched and marked with "!"), and the clip windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mvgen.media.audio import read_wav

LYRIC, INSTRUMENTAL = "#e4572e", "#4c72b0"


def plot_timeline(song_wav: Path, annotation: dict[str, Any], plan: dict[str, Any], out_path: Path,
                  title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples, rate = read_wav(song_wav)
    mono = samples.mean(axis=1)
    duration = len(mono) / rate
    bins = 4000
    usable = len(mono) // bins * bins
    envelope = np.abs(mono[:usable]).reshape(bins, -1).max(axis=1) if usable else np.zeros(bins)
    times = np.linspace(0, duration, bins)

    width = max(14.0, min(40.0, duration / 6.0))
    fig, (ax_wave, ax_phr, ax_seg) = plt.subplots(3, 1, figsize=(width, 6.5), sharex=True,
                                                   gridspec_kw={"height_ratios": [2, 1.4, 1.2]})
    ax_wave.fill_between(times, -envelope, envelope, color="#333333", linewidth=0)
    grid = plan.get("beats") or {}
    peak = float(envelope.max(initial=0.0)) or 1.0
    ax_wave.vlines(grid.get("beats", []), -peak, -0.8 * peak, color="#2a9d8f", linewidth=0.6, label="beats")
    ax_wave.vlines(grid.get("downbeats", []), -peak, -0.55 * peak, color="#264653", linewidth=1.2, label="downbeats")
    voiced = (annotation.get("aligner") or {}).get("voiced") or []
    for k, (start, end) in enumerate(voiced):  # where the vocal stem says someone sings (annotate.vocal_guide)
        ax_wave.axvspan(start, end, ymin=0.94, ymax=1.0, color="#8ac926", linewidth=0,
                        label="voice heard" if k == 0 else None)
    if grid.get("beats") or voiced:
        ax_wave.legend(loc="upper right", fontsize=7)
    ax_wave.set_ylabel("song")
    ax_wave.set_yticks([])
    ax_wave.set_title(title or "timeline", loc="left")
    mismatch = annotation.get("lyrics_mismatch")
    if mismatch:
        ax_wave.text(0.5, 0.5, f"LYRICS DO NOT MATCH THE AUDIO? {mismatch['unplaced']} of {mismatch['lines']} lines "
                     "could not be placed", transform=ax_wave.transAxes, ha="center", va="center", fontsize=16,
                     color="#ff3b30", fontweight="bold", bbox={"facecolor": "white", "alpha": 0.8})

    flagged = {flag["phrase"] for flag in annotation.get("flags", [])}
    for phrase in annotation["phrases"]:
        colour = LYRIC if phrase["kind"] == "lyric" else INSTRUMENTAL
        uncertain = phrase["index"] in flagged
        ax_phr.barh(0, phrase["end"] - phrase["start"], left=phrase["start"], height=0.8, color=colour, alpha=0.85,
                    hatch="////" if uncertain else None, edgecolor="black" if uncertain else colour)
        singers = " & ".join(phrase.get("performers") or [])
        label = ("! " if uncertain else "") + (f"{singers}: " if singers else "") + (phrase["text"] or phrase["section"])
        ax_phr.text(phrase["start"] + 0.05, 0.55, label[:40], fontsize=7, rotation=25, ha="left", va="bottom",
                    clip_on=True)
        for word in phrase["words"]:
            ax_phr.plot([word["start"]] * 2, [-0.4, -0.1], color="black", linewidth=0.5)
    ax_phr.set_ylim(-0.5, 2.2)
    ax_phr.set_yticks([])
    ax_phr.set_ylabel("phrases")
    ax_phr.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=LYRIC), plt.Rectangle((0, 0), 1, 1, color=INSTRUMENTAL),
                           plt.Rectangle((0, 0), 1, 1, facecolor=LYRIC, hatch="////", edgecolor="black")],
                  labels=["lyric", "instrumental", f"flagged ({len(flagged)}): timing uncertain"],
                  loc="upper right", fontsize=7)

    for segment in plan["segments"]:
        colour = LYRIC if segment["kind"] == "lyric" else INSTRUMENTAL
        ax_seg.barh(0, segment["end"] - segment["start"], left=segment["start"], height=0.8, color=colour,
                    alpha=0.35 + 0.3 * (segment["index"] % 2), edgecolor="black", linewidth=0.6)
        initials = "&".join(name[:1] for name in segment.get("performers") or [])
        ax_seg.text((segment["start"] + segment["end"]) / 2, 0,
                    f"{segment['index']}{' ' + initials if initials else ''}\n{segment['frames'] / plan['fps']:.1f}s",
                    ha="center", va="center", fontsize=7)
        for ax in (ax_wave, ax_phr):
            ax.axvline(segment["start"], color="#999999", linewidth=0.5, zorder=0)
    ax_seg.set_yticks([])
    ax_seg.set_ylabel("clips")
    ax_seg.set_xlabel("seconds")
    ax_seg.set_xlim(0, duration)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
