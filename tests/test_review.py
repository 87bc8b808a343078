"""Review: CLIP scoring on a tiny CLIP, diffusers frames on a tiny SDXL, and the manual review page driven
in a real headless Chromium (approve by clicking, review.json updated, rerun continues)."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from mvgen.errors import MvgenError
from mvgen.media.video import probe
from mvgen.review_server import make_server, render_page
from mvgen.stages.frames import DiffusersFrames
from mvgen.stages.prompts import PromptBuilder
from mvgen.stages.review import AutoReview
from mvgen.util import read_json, sha256_file

from .conftest import FAST, run_dir_of, run_mvgen


SONG = {"title": "t", "style": "pop", "visual": {"characters": ["a singer in a red coat"], "locations": ["a pier"],
                                                 "palette": ["#112233", "#ddeeff"], "era": "1980s", "camera": "35mm"}}
SEGMENT = {"index": 3, "name": "seg_003", "kind": "lyric", "text": "hold the light", "section": "chorus",
           "section_index": 1, "mood": "euphoric", "start": 10.0, "end": 14.8}


def _prompts(n: int = 3) -> list[dict]:
    builder = PromptBuilder(lyric="{character}, {shot}, singing '{lyric}'", instrumental="{location}",
                            lyric_shots=["close-up", "medium shot"], seed=5)
    return builder.build(SONG, SEGMENT, n)


def test_diffusers_frames_from_a_saved_tiny_sdxl(tiny_sdxl: Path, tmp_path: Path) -> None:
    """The same loading path as real weights: class name + id_or_path, safetensors, batches, per-candidate seeds."""
    frames = DiffusersFrames(pipeline="StableDiffusionXLPipeline", id_or_path=str(tiny_sdxl), dtype="float32",
                             device="cpu", steps=2, guidance=5.0, width=96, height=64, candidates=3, batch_size=2,
                             scheduler="dpmpp")
    prompts = _prompts(3)
    frames.generate(SONG, SEGMENT, prompts, tmp_path)
    images = [Image.open(tmp_path / f"cand_{k}.png") for k in range(3)]
    assert all(image.size == (96, 64) for image in images)
    assert len({image.tobytes() for image in images}) == 3  # different seeds, different frames
    # any single frame can be regenerated alone: candidate 2 by itself gives the same pixels
    alone = tmp_path / "alone"
    alone.mkdir()
    frames.generate(SONG, SEGMENT, prompts[2:], alone)
    assert np.abs(np.asarray(Image.open(alone / "cand_2.png"), np.int16)
                  - np.asarray(images[2], np.int16)).max() <= 2


@pytest.mark.parametrize("pipeline,expected", [("Flux2KleinPipeline", "one shared list"),
                                               ("QwenImageEditPlusPipeline", "one per prompt")])
def test_the_identity_reference_is_passed_the_way_the_pipeline_reads_it(monkeypatch: pytest.MonkeyPatch,
                                                                        pipeline: str, expected: str) -> None:
    """FLUX.2 reads ``image`` as references shared by every prompt: once, not once per prompt."""
    seen: dict[str, object] = {}

    def call(self: object, prompt: list[str], image: object = None, **kwargs: object) -> object:
        seen["image"] = image
        return type("Out", (), {"images": [Image.new("RGB", (96, 64)) for _ in prompt]})()

    stub = type(pipeline, (), {"__call__": call})()
    frames = DiffusersFrames(pipeline=pipeline, id_or_path="x/y", device="cpu", width=96, height=64, batch_size=3)
    monkeypatch.setattr(frames, "_pipe", lambda: stub)
    reference = Image.new("RGB", (96, 64), (200, 10, 10))
    frames._run(_prompts(3), reference)
    if expected == "one shared list":
        assert seen["image"] == [reference]
    else:
        assert seen["image"] == [reference] * 3


def test_diffusers_frames_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(MvgenError, match="frames.scheduler"):
        DiffusersFrames(pipeline="StableDiffusionXLPipeline", id_or_path="x/y", scheduler="magic")
    frames = DiffusersFrames(pipeline="NoSuchPipeline", id_or_path=str(tmp_path), device="cpu")
    with pytest.raises(MvgenError, match="not a diffusers pipeline class"):
        frames.generate(SONG, SEGMENT, _prompts(1), tmp_path)


def test_clip_review_scores_and_states_the_score(tiny_clip: Path, tmp_path: Path) -> None:
    paths = []
    for k in range(3):
        pixels = (np.random.default_rng(k).random((64, 96, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"c{k}.png")
        paths.append(tmp_path / f"c{k}.png")
    Image.new("RGB", (96, 64), (40, 40, 40)).save(tmp_path / "blank.png")
    candidates = [{"candidate": k, "seed": 10 + k, "path": p, "prompt": "a singer"} for k, p in enumerate(paths)]
    candidates.append({"candidate": 3, "seed": 1, "path": tmp_path / "blank.png", "prompt": "a singer"})
    verdict = AutoReview(clip_model=str(tiny_clip), device="cpu").review(candidates)
    rows = {r["candidate"]: r for r in verdict["candidates"]}
    assert all(-1.0 <= rows[k]["clip"] <= 1.0 for k in range(4))
    assert rows[3]["blank"] and verdict["approved"] != 3  # a blank frame is never approved
    best = max((r for r in rows.values() if not r["blank"]), key=lambda r: r["score"])
    assert verdict["approved"] == best["candidate"]


def test_page_escapes_lyrics_and_prompts() -> None:
    review = {"segments": {"seg_000": {
        "start": 0, "end": 4, "section": "verse", "kind": "lyric", "text": "<script>alert(1)</script> & more",
        "approved": None, "files": [{"candidate": 0, "seed": 1, "hash": "h", "image": "frames/seg_000/cand_0.png",
                                     "prompt": '"><img src=x onerror=alert(2)>'}]}}}
    page = render_page(review, "<b>run</b>")
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "<img src=x" not in page and "<b>run</b>" not in page


# --------------------------------------------------------------------------------- the review page
@pytest.fixture(scope="module")
def awaiting_run(song_conf: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real run with review=manual: it stops after the frames, with review.json waiting for approvals."""
    workdir = tmp_path_factory.mktemp("manual")
    proc = run_mvgen(["--config-dir", str(song_conf), *FAST, "review=manual"], workdir)
    assert "frames are ready for review" in proc.stdout
    run_dir = Path(proc.stdout.split("mvgen review ")[1].split()[0])
    return workdir, run_dir


