"""Stage 5b, assemble: clips + the original song -> ``master.mp4`` (H.264 High yuv420p + AAC).

The clips' video is concatenated by packet copy when every clip was written with the same encoding
(the usual case), otherwise decoded, scaled and re-encoded (normalizing size, fps, pixel format and
colour range). The song's own audio is laid over the whole video, never any renderer's audio. The
lyrics go in as a soft subtitle track (``subtitles``, mov_text), and optionally burned in as a second
file, ``master_lyrics.mp4`` (``burn_lyrics``). The master is checked before it is accepted: its frame
count equals the plan's total and its duration equals the song's to within one frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np

from mvgen.media.audio import read_wav
from mvgen.media.video import AUDIO_RATE, check_preset, concat_with_audio, frame_at, probe, reencode_concat
from mvgen.stages.protocols import AssembleStage

MASTER_MP4, THUMB_JPG, MASTER_LYRICS_MP4 = "master.mp4", "thumb.jpg", "master_lyrics.mp4"


def _signature(path: Path) -> tuple[Any, ...]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        return (ctx.name, ctx.width, ctx.height, ctx.pix_fmt, ctx.profile, bytes(ctx.extradata or b""),
                stream.time_base)


class Assembler(AssembleStage):
    def __init__(self, audio_bitrate: int = 192000, stream_copy: bool = True, preset: str = "veryfast",
                 crf: int = 18, subtitles: bool = True, burn_lyrics: bool = False, allow_gaps: bool = False) -> None:
        self.audio_bitrate = audio_bitrate
        self.stream_copy = stream_copy
        self.preset, self.crf = preset, crf
        check_preset(preset, "assemble.preset")
        self.subtitles, self.burn_lyrics = subtitles, burn_lyrics
        self.allow_gaps = allow_gaps  # make the master even if segments failed (stills over their windows)

    def gap_clip(self, segment: dict[str, Any], still: Path | None, song_wav: Path, fps: int, size: tuple[int, int],
                 preset: str, crf: int, out_path: Path) -> Path:
        """A still over a failed segment's window (its approved frame, or black), encoded like the rendered
        clips so they still concatenate by packet copy; with its slice of the song."""
        from PIL import Image

        from mvgen.media.video import write_clip
        from mvgen.stages.render import generation_audio

        if still is not None:
            picture = np.asarray(Image.open(still).convert("RGB").resize(size, Image.LANCZOS))
        else:
            picture = np.zeros((size[1], size[0], 3), np.uint8)
        samples, rate = read_wav(song_wav)
        audio = generation_audio(samples, rate, segment, fps)[: int(round(segment["frames"] / fps * rate))]
        out_path.parent.mkdir(parents=True, exist_ok=True)
        write_clip(out_path, (picture for _ in range(segment["frames"])), fps, size[0], size[1], preset, crf,
                   audio=audio)
        return out_path

    def assemble(self, clips: list[Path], song_wav: Path, plan: dict[str, Any], width: int, height: int,
                 out_dir: Path, annotation: dict[str, Any] | None = None) -> dict[str, Any]:
        samples, rate = read_wav(song_wav)
        if rate != AUDIO_RATE:
            raise ValueError(f"song.wav must be {AUDIO_RATE} Hz, got {rate}")
        audio = samples if samples.shape[1] == 2 else np.repeat(samples[:, :1], 2, axis=1)
        fps = plan["fps"]
        master = out_dir / MASTER_MP4
        lyric = [p for p in (annotation or {}).get("phrases", []) if p["kind"] == "lyric" and p["end"] > p["start"]]
        cues = [(p["start"], p["end"], p["text"]) for p in lyric] if self.subtitles else None
        copyable = self.stream_copy and len({_signature(c) for c in clips}) == 1
        if copyable:
            frames = concat_with_audio(clips, master, audio, fps, self.audio_bitrate, subtitles=cues)
        else:
            frames = reencode_concat(clips, master, audio, fps, width, height, self.preset, self.crf,
                                     self.audio_bitrate, subtitles=cues)
        if frames != plan["total_frames"]:
            raise RuntimeError(f"master has {frames} frames, the plan {plan['total_frames']}")
        info = probe(master)
        video_seconds = frames / fps
        if abs(video_seconds - plan["duration"]) > 1.0 / fps:
            raise RuntimeError(f"master video lasts {video_seconds:.3f} s, the song {plan['duration']:.3f} s")
        from PIL import Image

        middle = frame_at(master, video_seconds / 2)
        thumb = Image.fromarray(middle)
        thumb.thumbnail((320, 320))
        thumb.save(out_dir / THUMB_JPG, quality=85)
        if self.burn_lyrics and lyric:
            self._burn(master, out_dir / MASTER_LYRICS_MP4, audio, fps, lyric)
        return {"frames": frames, "fps": fps, "duration": video_seconds, "stream_copy": copyable,
                "subtitles": len(cues or []), "burned_lyrics": bool(self.burn_lyrics and lyric),
                "video": info.get("video"), "audio": info.get("audio")}

    def _burn(self, master: Path, out_path: Path, audio: np.ndarray, fps: int, lyric: list[dict[str, Any]]) -> None:
        """A copy of the master with the current lyric line captioned on the picture (words lit as sung)."""
        from mvgen.media.video import write_clip
        from mvgen.media.captions import CaptionPainter

        words = [{**w, "line": p["line"]} for p in lyric for w in p["words"]]
        with av.open(str(master)) as container:
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            painter = CaptionPainter({"words": words}, width, height)

            def frames() -> Any:
                for index, frame in enumerate(container.decode(stream)):
                    image = frame.to_image()
                    painter.paint(image, index / fps)
                    yield np.asarray(image)

            write_clip(out_path, frames(), fps, width, height, self.preset, self.crf, audio=audio,
                       audio_bitrate=self.audio_bitrate)
