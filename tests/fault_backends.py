"""Test-only backends that fail on purpose, selected with `render._target_=tests.fault_backends.FlakyAnimatic`.

MVGEN_TEST_FAIL="seg_001:error,seg_002:oom,seg_003:once,seg_004:badclip" makes those segments:
error (always raise), oom (raise "CUDA out of memory" until a memory fallback is applied), once (fail the
first attempt only), badclip (write a clip one frame short, which validation must reject), blank (a black
clip, which validation must reject), slow (take 30 s, for the timeout).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from mvgen.media.video import write_clip
from mvgen.stages.render import AnimaticRenderer


def _modes() -> dict[str, str]:
    spec = os.environ.get("MVGEN_TEST_FAIL", "")
    return dict(item.split(":", 1) for item in spec.split(",") if ":" in item)


class FlakyAnimatic(AnimaticRenderer):
    attempts: dict[str, int] = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.memory_saving = False

    def degrade(self, exc: BaseException | None = None) -> str | None:
        if self.memory_saving:
            return None
        self.memory_saving = True
        return "simulated memory saving"

    def render(self, segment: dict[str, Any], image_path: Path, audio: np.ndarray, out_path: Path,
               prompt: str = "") -> dict[str, Any]:
        name = segment["name"]
        mode = _modes().get(name)
        FlakyAnimatic.attempts[name] = FlakyAnimatic.attempts.get(name, 0) + 1
        if mode == "error":
            raise RuntimeError(f"simulated render failure in {name}")
        if mode == "oom" and not self.memory_saving:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if mode == "once" and FlakyAnimatic.attempts[name] == 1:
            raise RuntimeError("simulated transient failure")
        if mode == "slow":
            time.sleep(30)
        if mode == "blank":  # what a failed video model can return: every frame the same flat colour
            black = (np.zeros((self.height, self.width, 3), np.uint8) for _ in range(segment["frames"]))
            write_clip(out_path, black, self.fps, self.width, self.height, self.preset, self.crf,
                       audio=audio[: int(round(segment["frames"] / self.fps * 48000))])
            return {"frames": segment["frames"]}
        if mode == "badclip":
            return super().render({**segment, "frames": segment["frames"] - 1}, image_path, audio, out_path, prompt)
        return super().render(segment, image_path, audio, out_path, prompt)

