"""The review page: ``mvgen review RUN_DIR`` serves it on 127.0.0.1.

Two views on one page, and every click is saved at once (atomic writes under a file lock, so two servers on
one run lose nothing); ``mvgen rerun RUN_DIR`` then continues from what was saved:

- Lyrics: the song's waveform with every lyric line on it, flagged lines (uncertain timing) in red. A person
  plays a line's stretch, drags its edges or nudges them by 0.1 s. Edits go to ``RUN_DIR/lyrics_edits.json``;
  the rerun applies them as its own store entry, so only the segments whose timing changed are planned,
  drawn and rendered again.
- Frames: per segment, the lyric line, its time window and section, and the candidate frames side by side.
  A person approves one candidate, or asks for new seeds for the segment (``RUN_DIR/review.json``).

Safety: binds 127.0.0.1 (another address needs ``--allow-remote`` and prints a warning); answers only
requests addressed to itself (Host check: no DNS rebinding); a change needs the page's per-session token,
JSON and a same-origin request, so no other site can drive it; bodies are capped before they are read;
every malformed request gets a 400-class answer with its reason; serves only image and WAV files inside
the run directory; every piece of lyric and prompt text is HTML-escaped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import html
import json
import math
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlparse

from mvgen import review_record
from mvgen.errors import MvgenError
from mvgen.util import read_json, write_json

SERVED_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".wav": "audio/wav",
                   ".mp4": "video/mp4"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_BODY = 64 * 1024
PIXELS_PER_SECOND = 40  # the lyrics view's timeline scale
ENVELOPE_POINTS_PER_SECOND = 20


class ReviewStore:
    """review.json of one run directory, read and updated under a lock."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir.resolve()
        self.path = self.run_dir / "review.json"
        if not self.path.is_file():
            raise MvgenError(f"{run_dir} has no review.json; run mvgen with review=manual first")
        self.edits_path = self.run_dir / "lyrics_edits.json"
        self.clips_path = self.run_dir / review_record.CLIP_REVIEW_JSON
        self.lock = threading.Lock()
        self._envelope: list[float] | None = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """This process's threads and any other server on the same run take turns (read-modify-write)."""
        with self.lock, open(self.run_dir / ".review.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self) -> dict[str, Any]:
        with self.lock:
            return read_json(self.path)

    # ------------------------------------------------------------------------------------ lyrics
    def lyrics(self) -> dict[str, Any]:
        """The lyrics view: line times (with any saved edits), flags, and the song's envelope."""
        annotation = read_json(self.run_dir / "annotation.json")
        edits = (read_json(self.edits_path) if self.edits_path.is_file() else {}).get("lines", {})
        problems: dict[int, list[str]] = {}
        for flag in annotation.get("flags", []):
            problems.setdefault(flag["line"], []).append(flag["problem"])
        lines = []
        for phrase in annotation["phrases"]:
            if phrase["kind"] != "lyric":
                continue
            edit = edits.get(str(phrase["line"]))
            lines.append({"line": phrase["line"], "text": phrase["text"],
                          "start": float(edit["start"]) if edit else phrase["start"],
                          "end": float(edit["end"]) if edit else phrase["end"],
                          "edited": bool(edit) or bool(phrase.get("edited")),
                          "problems": problems.get(phrase["line"], [])})
        voiced = [[float(a), float(b)] for a, b in (annotation.get("aligner") or {}).get("voiced") or []]
        return {"duration": float(annotation["duration"]), "lines": lines, "envelope": self.envelope(),
                "points_per_second": ENVELOPE_POINTS_PER_SECOND, "voiced": voiced}

    def envelope(self) -> list[float]:
        if self._envelope is None:
            import numpy as np

            from mvgen.media.audio import read_wav

            samples, rate = read_wav(self.run_dir / "song.wav")
            mono = np.abs(samples.mean(axis=1))
            step = max(1, rate // ENVELOPE_POINTS_PER_SECOND)
            usable = len(mono) // step * step
            peaks = mono[:usable].reshape(-1, step).max(axis=1) if usable else np.zeros(1)
            self._envelope = [round(float(v), 3) for v in peaks / max(float(peaks.max()), 1e-6)]
        return self._envelope

    def edit_line(self, line: int, start: float, end: float) -> dict[str, Any]:
        from mvgen.stages.annotate import check_line_edit

        check_line_edit(read_json(self.run_dir / "annotation.json"), line, start, end)
        with self._locked():
            edits = read_json(self.edits_path) if self.edits_path.is_file() else {"version": 1, "lines": {}}
            edits.setdefault("lines", {})[str(line)] = {"start": round(start, 3), "end": round(end, 3)}
            write_json(self.edits_path, edits)
        return {"line": line, "start": round(start, 3), "end": round(end, 3), "edited": True}

    # ------------------------------------------------------------------------------------- clips
    def clips(self) -> dict[str, dict[str, Any]]:
        """Per rendered segment: its lip-sync record (manifest) and the reviewer's decision (clip_review.json)."""
        manifest = read_json(self.run_dir / "manifest.json") if (self.run_dir / "manifest.json").is_file() else {}
        decisions = (read_json(self.clips_path) if self.clips_path.is_file() else {}).get("segments", {})
        return {p.stem: {"sync": (manifest.get("lipsync") or {}).get(p.stem), "decision": decisions.get(p.stem)}
                for p in sorted((self.run_dir / "clips").glob("*.mp4"))}

    def clip(self, segment: str, action: str, prompt: str | None) -> dict[str, Any]:
        if not (self.run_dir / "clips" / f"{segment}.mp4").is_file():
            raise MvgenError(f"no clip for segment {segment!r} in this run")
        with self._locked():
            clips = read_json(self.clips_path) if self.clips_path.is_file() else {"version": 1, "segments": {}}
            record = review_record.clip_decision(clips, segment, action, prompt)
            write_json(self.clips_path, clips)
            return record

    # ------------------------------------------------------------------------------------ frames
    def approve(self, segment: str, candidate: int) -> dict[str, Any]:
        with self._locked():
            review = read_json(self.path)
            record = review_record.approve(review, segment, candidate)
            write_json(self.path, review)
            return record

    def regenerate(self, segment: str) -> dict[str, Any]:
        with self._locked():
            review = read_json(self.path)
            record = review_record.regenerate(review, segment)
            write_json(self.path, review)
            return record

    def file(self, url_path: str) -> Path | None:
        """The file a URL names, if it is an image inside the run directory; otherwise None."""
        relative = unquote(url_path).lstrip("/")
        candidate = (self.run_dir / relative).resolve()
        if not candidate.is_relative_to(self.run_dir) or not candidate.is_file():
            return None
        return candidate if candidate.suffix.lower() in SERVED_SUFFIXES else None


def lyrics_section(lyrics: dict[str, Any]) -> str:
    """The lyrics view: waveform, one bar per line (flagged ones red) with drag handles, a table to play
    and nudge each line. Line texts go in escaped; the data for the script is JSON with "<" escaped."""
    e = html.escape
    width = max(600, int(lyrics["duration"] * PIXELS_PER_SECOND))
    bars, rows = [], []
    for item in lyrics["lines"]:
        n = int(item["line"])
        state = " flagged" if item["problems"] and not item["edited"] else ""
        state += " edited" if item["edited"] else ""
        tip = e("; ".join(item["problems"]) or item["text"])
        bars.append(f'<div class="bar{state}" data-line="{n}" title="{tip}"><span class="handle start"></span>'
                    f'<span class="label">{n + 1}</span><span class="handle end"></span></div>')
        rows.append(f'<tr class="row{state}" data-line="{n}"><td>{n + 1}</td><td class="text">{e(item["text"])}</td>'
                    f'<td class="start"></td><td class="end"></td><td>'
                    f'<button class="play" data-line="{n}">Play</button> '
                    f'start <button class="nudge" data-line="{n}" data-edge="start" data-by="-0.1">−0.1</button>'
                    f'<button class="nudge" data-line="{n}" data-edge="start" data-by="0.1">+0.1</button> '
                    f'end <button class="nudge" data-line="{n}" data-edge="end" data-by="-0.1">−0.1</button>'
                    f'<button class="nudge" data-line="{n}" data-edge="end" data-by="0.1">+0.1</button></td>'
                    f'<td class="problems">{e("; ".join(item["problems"]))}</td></tr>')
    data = json.dumps({"duration": lyrics["duration"], "pps": PIXELS_PER_SECOND,
                       "envelope": lyrics["envelope"], "points_per_second": lyrics["points_per_second"],
                       "voiced": lyrics.get("voiced", []),
                       "lines": {str(i["line"]): {"start": i["start"], "end": i["end"]} for i in lyrics["lines"]}}
                      ).replace("<", "\\u003c")  # no "</script>" can close the data block early
    return f"""<section id="lyrics"><h2>Lyrics timing <small>drag a line's edges on the waveform, or nudge them;
red lines have uncertain timing; the green strip is where a voice is heard; every change is saved; then run
mvgen rerun</small></h2>
<div id="scroller"><div id="track" style="width:{width}px"><canvas id="wave" width="{width}" height="90"></canvas>
{''.join(bars)}</div></div>
<audio id="player" src="/files/song.wav" preload="auto"></audio>
<table id="lines"><tr><th>#</th><th>line</th><th>start</th><th>end</th><th></th><th>flags</th></tr>{''.join(rows)}</table>
<script id="lyrics-data" type="application/json">{data}</script></section>"""


def clip_panel(name: str, clip: dict[str, Any] | None) -> str:
    """The clips view of one segment: its rendered clip playing in the page, its lip-sync score, and the
    reviewer's choice (approve, or a new take with an optional new prompt)."""
    if not clip:
        return ""
    e = html.escape
    sync = clip.get("sync") or {}
    score = (f"lip sync {int(sync['offset_frames']):+d} frames, confidence {float(sync['confidence']):.2f}"
             if sync.get("checked") else f"lip sync not checked: {sync.get('reason', 'no singer on screen')}")
    decision = clip.get("decision") or {}
    state = ("clip approved" if decision.get("approved") else
             f"new take {int(decision['take'])} requested; run mvgen rerun" if decision.get("take") else "clip not reviewed")
    return (f'<div class="clip"><video src="/files/clips/{e(name)}.mp4" controls preload="none" width="480"></video>'
            f'<p class="sync">{e(score)}</p><p><span class="clip-status">{e(state)}</span> '
            f'<button class="clip-approve" data-segment="{e(name)}">Approve clip</button> '
            f'<input class="clip-prompt" data-segment="{e(name)}" size="40" placeholder="new prompt (optional)"> '
            f'<button class="clip-reroll" data-segment="{e(name)}">Re-roll clip</button></p></div>')


def render_page(review: dict[str, Any], title: str, lyrics: dict[str, Any] | None = None, token: str = "",
                clips: dict[str, dict[str, Any]] | None = None) -> str:
    e = html.escape
    rows = []
    for name, record in review["segments"].items():
        approved = record.get("approved")
        cards = []
        for f in record["files"]:
            chosen = " approved" if f["candidate"] == approved else ""
            cards.append(
                f'<figure class="cand{chosen}" data-candidate="{int(f["candidate"])}">'
                f'<img src="/files/{e(f["image"])}" alt="{e(name)} candidate {int(f["candidate"])}" '
                f'title="{e(f.get("prompt", ""))}">'
                f'<figcaption>seed {int(f["seed"])} '
                f'<button class="approve" data-segment="{e(name)}" data-candidate="{int(f["candidate"])}">'
                f'Approve</button></figcaption></figure>')
        status = f"approved: candidate {approved}" if approved is not None else (
            f"new seeds requested ({int(record.get('reseed', 0))}); run mvgen rerun" if record.get("reseed")
            and approved is None else "waiting for approval")
        rows.append(
            f'<section class="segment" id="{e(name)}" data-segment="{e(name)}">'
            f'<h2>{e(name)} <small>{float(record["start"]):.2f}–{float(record["end"]):.2f} s · '
            f'{e(str(record.get("section", "")))} · {e(str(record.get("kind", "")))}</small></h2>'
            f'<p class="lyric">{e(record.get("text") or "(instrumental)")}</p>'
            f'<div class="cands">{"".join(cards)}</div>'
            f'<p><span class="status">{e(status)}</span> '
            f'<button class="regenerate" data-segment="{e(name)}">New seeds for this segment</button> '
            f'<button class="listen" data-start="{float(record["start"]):.3f}" data-end="{float(record["end"]):.3f}">'
            f'Play this stretch of the song</button></p>'
            f'{clip_panel(name, (clips or {}).get(name))}'
            f'</section>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mvgen review · {e(title)}</title>
<meta name="mvgen-token" content="{e(token)}">
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; background: #111; color: #eee; }}
.cands {{ display: flex; gap: 10px; flex-wrap: wrap; }}
figure {{ margin: 0; border: 4px solid transparent; }} figure.approved {{ border-color: #2ecc71; }}
img {{ width: 300px; display: block; }} .lyric {{ font-size: 18px; }} small {{ color: #999; }}
button {{ cursor: pointer; }} #summary {{ position: sticky; top: 0; background: #111; padding: 6px 0; }}
#scroller {{ overflow-x: auto; background: #1b1b1b; }} #track {{ position: relative; height: 130px; }}
#wave {{ position: absolute; top: 0; left: 0; }}
.bar {{ position: absolute; top: 96px; height: 28px; background: #e4572e; opacity: .85; border-radius: 3px; }}
.bar.flagged {{ background: #c0392b; outline: 2px dashed #fff; }} .bar.edited {{ background: #2ecc71; }}
.bar .label {{ font-size: 11px; padding: 0 8px; line-height: 28px; pointer-events: none; }}
.handle {{ position: absolute; top: 0; width: 7px; height: 28px; background: #fff; opacity: .6; cursor: ew-resize; }}
.handle.start {{ left: 0; }} .handle.end {{ right: 0; }}
#lines td {{ padding: 2px 8px; }} tr.flagged td.text {{ color: #ff8a80; }} tr.edited td.text {{ color: #8effb0; }}
.problems {{ color: #aaa; font-size: 12px; }}
</style></head><body>
<h1>Review · {e(title)}</h1>
{lyrics_section(lyrics) if lyrics else ""}
<p id="summary"></p>
{''.join(rows)}
<script>
async function post(url, body) {{
  const token = document.querySelector('meta[name="mvgen-token"]').content;
  const response = await fetch(url, {{method: "POST", headers: {{"Content-Type": "application/json",
                                      "X-Mvgen-Token": token}}, body: JSON.stringify(body)}});
  const data = await response.json();
  if (!response.ok) {{ alert(data.error); throw new Error(data.error); }}
  return data;
}}
function summary() {{
  const total = document.querySelectorAll("section.segment").length;
  const done = document.querySelectorAll("figure.approved").length;
  document.getElementById("summary").textContent = done + " of " + total + " segments approved" +
    (done === total ? ": run mvgen rerun on this run directory to render" : "");
}}
document.querySelectorAll("button.approve").forEach(button => button.addEventListener("click", async () => {{
  const segment = button.dataset.segment, candidate = Number(button.dataset.candidate);
  await post("/api/approve", {{segment, candidate}});
  const section = document.querySelector(`section[data-segment="${{CSS.escape(segment)}}"]`);
  section.querySelectorAll("figure").forEach(f => f.classList.toggle("approved",
      Number(f.dataset.candidate) === candidate));
  section.querySelector(".status").textContent = "approved: candidate " + candidate;
  summary();
}}));
document.querySelectorAll("button.regenerate").forEach(button => button.addEventListener("click", async () => {{
  const segment = button.dataset.segment;
  const record = await post("/api/regenerate", {{segment}});
  const section = document.querySelector(`section[data-segment="${{CSS.escape(segment)}}"]`);
  section.querySelectorAll("figure").forEach(f => f.classList.remove("approved"));
  section.querySelector(".status").textContent = "new seeds requested (" + record.reseed + "); run mvgen rerun";
  summary();
}}));
summary();
const songPlayer = document.getElementById("player") || new Audio("/files/song.wav");
let listenUntil = null;
songPlayer.addEventListener("timeupdate", () => {{
  if (listenUntil !== null && songPlayer.currentTime >= listenUntil) {{ songPlayer.pause(); listenUntil = null; }}
}});
document.querySelectorAll("button.listen").forEach(button => button.addEventListener("click", () => {{
  songPlayer.currentTime = Number(button.dataset.start); listenUntil = Number(button.dataset.end); songPlayer.play();
}}));
async function clipDecision(segment, action) {{
  const field = document.querySelector(`input.clip-prompt[data-segment="${{CSS.escape(segment)}}"]`);
  const record = await post("/api/clip", {{segment, action, prompt: field ? field.value : ""}});
  const section = document.querySelector(`section[data-segment="${{CSS.escape(segment)}}"]`);
  section.querySelector(".clip-status").textContent = record.approved ? "clip approved" :
    "new take " + record.take + " requested; run mvgen rerun";
}}
document.querySelectorAll("button.clip-approve").forEach(b => b.addEventListener("click", () => clipDecision(b.dataset.segment, "approve")));
document.querySelectorAll("button.clip-reroll").forEach(b => b.addEventListener("click", () => clipDecision(b.dataset.segment, "reroll")));
const lyricsData = document.getElementById("lyrics-data");
if (lyricsData) {{
  const data = JSON.parse(lyricsData.textContent), pps = data.pps, player = document.getElementById("player");
  const canvas = document.getElementById("wave"), g = canvas.getContext("2d");
  g.fillStyle = "#8ac926";  // where the vocal stem says someone sings
  data.voiced.forEach(([a, b]) => g.fillRect(a * pps, 0, (b - a) * pps, 5));
  g.fillStyle = "#888";
  data.envelope.forEach((v, i) => {{
    const x = i / data.points_per_second * pps, h = v * 40;
    g.fillRect(x, 45 - h, Math.max(1, pps / data.points_per_second), 2 * h);
  }});
  function show(line) {{
    const t = data.lines[line], bar = document.querySelector(`.bar[data-line="${{line}}"]`);
    bar.style.left = (t.start * pps) + "px"; bar.style.width = Math.max(8, (t.end - t.start) * pps) + "px";
    const row = document.querySelector(`tr.row[data-line="${{line}}"]`);
    row.querySelector(".start").textContent = t.start.toFixed(2) + " s";
    row.querySelector(".end").textContent = t.end.toFixed(2) + " s";
  }}
  async function save(line) {{
    const t = data.lines[line];
    const saved = await post("/api/lyrics", {{line: Number(line), start: t.start, end: t.end}});
    t.start = saved.start; t.end = saved.end; show(line);
    for (const el of document.querySelectorAll(`[data-line="${{line}}"].bar, tr.row[data-line="${{line}}"]`)) {{
      el.classList.remove("flagged"); el.classList.add("edited");
    }}
  }}
  Object.keys(data.lines).forEach(show);
  document.querySelectorAll("button.nudge").forEach(button => button.addEventListener("click", () => {{
    const t = data.lines[button.dataset.line], by = Number(button.dataset.by);
    const value = Math.round((t[button.dataset.edge] + by) * 1000) / 1000;
    if (button.dataset.edge === "start" ? value < 0 || value >= t.end : value <= t.start || value > data.duration) return;
    t[button.dataset.edge] = value; save(button.dataset.line);
  }}));
  let stopAt = null;
  player.addEventListener("timeupdate", () => {{ if (stopAt !== null && player.currentTime >= stopAt) {{ player.pause(); stopAt = null; }} }});
  document.querySelectorAll("button.play").forEach(button => button.addEventListener("click", () => {{
    const t = data.lines[button.dataset.line];
    player.currentTime = t.start; stopAt = t.end; player.play();
  }}));
  document.querySelectorAll(".bar .handle").forEach(handle => handle.addEventListener("mousedown", down => {{
    down.preventDefault();
    const line = handle.parentElement.dataset.line, edge = handle.classList.contains("start") ? "start" : "end";
    const t = data.lines[line], origin = down.clientX, initial = t[edge];
    function move(event) {{
      const value = Math.round((initial + (event.clientX - origin) / pps) * 1000) / 1000;
      if (edge === "start" && value >= 0 && value < t.end - 0.05) t.start = value;
      if (edge === "end" && value > t.start + 0.05 && value <= data.duration) t.end = value;
      show(line);
    }}
    function up() {{ document.removeEventListener("mousemove", move); document.removeEventListener("mouseup", up); save(line); }}
    document.addEventListener("mousemove", move); document.addEventListener("mouseup", up);
  }}));
}}
</script></body></html>
"""


class BadRequest(Exception):
    """A request the review server refuses: answered with its status and reason, never a traceback."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _integer(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if type(value) is not int:  # noqa: E721 -- True and 1.9 are not candidates
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"{key} must be an integer, got {json.dumps(value)[:40]}")
    return value


def _seconds(body: dict[str, Any], key: str) -> float:
    value = body.get(key)
    if type(value) not in (int, float) or not math.isfinite(value):
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"{key} must be a finite number of seconds")
    return float(value)


def make_handler(store: ReviewStore, token: str) -> type[BaseHTTPRequestHandler]:
    """Requests are checked before anything is read or changed: the Host must be this server (no DNS
    rebinding); a state change needs the page's per-session token, JSON, and a same-origin (or absent)
    Origin; bodies over ``MAX_BODY`` bytes, or of unknown length, are refused before they are read."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "mvgen-review"
        timeout = 10  # a client that promises a body and stops sending is dropped, not waited for

        def log_message(self, format: str, *args: Any) -> None:  # keep the console for the URL
            return

        def _check_host(self) -> str:
            host = self.headers.get("Host", "")
            port = self.server.server_address[1]
            allowed = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}",
                       f"{self.server.server_address[0]}:{port}"}
            if host not in allowed:
                raise BadRequest(HTTPStatus.MISDIRECTED_REQUEST, f"Host {host[:60]!r} is not this review server")
            return host

        def _body(self) -> dict[str, Any]:
            host = self._check_host()
            origin = self.headers.get("Origin")
            if origin is not None and origin != f"http://{host}":
                raise BadRequest(HTTPStatus.FORBIDDEN, "cross-origin request refused")
            if not hmac.compare_digest(self.headers.get("X-Mvgen-Token", ""), token):
                raise BadRequest(HTTPStatus.FORBIDDEN, "missing or wrong session token: reload the review page")
            if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
                raise BadRequest(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send Content-Type: application/json")
            raw = self.headers.get("Content-Length", "")
            if not raw.isdigit():
                raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "a Content-Length of 0 or more is required")
            if int(raw) > MAX_BODY:
                raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"bodies are limited to {MAX_BODY} bytes")
            try:
                data = self.rfile.read(int(raw))
            except TimeoutError as exc:
                raise BadRequest(HTTPStatus.REQUEST_TIMEOUT, "the body did not arrive in time") from exc
            if len(data) != int(raw):
                raise BadRequest(HTTPStatus.BAD_REQUEST, "the body is shorter than its Content-Length")
            try:
                body = json.loads(data or b"{}", parse_constant=_no_constant)
            except (ValueError, RecursionError) as exc:
                raise BadRequest(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {str(exc)[:80]}") from exc
            if not isinstance(body, dict):
                raise BadRequest(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
            return body

        def _refuse(self, problem: BadRequest) -> None:
            self.close_connection = True
            self._json(problem.status, {"error": str(problem)})

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def _send_file(self, file: Path) -> None:
            """The file, or the byte range asked for (audio seeking needs ranges)."""
            data = file.read_bytes()
            wanted = self.headers.get("Range", "")
            if wanted.startswith("bytes="):
                first, _, last = wanted[6:].split(",")[0].partition("-")
                try:
                    start = int(first) if first else max(0, len(data) - int(last))
                    end = min(int(last), len(data) - 1) if first and last else len(data) - 1
                except ValueError:
                    start, end = -1, -1
                if not 0 <= start <= end < len(data):
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                data = data[start:end + 1]
            else:
                self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", SERVED_SUFFIXES[file.suffix.lower()])
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(data)

        def _json(self, status: int, value: Any) -> None:
            self._send(status, json.dumps(value).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            try:
                self._check_host()
                path = urlparse(self.path).path
                if "\x00" in unquote(path):
                    raise BadRequest(HTTPStatus.BAD_REQUEST, "a NUL byte in the path")
                if path in ("/", "/index.html"):
                    lyrics = store.lyrics() if (store.run_dir / "annotation.json").is_file() else None
                    page = render_page(store.read(), store.run_dir.name, lyrics, token, store.clips())
                    self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
                elif path == "/api/review":
                    self._json(HTTPStatus.OK, store.read())
                elif path == "/api/lyrics":
                    self._json(HTTPStatus.OK, store.lyrics())
                elif path.startswith("/files/"):
                    file = store.file(path[len("/files/"):])
                    if file is None:
                        self._json(HTTPStatus.NOT_FOUND, {"error": "no such file in this run"})
                    else:
                        self._send_file(file)
                else:
                    self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            except BadRequest as problem:
                self._refuse(problem)

        def do_POST(self) -> None:  # noqa: N802
            try:
                body = self._body()
                path = urlparse(self.path).path
                if path == "/api/approve":
                    result = store.approve(str(body.get("segment")), _integer(body, "candidate"))
                elif path == "/api/regenerate":
                    result = store.regenerate(str(body.get("segment")))
                elif path == "/api/clip":
                    prompt = body.get("prompt")
                    if prompt is not None and (not isinstance(prompt, str) or len(prompt) > 2000):
                        raise BadRequest(HTTPStatus.BAD_REQUEST, "prompt must be text of at most 2000 characters")
                    result = store.clip(str(body.get("segment")), str(body.get("action")), prompt)
                elif path == "/api/lyrics":
                    result = store.edit_line(_integer(body, "line"), _seconds(body, "start"), _seconds(body, "end"))
                else:
                    raise BadRequest(HTTPStatus.NOT_FOUND, "not found")
                self._json(HTTPStatus.OK, result)
            except BadRequest as problem:
                self._refuse(problem)
            except MvgenError as exc:
                self._refuse(BadRequest(HTTPStatus.BAD_REQUEST, str(exc)))

    return Handler


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def make_server(run_dir: Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    store = ReviewStore(run_dir)
    try:
        return ThreadingHTTPServer((host, port), make_handler(store, secrets.token_urlsafe(24)))
    except OSError as exc:
        raise MvgenError(f"cannot listen on {host}:{port} ({exc.strerror}); pass --port with a free port") from exc


def _saved_review_settings(run_dir: Path) -> dict[str, Any]:
    """review.host and review.port from the run's saved config (review=manual), read as data."""
    import yaml

    saved = run_dir / ".hydra" / "config.yaml"
    try:
        review = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("review") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return {}
    return {k: review[k] for k in ("host", "port") if isinstance(review.get(k), (str, int)) and review.get(k)}


def review_cli(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="mvgen review", description="Serve a run's review page.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--host", default=None,
                        help="address to bind (default: the run's review.host, else 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=None, help="port (default: the run's review.port, else 8765)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a host other than loopback (anyone who can reach it can review)")
    args = parser.parse_args(argv)
    saved = _saved_review_settings(args.run_dir)
    args.host = args.host or saved.get("host") or "127.0.0.1"
    args.port = args.port or int(saved.get("port") or 8765)
    if args.host not in LOOPBACK and not args.allow_remote:
        raise MvgenError(f"--host {args.host} would let other machines drive this review page; add --allow-remote "
                         "if that is what you want")
    if args.host not in LOOPBACK:
        print(f"mvgen: warning: the review page is reachable from other machines at {args.host}:{args.port}")
    server = make_server(args.run_dir, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"mvgen: review page for {args.run_dir} at http://{host}:{port}/  (Ctrl-C to stop; "
          f"approvals are saved as you click; then run: mvgen rerun {args.run_dir})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nmvgen: review server stopped")
    finally:
        server.server_close()
