"""`mvgen eval DEV_SET_DIR`: a dev set folder aligned song by song, scored against its LRC timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from mvgen.errors import MvgenError
from mvgen.evaluate import dev_set_songs, evaluate_cli
from mvgen.stages.music import DemoSongMaker
from mvgen.util import read_json

LYRICS = """[verse]
Neon rivers running through the midnight town
Every window humming with a golden sound
[chorus]
Hold the light and carry me home
"""


def _lrc(lines: list[dict], shift: float) -> str:
    def clock(t: float) -> str:
        return f"[{int(t // 60):02d}:{t - 60 * int(t // 60):05.2f}]"
    return "".join(f"{clock(line['start'] + shift)}{line['text']}\n" for line in lines)


@pytest.fixture(scope="module")
def dev_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """One synthesised song, listed three times: its own timings; timings 6 s late with a manifest
    ``truth_offset_s`` of -6 that puts them back; and the same late timings uncorrected."""
    folder = tmp_path_factory.mktemp("devset")
    DemoSongMaker(seed=7).make({"lyrics": LYRICS, "bpm": 110}, folder)
    sf.write(folder / "song.flac", sf.read(folder / "song.wav")[0], 48000)
    truth = read_json(folder / "truth.json")["lines"]
    (folder / "on_time.lrc").write_text(_lrc(truth, 0.0), encoding="utf-8")
    (folder / "late.lrc").write_text(_lrc(truth, 6.0), encoding="utf-8")
    manifest = [{"id": "on_time", "language": "en", "audio": "song.flac", "lrc": "on_time.lrc"},
                {"id": "late_corrected", "language": "en", "audio": "song.flac", "lrc": "late.lrc",
                 "truth_offset_s": -6.0},
                {"id": "late", "language": "en", "audio": "song.flac", "lrc": "late.lrc"}]
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder, truth


@pytest.mark.slow
def test_a_dev_set_prints_its_table_and_writes_eval_json(dev_set: tuple[Path, list[dict]], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    folder, truth = dev_set
    result = evaluate_cli([str(folder), "--out", str(tmp_path)])
    rows = {row["id"]: row for row in result["songs"]}
    assert rows["on_time"]["mae"] <= 0.3 and rows["on_time"]["over_5s"] == 0
    assert rows["late_corrected"]["errors"] == rows["on_time"]["errors"]  # the offset undoes the shift exactly
    assert rows["late"]["over_5s"] == len(truth) and rows["late"]["over_1s"] == len(truth)
    summary = result["summary"]
    assert summary["songs"] == 3 and summary["songs_mae_within_0.5"] == 2
    assert summary["lines"] == 3 * len(truth) and summary["lines_over_5s"] == len(truth)
    assert 0.0 <= summary["over_1s_flagged_share"] <= 1.0 and 0.0 < summary["rtf"] < 1.0
    assert list(summary["by_language"]) == ["en"] and summary["by_language"]["en"]["lines_over_5s"] == len(truth)
    assert read_json(tmp_path / "eval.json") == json.loads(json.dumps(result))
    assert (tmp_path / "late" / "annotation.json").is_file()
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["song", "lang", "lines", "MAE"]
    assert "2/3 songs at MAE <= 0.5 s" in out and f"{len(truth)} of {3 * len(truth)} lines > 5 s off" in out


def test_a_dev_set_folder_without_a_manifest_reads_its_sub_folders(tmp_path: Path) -> None:
    song = tmp_path / "fr_chanson"
    song.mkdir()
    (song / "audio.ogg").write_bytes(b"")
    (song / "lyrics.lrc").write_text("[00:01.00]un\n[00:02.00]deux\n", encoding="utf-8")
    (song / "meta.json").write_text('{"language": "fr"}', encoding="utf-8")
    (tmp_path / "notes").mkdir()  # no lyrics.lrc: not a song
    [found] = dev_set_songs(tmp_path)
    assert (found["id"], found["language"], found["audio"].name, found["truth_offset_s"]) == \
        ("fr_chanson", "fr", "audio.ogg", 0.0)
    with pytest.raises(MvgenError, match="holds no songs"):
        dev_set_songs(tmp_path / "notes")
