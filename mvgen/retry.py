"""The retry policy for per-segment work: attempts with backoff, a timeout, and memory fallbacks.

One segment's failure must not cost the others: ``attempt`` returns None (and records the failure) instead
of raising, unless the error is one a retry cannot fix (``MvgenError``: a wrong input or setting). Out of
memory, or a tensor too large for 32-bit indexing, first switches on the backend's next memory saving
(``degrade``); that is a new configuration, not a spent attempt.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from mvgen.errors import MvgenError
from mvgen.store import ArtifactStore, Entry
from mvgen.util import exception_line

log = logging.getLogger("mvgen")


@dataclass
class RetryPolicy:
    attempts: int = 1
    backoff_seconds: float = 0.0
    timeout_seconds: float = 0.0  # 0 = no limit

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> "RetryPolicy":
        config = config or {}
        return cls(max(1, int(config.get("attempts", 1))), float(config.get("backoff_seconds", 0.0)),
                   float(config.get("timeout_seconds", 0.0)))


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds`` (0 = no limit)."""
    import signal
    import threading

    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def needs_less_memory(exc: BaseException) -> bool:
    """Out of memory, or a tensor too large for 32-bit indexing: both call for the backend's fallbacks."""
    from mvgen.stages.render_ltx import is_index_limit_error

    name = type(exc).__name__
    return name == "OutOfMemoryError" or "out of memory" in str(exc).lower() or is_index_limit_error(exc)


def attempt(store: ArtifactStore, stage: str, segment: str, key: str, build: Callable[..., Any], backend: Any,
            policy: RetryPolicy, failures: list[dict[str, Any]]) -> Entry | None:
    """Build one segment's entry under ``policy``; None, with the failure appended to ``failures``, if it
    still fails."""
    error = ""
    tries = 0
    while tries < policy.attempts:
        tries += 1
        try:
            with deadline(policy.timeout_seconds):
                return store.get_or_build(stage, key, build)
        except MvgenError:
            raise  # the input or the config is wrong: retrying cannot help
        except Exception as exc:  # noqa: BLE001 -- one segment's failure must not cost the others
            error = exception_line(exc)
            log.warning("%s %s failed (attempt %d/%d): %s", stage, segment, tries, policy.attempts, error)
            if needs_less_memory(exc):
                fallback = backend.degrade(exc)
                if fallback:
                    from mvgen.models import release_models

                    release_models()
                    log.warning("%s %s: %s, retrying with %s", stage, segment,
                                "out of memory" if "memory" in error.lower() else "tensor too large", fallback)
                    tries -= 1  # a memory fallback is a new configuration, not a spent attempt
                    continue
            if tries < policy.attempts and policy.backoff_seconds > 0:
                time.sleep(policy.backoff_seconds * 2 ** (tries - 1))
    failures.append({"stage": stage, "segment": segment, "error": error, "attempts": policy.attempts})
    return None
