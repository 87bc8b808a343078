"""The artifact store: keys, hits and misses, atomicity, verification, one builder across processes."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from mvgen.store import ArtifactStore


def _write(name: str, text: str):
    def build(tmp: Path) -> dict:
        (tmp / name).write_text(text)
        return {"note": text}
    return build


def test_key_depends_on_stage_config_and_inputs() -> None:
    base = ArtifactStore.key("render", {"fps": 25}, {"image": "abc"})
    assert base == ArtifactStore.key("render", {"fps": 25}, {"image": "abc"})
    assert base != ArtifactStore.key("frames", {"fps": 25}, {"image": "abc"})
    assert base != ArtifactStore.key("render", {"fps": 24}, {"image": "abc"})
    assert base != ArtifactStore.key("render", {"fps": 25}, {"image": "abd"})
    # key order does not matter: canonical JSON
    assert ArtifactStore.key("s", {"a": 1, "b": 2}, {}) == ArtifactStore.key("s", {"b": 2, "a": 1}, {})


def test_miss_then_hit(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    calls = []

    def build(tmp: Path) -> dict:
        calls.append(1)
        (tmp / "out.txt").write_text("hello")
        return {"n": 1}

    first = store.get_or_build("stage", "k" * 64, build)
    second = store.get_or_build("stage", "k" * 64, build)
    assert (first.hit, second.hit) == (False, True)
    assert len(calls) == 1
    assert second.file("out.txt").read_text() == "hello"
    assert second.info == {"n": 1}
    copied = second.copy_to("out.txt", tmp_path / "run" / "x.txt")
    assert copied.read_text() == "hello"


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")

    def build(tmp: Path) -> dict:
        (tmp / "half.txt").write_text("half written")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.get_or_build("stage", "a" * 64, build)
    assert store.get("stage", "a" * 64) is None
    assert list((tmp_path / "store" / ".tmp").iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "meta"])
def test_damaged_entry_is_quarantined_and_rebuilt(tmp_path: Path, damage: str) -> None:
    store = ArtifactStore(tmp_path / "store")
    entry = store.get_or_build("stage", "b" * 64, _write("data.bin", "0123456789"))
    target = entry.path / ("_entry.json" if damage == "meta" else "data.bin")
    if damage == "truncate":
        target.write_text("01234")
    elif damage == "flip":
        target.write_text("0123456780")
    else:
        target.unlink() if damage == "delete" else target.write_text("{not json")
    assert store.get("stage", "b" * 64) is None
    assert any((tmp_path / "store" / ".corrupt").iterdir())
    rebuilt = store.get_or_build("stage", "b" * 64, _write("data.bin", "0123456789"))
    assert rebuilt.hit is False and rebuilt.file("data.bin").read_text() == "0123456789"


def test_leftovers_of_a_killed_builder_are_swept(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ArtifactStore(root)
    dead = root / ".tmp" / f"stage-{'c' * 16}-999999999-1"
    dead.mkdir()
    (dead / "partial.mp4").write_bytes(b"\0" * 10)
    ArtifactStore(root)
    assert not dead.exists()


def _race(root: str, log: str) -> None:
    store = ArtifactStore(root)

    def build(tmp: Path) -> dict:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # long enough for the other process to arrive while this one builds
        (tmp / "out.txt").write_text("shared")
        return {}

    entry = store.get_or_build("stage", "d" * 64, build)
    assert entry.file("out.txt").read_text() == "shared"


def test_two_processes_build_an_entry_once(tmp_path: Path) -> None:
    root, log = tmp_path / "store", tmp_path / "builders.log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_race, args=(str(root), str(log))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(log.read_text().split()) == 1


@pytest.mark.parametrize("code,reason", [(28, "the disk is full"), (30, "it is read-only")])
def test_disk_full_or_read_only_is_one_line_and_keeps_entries(tmp_path: Path, code: int, reason: str) -> None:
    from mvgen.errors import MvgenError

    store = ArtifactStore(tmp_path / "store")
    kept = store.get_or_build("stage", "e" * 64, _write("a.txt", "kept"))

    def build(tmp: Path) -> dict:
        raise OSError(code, os.strerror(code))

    with pytest.raises(MvgenError, match=reason) as info:
        store.get_or_build("stage", "f" * 64, build)
    assert "\n" not in str(info.value)
    assert store.get("stage", "e" * 64).file("a.txt").read_text() == "kept" and kept.hit is False
