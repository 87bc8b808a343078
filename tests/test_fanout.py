"""The subprocesses mvgen starts (fan-out workers, the eSpeak voice) work in any parent: a child of each
multiprocessing start method, a daemonic Pool worker (which may not have multiprocessing children of its
own) and a joblib/loky worker (whose start method, ``loky``, a spawned grandchild cannot find)."""

from __future__ import annotations

import multiprocessing
import os
import signal
from functools import partial
from pathlib import Path

import pytest

from mvgen.store import ArtifactStore

KEYS = [f"{i:064x}" for i in range(3)]


def _write(text: str, tmp: Path) -> None:
    (tmp / "out.txt").write_text(text)


def _die(tmp: Path) -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # runs in the fan-out worker: the worker dies, as under the OOM killer


def _children_work(store_root: str) -> tuple[list[str], list[str], int]:
    """Run in the parent under test: 3 entries over 2 fan-out workers, then one line of eSpeak."""
    from mvgen.fanout import fan_out
    from mvgen.media.tts import speak_lines

    store = ArtifactStore(store_root)
    built = fan_out(store, [("t", key, partial(_write, str(i))) for i, key in enumerate(KEYS)], devices=2)
    texts = [store.get("t", key).file("out.txt").read_text() for key in KEYS]  # type: ignore[union-attr]
    speech = speak_lines(["paper boats"])[0]
    return sorted(built), texts, len(speech.samples)


def _check(result: tuple[list[str], list[str], int]) -> None:
    built, texts, samples = result
    assert built == sorted(KEYS)  # every entry built by the workers, none twice
    assert texts == ["0", "1", "2"]
    assert samples > 22050 // 4  # a quarter second of speech at least


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_children_work_under_each_start_method(tmp_path: Path, method: str) -> None:
    with multiprocessing.get_context(method).Pool(1) as pool:  # Pool workers are daemonic
        _check(pool.apply(_children_work, (str(tmp_path / "store"),)))


def test_children_work_in_a_loky_worker(tmp_path: Path) -> None:
    from joblib import Parallel, delayed

    [result] = Parallel(n_jobs=2, backend="loky")(delayed(_children_work)(str(tmp_path / "store")) for _ in [0])
    _check(result)


def test_a_worker_that_dies_fails_in_one_line(tmp_path: Path) -> None:
    from mvgen.errors import MvgenError
    from mvgen.fanout import fan_out

    store = ArtifactStore(tmp_path / "store")
    jobs = [("t", KEYS[0], partial(_write, "0")), ("t", KEYS[1], _die)]
    with pytest.raises(MvgenError) as error:
        fan_out(store, jobs, devices=2)
    assert str(error.value) == ("t: worker 2/2 was killed by SIGKILL; 1 of 2 segments were finished and are kept in "
                                "the store; run the same command again to build the rest")
    assert store.get("t", KEYS[0]) is not None
