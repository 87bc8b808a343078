"""The real CLI, end to end, on a short synthesised song: outputs, cache behaviour, rerun, sweep, kill-resume.

All runs in this module share one working directory, so they share outputs/ and the store the way a
user's runs do. Each test states which cache hits and misses it expects.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mvgen.media.video import probe, read_frames, read_subtitles
from mvgen.util import read_json, sha256_file

from .conftest import FAST, run_dir_of, run_mvgen

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def base_args(song_conf: Path) -> list[str]:
    return ["--config-dir", str(song_conf), *FAST]


@pytest.fixture(scope="module")
def first_run(workdir: Path, base_args: list[str]) -> Path:
    return run_dir_of(run_mvgen(base_args, workdir))


def misses(run_dir: Path) -> dict[str, int]:
    return {name: s["misses"] for name, s in read_json(run_dir / "manifest.json")["stages"].items()}


def test_run_directory_is_complete_and_frame_exact(first_run: Path, workdir: Path) -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}-\d{6}", first_run.relative_to(workdir / "outputs").as_posix())
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "song.wav", "song.json", "annotation.json",
                 "segments.json", "review.json", "master.mp4", "timeline.png", "contact_sheet.png", "manifest.json"):
        assert (first_run / name).is_file(), name

    song = sf.info(first_run / "song.wav")
    plan = read_json(first_run / "segments.json")
    fps = plan["fps"]
    total = round(song.frames / song.samplerate * fps)
    assert plan["total_frames"] == total == sum(s["frames"] for s in plan["segments"])

    lipsync = read_json(first_run / "manifest.json")["lipsync"]  # every lyric clip checked, with its figure
    lyric = [s["name"] for s in plan["segments"] if s["kind"] == "lyric"]
    assert sorted(lipsync) == sorted(lyric) and all(lipsync[n]["in_sync"] for n in lyric)
    assert all((first_run / "sync" / f"{n}.png").is_file() for n in lyric)

    review = read_json(first_run / "review.json")
    for segment in plan["segments"]:
        name = segment["name"]
        candidates = sorted((first_run / "frames" / name).glob("cand_*.png"))
        assert len(candidates) == 2
        for png in candidates:
            with Image.open(png) as image:
                assert image.size == (320, 192)
        prompts = read_json(first_run / "frames" / name / "prompts.json")["candidates"]
        assert [p["candidate"] for p in prompts] == [0, 1]
        assert review["segments"][name]["approved"] in (0, 1)
        clip = probe(first_run / "clips" / f"{name}.mp4", decode=True)
        assert clip["video"]["decoded_frames"] == segment["frames"]  # exact covered frame count

    master = probe(first_run / "master.mp4", decode=True)
    video, audio = master["video"], master["audio"]
    assert (video["codec"], video["profile"], video["pix_fmt"]) == ("h264", "High", "yuv420p")
    assert (video["width"], video["height"], video["fps"]) == (320, 192, 25.0)
    assert video["decoded_frames"] == total
    assert abs(video["decoded_frames"] / fps - song.frames / song.samplerate) <= 1 / fps  # within one frame
    assert (audio["codec"], audio["sample_rate"], audio["channels"]) == ("aac", 48000, 2)
    assert abs(audio["duration"] - song.frames / song.samplerate) < 0.05

    # every segment boundary lands on the frame the plan says: the master's frame at each segment's start
    # frame is that clip's first frame (stream copy: identical pixels)
    master_frames = read_frames(first_run / "master.mp4")
    for segment in plan["segments"]:
        first = read_frames(first_run / "clips" / f"{segment['name']}.mp4")[0]
        assert np.array_equal(master_frames[segment["start_frame"]], first), segment["name"]
    # the lyrics ride along as a soft subtitle track
    lyric = [p for p in read_json(first_run / "annotation.json")["phrases"] if p["kind"] == "lyric"]
    cues = read_subtitles(first_run / "master.mp4")
    assert [c[2] for c in cues] == [p["text"] for p in lyric]
    assert [round(c[0], 2) for c in cues] == pytest.approx([p["start"] for p in lyric], abs=0.002)

    manifest = read_json(first_run / "manifest.json")
    assert manifest["status"] == "ok" and len(manifest["config_hash"]) == 64
    assert manifest["packages"]["hydra-core"] and manifest["seeds"]["base"] == 1234
    assert set(manifest["stages"]) == {"music", "annotate", "segment", "frames", "review", "render", "assemble", "report"}
    assert all(s["hits"] == 0 for s in manifest["stages"].values())
    assert manifest["outputs"]["master.mp4"] == sha256_file(first_run / "master.mp4")
    for picture in ("timeline.png", "contact_sheet.png"):
        with Image.open(first_run / picture) as image:
            assert image.width > 600 and image.height > 200


def test_the_master_carries_the_song_audio(first_run: Path) -> None:
    """The master's audio is the song: its loudness envelope follows song.wav's."""
    import av

    song, rate = sf.read(first_run / "song.wav", dtype="float32")
    with av.open(str(first_run / "master.mp4")) as container:
        decoded = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    mono_master = decoded.mean(axis=0)
    mono_song = song.mean(axis=1)
    window = rate // 10
    n = min(len(mono_master), len(mono_song)) // window
    env_master = np.abs(mono_master[: n * window]).reshape(n, window).mean(axis=1)
    env_song = np.abs(mono_song[: n * window]).reshape(n, window).mean(axis=1)
    assert np.corrcoef(env_master, env_song)[0, 1] > 0.95


def test_second_identical_run_computes_nothing(first_run: Path, workdir: Path, base_args: list[str]) -> None:
    second = run_dir_of(run_mvgen(base_args, workdir))
    assert second != first_run
    assert set(misses(second).values()) == {0}
    assert read_json(second / "manifest.json")["outputs"] == read_json(first_run / "manifest.json")["outputs"]


def test_render_change_recomputes_only_render_and_assemble(first_run: Path, workdir: Path, base_args: list[str]) -> None:
    run = run_dir_of(run_mvgen([*base_args, "render.zoom=0.3"], workdir))
    segments = len(read_json(run / "segments.json")["segments"])
    assert misses(run) == {"music": 0, "annotate": 0, "segment": 0, "frames": 0, "review": 0,
                           "render": segments, "assemble": 1, "report": 0}


def test_one_prompt_change_rerenders_one_segment(first_run: Path, workdir: Path, base_args: list[str]) -> None:
    run = run_dir_of(run_mvgen([*base_args, "+song.overrides.seg_001.prompt=a red door in the rain"], workdir))
    counts = misses(run)
    assert (counts["frames"], counts["render"], counts["assemble"]) == (1, 1, 1)
    assert (counts["music"], counts["annotate"], counts["segment"]) == (0, 0, 0)
    prompts = read_json(run / "frames" / "seg_001" / "prompts.json")["candidates"]
    assert all(p["prompt"] == "a red door in the rain" for p in prompts)


def test_rerun_reproduces_every_artifact_from_scratch(first_run: Path, workdir: Path, tmp_path: Path) -> None:
    """Replay the saved run into a new directory with an empty store: every artifact hash is identical."""
    proc = run_mvgen(["rerun", str(first_run), f"store.root={tmp_path / 'fresh-store'}"], workdir)
    rerun = run_dir_of(proc)
    assert rerun != first_run
    manifest = read_json(rerun / "manifest.json")
    assert manifest["rerun_of"] == str(first_run.resolve())
    assert all(s["hits"] == 0 for s in manifest["stages"].values())  # really recomputed
    assert manifest["outputs"] == read_json(first_run / "manifest.json")["outputs"]
    assert manifest["config_hash"] == read_json(first_run / "manifest.json")["config_hash"]


def test_sweep_writes_a_comparison(first_run: Path, workdir: Path, base_args: list[str]) -> None:
    proc = run_mvgen(["-m", *base_args, "render.zoom=0.05,0.2"], workdir)
    match = re.search(r"sweep comparison: (\S+compare\.html)", proc.stdout)
    assert match, proc.stdout
    page = Path(match.group(1))
    page = page if page.is_absolute() else workdir / page
    compare = read_json(page.parent / "compare.json")
    jobs = compare["jobs"]
    assert [j["overrides"][-1] for j in jobs] == ["render.zoom=0.05", "render.zoom=0.2"]
    for job in jobs:
        assert job["status"] == "ok"
        assert job["stages"]["annotate"]["misses"] == 0  # upstream computed once, by earlier runs
        assert job["stages"]["frames"]["misses"] == 0
        assert (page.parent / job["master"]).is_file() and (page.parent / job["thumb"]).is_file()
        assert job["duration"] == pytest.approx(read_json(first_run / "manifest.json")["master"]["duration"])
    html = page.read_text()
    assert "render.zoom=0.05" in html and html.count("<img") == 2


@pytest.mark.parametrize("kill_at", ["frames:2", "render:2"])
def test_killed_run_resumes_with_finished_segments(first_run: Path, workdir: Path, base_args: list[str],
                                                   tmp_path: Path, kill_at: str) -> None:
    store = f"store.root={tmp_path / 'store'}"
    proc = run_mvgen([*base_args, store], workdir, env={"MVGEN_FAULT_KILL_AFTER": kill_at}, check=False)
    assert proc.returncode == -9, proc.stderr  # SIGKILL mid-stage
    stage = kill_at.split(":")[0]
    entries = list((tmp_path / "store" / stage).glob("*/*/_entry.json"))
    assert len(entries) == 2  # exactly the finished segments are in the store
    resumed = run_dir_of(run_mvgen([*base_args, store], workdir))
    manifest = read_json(resumed / "manifest.json")
    assert manifest["stages"][stage]["hits"] == 2  # finished segments were not recomputed
    assert manifest["outputs"]["master.mp4"] == read_json(first_run / "manifest.json")["outputs"]["master.mp4"]


def test_bad_input_is_one_line_and_keeps_outputs(workdir: Path, base_args: list[str]) -> None:
    before = sorted(p for p in (workdir / "outputs").rglob("*") if p.is_file())
    proc = run_mvgen([*base_args, "music=file", "music.path=/nonexistent/song.flac"], workdir, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "mvgen: error: audio file not found: /nonexistent/song.flac; check music.path")
    assert "Traceback" not in proc.stderr
    after = sorted(p for p in (workdir / "outputs").rglob("*") if p.is_file())
    assert set(before) <= set(after)


def test_typo_fails_before_running(workdir: Path) -> None:
    proc = run_mvgen(["segmnt.max_seconds=3"], workdir, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "mvgen: error: Could not override 'segmnt.max_seconds': Key 'segmnt' not in 'MvgenConfig'"


def test_any_file_name_works_from_the_command_line(first_run: Path, workdir: Path, base_args: list[str],
                                                   tmp_path: Path) -> None:
    """Spaces, accents, commas, quotes, = and brackets: mvgen quotes file-name values for Hydra itself."""
    folder = tmp_path / "Chansons d'été"
    folder.mkdir()
    audio = folder / "Été – démo, l'été=1 [v2].wav"
    audio.write_bytes((first_run / "song.wav").read_bytes())
    run = run_dir_of(run_mvgen([*base_args, "music=file", f"music.path={audio}"], workdir))
    assert read_json(run / "song.json")["duration"] == pytest.approx(read_json(first_run / "song.json")["duration"])
    assert probe(run / "master.mp4", decode=True)["video"]["decoded_frames"] == read_json(
        run / "segments.json")["total_frames"]
    rerun = run_dir_of(run_mvgen(["rerun", str(run)], workdir))  # the saved overrides replay as they ran
    assert sha256_file(rerun / "master.mp4") == sha256_file(run / "master.mp4")
    proc = run_mvgen([*base_args, "song.title=Été"], workdir, check=False)  # not a file name: says how to quote
    assert proc.returncode == 2 and "quote the value for Hydra: \"song.title='Été'\"" in proc.stderr


def test_a_first_run_from_an_audio_file_and_an_lrc(first_run: Path, tmp_path: Path) -> None:
    """mvgen new writes the song file (language detected from the audio), then its printed command works from
    anywhere: the song file outside conf/, the audio and lyrics where they are."""
    audio, lyrics = tmp_path / "My Song (live).wav", tmp_path / "my song.lrc"
    audio.write_bytes((first_run / "song.wav").read_bytes())
    lyrics.write_text((first_run / "song.lrc").read_text())
    proc = run_mvgen(["new", str(audio), str(lyrics)], tmp_path)
    song_file = tmp_path / "songs" / "my_song_live.yaml"
    assert song_file.is_file() and "language: en" in song_file.read_text()  # detected by the bundled Whisper
    command = proc.stdout.strip().splitlines()[-1].strip()
    assert command.startswith("mvgen song=songs/my_song_live.yaml music=file") and "annotate=lrc" in command
    import shlex

    run = run_dir_of(run_mvgen([*shlex.split(command)[1:], *FAST[1:]], tmp_path))
    assert read_json(run / "annotation.json")["aligner"]["backend"] == "lrc"  # the LRC's own timings
    assert probe(run / "master.mp4", decode=True)["video"]["decoded_frames"] == read_json(
        run / "segments.json")["total_frames"]
    again = run_mvgen(["new", str(audio), str(lyrics)], tmp_path, check=False)
    assert again.returncode == 2 and "already exists" in again.stderr