@pytest.fixture()
def server(awaiting_run: tuple[Path, Path]) -> Iterator[str]:
    _, run_dir = awaiting_run
    httpd = make_server(run_dir, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_manual_review_stops_the_run_after_frames(awaiting_run: tuple[Path, Path]) -> None:
    _, run_dir = awaiting_run
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "awaiting_review" and manifest["awaiting_review"]
    assert not (run_dir / "master.mp4").exists() and (run_dir / "contact_sheet.png").is_file()
    review = read_json(run_dir / "review.json")
    assert all(r["approved"] is None for r in review["segments"].values())


def test_server_binds_loopback_and_refuses_paths_outside_the_run(server: str, awaiting_run: tuple[Path, Path]) -> None:
    _, run_dir = awaiting_run
    assert server.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(f"{server}/files/frames/seg_000/cand_0.png") as response:
        assert response.headers["Content-Type"] == "image/png"
    secret = run_dir.parent / "secret.png"
    shutil.copy(run_dir / "frames" / "seg_000" / "cand_0.png", secret)
    for path in ("/files/../secret.png", "/files/%2e%2e/secret.png", "/files/..%2fsecret.png",
                 "/files//etc/passwd", "/files/manifest.json", "/files/frames/../../secret.png"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(server + path)
        assert info.value.code == 404, path
    token = _token(server)
    request = urllib.request.Request(f"{server}/api/approve", data=json.dumps({"segment": "seg_000", "candidate": 9})
                                     .encode(), headers={"Content-Type": "application/json", "X-Mvgen-Token": token},
                                     method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    assert info.value.code == 400 and "no candidate 9" in json.loads(info.value.read())["error"]


def _token(server: str) -> str:
    page = urllib.request.urlopen(server + "/").read().decode()
    return page.split('name="mvgen-token" content="')[1].split('"')[0]


def _raw(server: str, request: bytes, timeout: float = 15.0) -> tuple[int, str]:
    """Send raw bytes; return (status, reason text). The server must answer, never hang or drop us."""
    import socket

    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


def test_no_other_site_can_drive_the_review_server(server: str, awaiting_run: tuple[Path, Path]) -> None:
    """The probes that got through before: cross-site POST, DNS rebinding, length games, odd JSON, loose types."""
    _, run_dir = awaiting_run
    before = (run_dir / "review.json").read_bytes()
    token = _token(server)
    port = server.rsplit(":", 1)[1]

    def post(body: bytes, headers: dict[str, str], path: str = "/api/approve") -> tuple[int, str]:
        lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return _raw(server, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    good = {"Content-Type": "application/json", "X-Mvgen-Token": token}
    approve = json.dumps({"segment": "seg_000", "candidate": 1}).encode()
    cases = [
        (approve, {**good, "Origin": "http://evil.example", "Content-Length": str(len(approve))}, 403),
        (approve, {"Content-Type": "text/plain", "X-Mvgen-Token": token, "Content-Length": str(len(approve))}, 415),
        (approve, {"Content-Type": "application/json", "Content-Length": str(len(approve))}, 403),  # no token
        (b"x" * 100, {**good, "Content-Length": "-1"}, 411),
        (b"{}", {**good, "Content-Length": str(400 * 2**20)}, 413),  # refused before reading, no hang
        (b"{}", {**good, "Content-Length": "200"}, 408),  # promises more than it sends: answered after a timeout
        (b'{"segment": "seg_000", "candidate": 1e309}', {**good, "Content-Length": "42"}, 400),
        (b"[" * 5000 + b"]" * 5000, {**good, "Content-Length": "10000"}, 400),
        (b'{"segment": "seg_000", "candidate": true}', {**good, "Content-Length": "41"}, 400),
        (b'{"segment": "seg_000", "candidate": 1.9}', {**good, "Content-Length": "40"}, 400),
        (b'{"segment": "seg_000", "candidate": NaN}', {**good, "Content-Length": "40"}, 400),
    ]
    for body, headers, status in cases:
        got, reason = post(body, headers)
        assert got == status, (headers, body[:50], got, reason)
        assert "error" in json.loads(reason)
    rebinding = _raw(server, f"GET /api/review HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n"
                     .encode())
    assert rebinding[0] == 421
    assert _raw(server, f"GET /files/x%00y.png HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                .encode())[0] == 400
    assert (run_dir / "review.json").read_bytes() == before  # nothing changed


def test_two_servers_on_one_run_lose_no_click(awaiting_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, run_dir = awaiting_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    servers = [make_server(copy, port=0) for _ in range(2)]
    for one in servers:
        threading.Thread(target=one.serve_forever, daemon=True).start()
    urls = [f"http://127.0.0.1:{one.server_address[1]}" for one in servers]
    tokens = [_token(url) for url in urls]

    def click(k: int) -> None:
        request = urllib.request.Request(f"{urls[k % 2]}/api/regenerate", data=b'{"segment": "seg_000"}',
                                         headers={"Content-Type": "application/json", "X-Mvgen-Token": tokens[k % 2]},
                                         method="POST")
        urllib.request.urlopen(request).read()

    try:
        workers = [threading.Thread(target=lambda k=k: [click(k * 25 + i) for i in range(25)]) for k in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        for one in servers:
            one.shutdown()
            one.server_close()
    assert read_json(copy / "review.json")["segments"]["seg_000"]["reseed"] == 100


def _chromium() -> object:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/setup.sh installs them as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def _click(browser: object, selector: str) -> None:
    """Scroll an element into view and click it."""
    from selenium.webdriver.common.by import By

    element = browser.find_element(By.CSS_SELECTOR, selector)  # type: ignore[attr-defined]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)  # type: ignore[attr-defined]
    element.click()


@pytest.mark.browser
def test_approve_by_clicking_in_chromium_then_rerun_renders(server: str, awaiting_run: tuple[Path, Path],
                                                           song_conf: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    workdir, run_dir = awaiting_run
    segments = list(read_json(run_dir / "review.json")["segments"])
    browser = _chromium()
    click = partial(_click, browser)

    try:
        browser.get(server + "/")
        assert browser.title.startswith("mvgen review")
        wait = WebDriverWait(browser, 10)
        for index, name in enumerate(segments):
            candidate = index % 2
            click(f'button.approve[data-segment="{name}"][data-candidate="{candidate}"]')
            wait.until(expected_conditions.text_to_be_present_in_element(
                (By.CSS_SELECTOR, f'section[data-segment="{name}"] .status'), f"approved: candidate {candidate}"))
        assert browser.find_element(By.ID, "summary").text.startswith(f"{len(segments)} of {len(segments)}")
        # a reviewer changes their mind on the first segment: the last click wins
        click(f'button.approve[data-segment="{segments[0]}"][data-candidate="1"]')
        wait.until(expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, f'section[data-segment="{segments[0]}"] .status'), "approved: candidate 1"))
    finally:
        browser.quit()

    review = read_json(run_dir / "review.json")  # saved as clicked, before any rerun
    expected = {name: (1 if i == 0 else i % 2) for i, name in enumerate(segments)}
    assert {name: r["approved"] for name, r in review["segments"].items()} == expected

    proc = run_mvgen(["rerun", str(run_dir)], workdir)
    rerun = run_dir_of(proc)
    final = read_json(rerun / "review.json")
    assert {name: r["approved"] for name, r in final["segments"].items()} == expected
    assert read_json(rerun / "manifest.json")["status"] == "ok" and (rerun / "master.mp4").is_file()
    assert read_json(rerun / "manifest.json")["stages"]["frames"]["misses"] == 0  # frames reused


def test_new_seeds_request_regenerates_only_that_segment(awaiting_run: tuple[Path, Path], tmp_path: Path) -> None:
    from mvgen.review_server import ReviewStore

    workdir, run_dir = awaiting_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    store = ReviewStore(copy)
    names = list(store.read()["segments"])
    for name in names:
        store.approve(name, 0)
    store.regenerate(names[1])
    proc = run_mvgen(["rerun", str(copy)], workdir)
    assert "frames are ready for review (1 segments to approve)" in proc.stdout
    again = Path(proc.stdout.split("mvgen review ")[1].split()[0])
    manifest = read_json(again / "manifest.json")
    assert manifest["awaiting_review"] == [names[1]] and manifest["stages"]["frames"]["misses"] == 1


def test_a_frame_preset_through_the_cli_with_reference_and_clip(tiny_sdxl: Path, tiny_clip: Path, song_conf: Path,
                                                               tmp_path: Path) -> None:
    """frames=sdxl and review=clip loaded through id_or_path, end to end; the reference is made once."""
    args = ["--config-dir", str(song_conf), *FAST, "frames=sdxl", f"frames.id_or_path={tiny_sdxl}",
            "frames.dtype=float32", "frames.steps=2", "frames.width=96", "frames.height=64",
            "frames.candidates=2", "frames.reference=generate", "review=clip", f"review.clip_model={tiny_clip}"]
    run = run_dir_of(run_mvgen(args, tmp_path))
    assert Image.open(run / "frames" / "reference.png").size == (96, 64)
    review = read_json(run / "review.json")
    for name, record in review["segments"].items():
        assert all("clip" in row for row in record["candidates"])
        assert Image.open(run / record["image"]).size == (96, 64)
    manifest = read_json(run / "manifest.json")
    assert manifest["stages"]["frames"]["misses"] == len(review["segments"]) + 1  # segments + one reference
    assert manifest["master"]["video"]["width"] == 320  # the renderer scales the approved frame


DUET_SONG = """# @package _global_
defaults:
  - base_song@song
  - _self_
song:
  id: duet
  title: Duet Test Song
  language: en
  bpm: 120
  lyrics: |
    [verse: Ana]
    Paper boats are sailing down the street
    [chorus: Ana & Leo]
    Sing it loud and carry me away
    Leo: Morning light is dancing at my feet
  visual:
    performers:
      - name: Ana
        description: a drummer in a yellow raincoat
      - name: Leo
        description: a bassist with a grey beard
        reference_image: LEO_IMAGE
    locations: [a flooded street]
"""


def test_every_performer_gets_an_identity_reference_and_duets_a_two_shot(tiny_sdxl: Path, tmp_path: Path) -> None:
    leo = tmp_path / "leo.png"
    Image.new("RGB", (40, 30), (10, 200, 10)).save(leo)
    (tmp_path / "conf" / "song").mkdir(parents=True)
    (tmp_path / "conf" / "song" / "duet.yaml").write_text(DUET_SONG.replace("LEO_IMAGE", str(leo)))
    args = ["--config-dir", str(tmp_path / "conf"), *FAST[1:], "song=duet", "frames=sdxl",
            f"frames.id_or_path={tiny_sdxl}", "frames.dtype=float32", "frames.steps=2", "frames.width=96",
            "frames.height=64", "frames.candidates=2", "frames.reference=generate"]
    run = run_dir_of(run_mvgen(args, tmp_path))
    assert Image.open(run / "frames" / "reference_ana.png").size == (96, 64)  # generated from her description
    assert np.asarray(Image.open(run / "frames" / "reference_leo.png"))[0, 0].tolist() == [10, 200, 10]  # given
    segments = read_json(run / "segments.json")["segments"]
    manifest = read_json(run / "manifest.json")
    assert manifest["stages"]["frames"]["misses"] == len(segments) + 2  # segments + the song's and Ana's
    duet = [s for s in segments if s["performers"] == ["Ana", "Leo"]]
    assert duet, [s["performers"] for s in segments]
    prompts = read_json(run / "frames" / duet[0]["name"] / "prompts.json")["candidates"]
    assert all("two-shot of both singers" in c["prompt"] and "grey beard" in c["prompt"] for c in prompts)


# ------------------------------------------------------------------------------------- the lyrics view
@pytest.fixture(scope="module")
def auto_run(song_conf: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    workdir = tmp_path_factory.mktemp("lyrics")
    return workdir, run_dir_of(run_mvgen(["--config-dir", str(song_conf), *FAST], workdir))


def test_lyric_edits_are_checked_and_audio_is_served_in_ranges(auto_run: tuple[Path, Path]) -> None:
    from mvgen.review_server import ReviewStore

    _, run_dir = auto_run
    store = ReviewStore(run_dir)
    lyrics = store.lyrics()
    annotation = read_json(run_dir / "annotation.json")
    assert [item["line"] for item in lyrics["lines"]] == [p["line"] for p in annotation["phrases"] if p["kind"] == "lyric"]
    assert len(lyrics["envelope"]) == pytest.approx(lyrics["duration"] * lyrics["points_per_second"], abs=2)
    # where the voice is heard (the vocal guide) comes with it, and covers every line's onset
    assert lyrics["voiced"] == annotation["aligner"]["voiced"] and lyrics["voiced"]
    assert all(any(a - 0.5 <= item["start"] <= b for a, b in lyrics["voiced"]) for item in lyrics["lines"])
    for bad in ((99, 1.0, 2.0), (0, 3.0, 2.0), (0, -1.0, 2.0), (0, 1.0, lyrics["duration"] + 1)):
        with pytest.raises(MvgenError):
            store.edit_line(*bad)
    assert not (run_dir / "lyrics_edits.json").exists()  # nothing saved from a bad edit
    server = make_server(run_dir, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/files/song.wav"
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=100-199"})) as response:
            assert response.status == 206 and len(response.read()) == 100
            assert response.headers["Content-Range"].startswith("bytes 100-199/")
        page = urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/").read().decode()
        assert page.count('class="bar') == len(lyrics["lines"]) and "</script></section>" in page
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.browser
@pytest.mark.slow
def test_fix_a_line_by_hand_in_chromium_then_rerun_replans_only_what_changed(auto_run: tuple[Path, Path]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    workdir, run_dir = auto_run
    annotation = read_json(run_dir / "annotation.json")
    lyric = [p for p in annotation["phrases"] if p["kind"] == "lyric"]
    flagged = {f["line"] for f in annotation["flags"]}
    line = lyric[1]
    edits_file = run_dir / "lyrics_edits.json"
    server = make_server(run_dir, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = _chromium()
    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/")
        bars = browser.find_elements(By.CSS_SELECTOR, "#track .bar")
        assert len(bars) == len(lyric)
        assert {int(b.get_attribute("data-line")) for b in bars if "flagged" in b.get_attribute("class")} == flagged
        n = line["line"]
        nudge = browser.find_element(By.CSS_SELECTOR, f'button.nudge[data-line="{n}"][data-edge="start"][data-by="0.1"]')
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", nudge)
        nudge.click()
        wait = WebDriverWait(browser, 10)
        wait.until(lambda _: edits_file.is_file() and read_json(edits_file)["lines"].get(str(n), {}).get("start")
                   == round(line["start"] + 0.1, 3))
        handle = browser.find_element(By.CSS_SELECTOR, f'.bar[data-line="{n}"] .handle.end')
        browser.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'center'})", handle)
        ActionChains(browser).click_and_hold(handle).move_by_offset(40, 0).release().perform()  # 40 px = 1 s
        wait.until(lambda _: abs(read_json(edits_file)["lines"][str(n)]["end"] - (line["end"] + 1.0)) < 0.05)
        play = browser.find_element(By.CSS_SELECTOR, f'button.play[data-line="{n}"]')
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", play)
        play.click()
        position = browser.execute_script("return document.getElementById('player').currentTime")
        assert position >= line["start"] + 0.1 - 0.05  # playback starts at the edited onset
        assert "edited" in browser.find_element(By.CSS_SELECTOR, f'.bar[data-line="{n}"]').get_attribute("class")
    finally:
        browser.quit()
        server.shutdown()
        server.server_close()

    saved = read_json(edits_file)["lines"][str(n)]
    rerun = run_dir_of(run_mvgen(["rerun", str(run_dir)], workdir))
    edited = next(p for p in read_json(rerun / "annotation.json")["phrases"] if p["line"] == n)
    assert (edited["start"], edited["end"]) == (saved["start"], saved["end"]) and edited["edited"]
    assert read_json(rerun / "lyrics_edits.json")["lines"] == read_json(edits_file)["lines"]  # carried on
    stages = read_json(rerun / "manifest.json")["stages"]
    segments = len(read_json(rerun / "segments.json")["segments"])
    assert stages["annotate"] == {**stages["annotate"], "hits": 1, "misses": 1}  # aligned reused, edits applied
    assert stages["segment"]["misses"] == 1  # replanned
    assert 0 < stages["frames"]["misses"] < segments  # only the segments whose window moved are drawn again
    assert probe(rerun / "master.mp4", decode=True)["video"]["decoded_frames"] == read_json(
        rerun / "segments.json")["total_frames"]


# ------------------------------------------------------------------------------------- the clips view
@pytest.fixture(scope="module")
def clip_run(song_conf: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    workdir = tmp_path_factory.mktemp("clips")
    return workdir, run_dir_of(run_mvgen(["--config-dir", str(song_conf), *FAST], workdir))


@pytest.mark.browser
@pytest.mark.slow
def test_review_clips_in_chromium_then_rerun_renders_only_the_rerolled_clip(clip_run: tuple[Path, Path]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    workdir, run_dir = clip_run
    segments = read_json(run_dir / "segments.json")["segments"]
    decisions = run_dir / "clip_review.json"
    server = make_server(run_dir, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = _chromium()
    click = partial(_click, browser)

    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/")
        videos = browser.find_elements(By.CSS_SELECTOR, "div.clip video")
        assert len(videos) == len(segments)
        sync = browser.find_element(By.CSS_SELECTOR, f'section[data-segment="{segments[1]["name"]}"] .sync').text
        assert sync.startswith("lip sync")
        click(f'section[data-segment="{segments[1]["name"]}"] button.listen')  # hear what the frame is sung to
        position = browser.execute_script("return document.getElementById('player').currentTime")
        assert position == pytest.approx(segments[1]["start"], abs=0.05)
        field = browser.find_element(By.CSS_SELECTOR, f'input.clip-prompt[data-segment="{segments[1]["name"]}"]')
        field.send_keys("a red door in the rain")
        click(f'button.clip-reroll[data-segment="{segments[1]["name"]}"]')
        click(f'button.clip-approve[data-segment="{segments[0]["name"]}"]')
        wait = WebDriverWait(browser, 10)
        wait.until(lambda _: decisions.is_file() and len(read_json(decisions)["segments"]) == 2)
    finally:
        browser.quit()
        server.shutdown()
        server.server_close()

    saved = read_json(decisions)["segments"]
    assert saved[segments[1]["name"]] == {"approved": None, "take": 1, "prompt": "a red door in the rain"}
    assert saved[segments[0]["name"]]["approved"] is True
    rerun = run_dir_of(run_mvgen(["rerun", str(run_dir)], workdir))
    stages = read_json(rerun / "manifest.json")["stages"]
    assert stages["render"]["misses"] == 1 and stages["render"]["hits"] == len(segments) - 1
    assert stages["frames"]["misses"] == 0  # the start frames stay
    name = segments[1]["name"]
    assert sha256_file(rerun / "clips" / f"{name}.mp4") != sha256_file(run_dir / "clips" / f"{name}.mp4")
    assert read_json(rerun / "clip_review.json")["segments"] == saved  # carried on for the next rerun
