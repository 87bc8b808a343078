"""``review.json``: the one owner of its format, shared by the pipeline (which writes it after the frames)
and the review server (which records a person's clicks in it).

    {"version": 1, "method": "auto"|"manual", "score": formula (auto),
     "segments": {name: {"approved": k|null, "approved_hash", "image", "text", "start", "end", "section",
                         "kind", "reseed", "files": [{"candidate", "seed", "hash", "image", "prompt"}], ...}}}

Approvals are matched by image hash, so an approval never applies to a different frame; ``reseed`` counts
the "new seeds" requests of a segment.
"""

from __future__ import annotations

from typing import Any

from mvgen.errors import MvgenError

REVIEW_JSON = "review.json"
CLIP_REVIEW_JSON = "clip_review.json"  # {"version": 1, "segments": {name: {"approved", "take", "prompt"}}}


class ReviewPending(Exception):
    """Manual review: some segments have no approved frame yet; the run stops after the frames."""

    def __init__(self, pending: list[str]) -> None:
        super().__init__(f"{len(pending)} segment(s) await review: {', '.join(pending[:6])}"
                         + (" ..." if len(pending) > 6 else ""))
        self.pending = pending


class ReviewRecord:
    """Builds the review of one run from its candidates, the song's pins and the previous run's review."""

    def __init__(self, song: dict[str, Any], previous: dict[str, Any] | None = None) -> None:
        overrides = song.get("overrides") or {}
        self.pins = {name: int(o["candidate"]) for name, o in overrides.items()
                     if (o or {}).get("candidate") is not None}
        self.previous = (previous or {}).get("segments") or {}

    def reseed(self, name: str) -> int:
        return int((self.previous.get(name) or {}).get("reseed", 0))

    def segment(self, segment: dict[str, Any], records: list[dict[str, Any]],
                verdict: dict[str, Any]) -> dict[str, Any]:
        """One segment's record; a candidate pinned by the song file wins over the verdict."""
        name = segment["name"]
        pinned = self.pins.get(name)
        if pinned is not None:
            if not any(c["candidate"] == pinned for c in records):
                raise MvgenError(f"song.overrides.{name}.candidate={pinned} does not exist; "
                                 f"{name} has candidates 0..{len(records) - 1}")
            verdict = {**verdict, "approved": pinned, "pinned": True}
        chosen = verdict.get("approved")
        record = next((c for c in records if c["candidate"] == chosen), None)
        return {**verdict, "approved_hash": record["hash"] if record else None,
                "image": f"frames/{name}/cand_{chosen}.png" if record else None,
                "text": segment["text"], "start": segment["start"], "end": segment["end"],
                "section": segment["section"], "kind": segment["kind"], "reseed": self.reseed(name),
                "files": [{"candidate": c["candidate"], "seed": c["seed"], "hash": c["hash"],
                           "image": f"frames/{name}/cand_{c['candidate']}.png", "prompt": c["prompt"]}
                          for c in records]}

    def automatic(self, segments: list[dict[str, Any]], candidates: dict[str, list[dict[str, Any]]],
                  backend: Any, formula: str) -> dict[str, Any]:
        """Every segment judged by the review backend (segments whose frames failed are left out)."""
        out = {}
        for segment in segments:
            records = candidates.get(segment["name"])
            if records is not None:
                verdict = backend.review([{k: c[k] for k in ("candidate", "seed", "path", "prompt")} for c in records])
                out[segment["name"]] = self.segment(segment, records, verdict)
        return {"version": 1, "method": "auto", "score": formula, "segments": out}

    def manual(self, segments: list[dict[str, Any]], candidates: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        """Approvals carried over from the previous run's review, matched by image hash (never stale)."""
        out = {}
        for segment in segments:
            records = candidates.get(segment["name"])
            if records is None:
                continue  # its frames failed
            wanted = (self.previous.get(segment["name"]) or {}).get("approved_hash")
            chosen = next((c["candidate"] for c in records if wanted and c["hash"] == wanted), None)
            out[segment["name"]] = self.segment(segment, records, {"approved": chosen, "method": "manual"})
        return {"version": 1, "method": "manual", "segments": out}


def pending(review: dict[str, Any]) -> list[str]:
    return [name for name, record in review["segments"].items() if record.get("approved") is None]


def _segment(review: dict[str, Any], segment: str) -> dict[str, Any]:
    if segment not in review["segments"]:
        raise MvgenError(f"no segment {segment!r} in this run")
    return review["segments"][segment]


def approve(review: dict[str, Any], segment: str, candidate: int) -> dict[str, Any]:
    """A person approves one candidate (in place); returns the segment's record."""
    record = _segment(review, segment)
    chosen = next((f for f in record["files"] if f["candidate"] == candidate), None)
    if chosen is None:
        raise MvgenError(f"{segment} has no candidate {candidate}; "
                         f"choose one of {[f['candidate'] for f in record['files']]}")
    record.update(approved=candidate, approved_hash=chosen["hash"], image=chosen["image"], method="manual")
    return record


def regenerate(review: dict[str, Any], segment: str) -> dict[str, Any]:
    """A person asks for new seeds for one segment (in place); the rerun draws it again."""
    record = _segment(review, segment)
    record.update(approved=None, approved_hash=None, image=None, reseed=int(record.get("reseed", 0)) + 1)
    return record


def clip_decision(clips: dict[str, Any], segment: str, action: str, prompt: str | None = None) -> dict[str, Any]:
    """A person approves a rendered clip, or asks for a new take (a new seed, optionally a new prompt), in place
    in clip_review.json's content; ``mvgen rerun`` renders again only the segments that asked."""
    record = clips.setdefault("segments", {}).setdefault(segment, {"approved": None, "take": 0, "prompt": None})
    if action == "approve":
        record["approved"] = True
    elif action == "reroll":
        record.update(approved=None, take=int(record.get("take", 0)) + 1,
                      prompt=" ".join(prompt.split()) if prompt and prompt.strip() else record.get("prompt"))
    else:
        raise MvgenError(f"unknown clip action {action!r}; use approve or reroll")
    clips["version"] = 1
    return record
