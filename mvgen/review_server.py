"""The review page: ``mvgen review RUN_DIR`` serves it on 127.0.0.1.

Per segment: the lyric line, its time window and section, and the candidate frames side by side. A
person approves one candidate, or asks for new seeds for the segment. Every click is saved to
``RUN_DIR/review.json`` at once (atomic write), so nothing is lost if the page closes; ``mvgen rerun
RUN_DIR`` then continues from the approved frames and regenerates the segments that asked for new seeds.

Safety: binds 127.0.0.1 unless told otherwise; serves only image files inside the run directory (any
path that resolves outside it is refused); every piece of lyric and prompt text is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mvgen.errors import MvgenError
from mvgen.util import read_json, write_json

SERVED_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


class ReviewStore:
    """review.json of one run directory, read and updated under a lock."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir.resolve()
        self.path = self.run_dir / "review.json"
        if not self.path.is_file():
            raise MvgenError(f"{run_dir} has no review.json; run mvgen with review=manual first")
        self.lock = threading.Lock()

    def read(self) -> dict[str, Any]:
        with self.lock:
            return read_json(self.path)

    def approve(self, segment: str, candidate: int) -> dict[str, Any]:
        with self.lock:
            review = read_json(self.path)
            record = self._segment(review, segment)
            chosen = next((f for f in record["files"] if f["candidate"] == candidate), None)
            if chosen is None:
                raise MvgenError(f"{segment} has no candidate {candidate}; "
                                 f"choose one of {[f['candidate'] for f in record['files']]}")
            record.update(approved=candidate, approved_hash=chosen["hash"], image=chosen["image"],
                          method="manual")
            write_json(self.path, review)
            return record

    def regenerate(self, segment: str) -> dict[str, Any]:
        with self.lock:
            review = read_json(self.path)
            record = self._segment(review, segment)
            record.update(approved=None, approved_hash=None, image=None, reseed=int(record.get("reseed", 0)) + 1)
            write_json(self.path, review)
            return record

    @staticmethod
    def _segment(review: dict[str, Any], segment: str) -> dict[str, Any]:
        if segment not in review["segments"]:
            raise MvgenError(f"no segment {segment!r} in this run")
        return review["segments"][segment]

    def file(self, url_path: str) -> Path | None:
        """The file a URL names, if it is an image inside the run directory; otherwise None."""
        relative = unquote(url_path).lstrip("/")
        candidate = (self.run_dir / relative).resolve()
        if not candidate.is_relative_to(self.run_dir) or not candidate.is_file():
            return None
        return candidate if candidate.suffix.lower() in SERVED_SUFFIXES else None


def render_page(review: dict[str, Any], title: str) -> str:
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
            f'<button class="regenerate" data-segment="{e(name)}">New seeds for this segment</button></p>'
            f'</section>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mvgen review · {e(title)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; background: #111; color: #eee; }}
.cands {{ display: flex; gap: 10px; flex-wrap: wrap; }}
figure {{ margin: 0; border: 4px solid transparent; }} figure.approved {{ border-color: #2ecc71; }}
img {{ width: 300px; display: block; }} .lyric {{ font-size: 18px; }} small {{ color: #999; }}
button {{ cursor: pointer; }} #summary {{ position: sticky; top: 0; background: #111; padding: 6px 0; }}
</style></head><body>
<h1>Review · {e(title)}</h1>
<p id="summary"></p>
{''.join(rows)}
<script>
async function post(url, body) {{
  const response = await fetch(url, {{method: "POST", headers: {{"Content-Type": "application/json"}},
                                      body: JSON.stringify(body)}});
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
</script></body></html>
"""


def make_handler(store: ReviewStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "mvgen-review"

        def log_message(self, format: str, *args: Any) -> None:  # keep the console for the URL
            return

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, value: Any) -> None:
            self._send(status, json.dumps(value).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            path = urlparse(self.path).path
            if path in ("/", "/index.html"):
                page = render_page(store.read(), store.run_dir.name)
                self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
            elif path == "/api/review":
                self._json(HTTPStatus.OK, store.read())
            elif path.startswith("/files/"):
                file = store.file(path[len("/files/"):])
                if file is None:
                    self._json(HTTPStatus.NOT_FOUND, {"error": "no such file in this run"})
                else:
                    self._send(HTTPStatus.OK, file.read_bytes(), SERVED_SUFFIXES[file.suffix.lower()])
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            path = urlparse(self.path).path
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(min(length, 65536)) or b"{}")
                if path == "/api/approve":
                    self._json(HTTPStatus.OK, store.approve(str(body["segment"]), int(body["candidate"])))
                elif path == "/api/regenerate":
                    self._json(HTTPStatus.OK, store.regenerate(str(body["segment"])))
                else:
                    self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            except (MvgenError, KeyError, ValueError, TypeError) as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})

    return Handler


def make_server(run_dir: Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    store = ReviewStore(run_dir)
    try:
        return ThreadingHTTPServer((host, port), make_handler(store))
    except OSError as exc:
        raise MvgenError(f"cannot listen on {host}:{port} ({exc.strerror}); pass --port with a free port") from exc


def review_cli(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="mvgen review", description="Serve a run's review page.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
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
