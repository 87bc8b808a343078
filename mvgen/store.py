"""Content-addressed artifact store.

An entry is a directory of files produced by one stage (or one segment of a stage), keyed by
``sha256(stage, its resolved config, the content hashes of its inputs)``. Layout::

    <root>/<stage>/<key[:2]>/<key>/        the entry: its files + _entry.json (names, sizes, sha256)
    <root>/.tmp/<stage>-<key>-<pid>-<n>/   an entry being built (never read)
    <root>/.locks/<stage>-<key>.lock       flock held while one process builds that entry
    <root>/.corrupt/                       entries that failed verification, moved aside for inspection

Guarantees:
- Atomic: an entry is built in .tmp and renamed into place in one step, so a reader sees either
  nothing or a complete entry. A process killed mid-build leaves only a .tmp folder, swept later.
- Verified: every read checks each file's size and sha256 against _entry.json; a damaged entry is
  moved to .corrupt and rebuilt.
- One builder: processes sharing a store take a per-key lock, so two runs never compute the same
  artifact twice; the second waits and then reads the first one's entry.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from mvgen.errors import MvgenError
from mvgen.util import atomic_write_bytes, canonical_json, read_json, sha256_file, sha256_json

ENTRY_FILE = "_entry.json"
STORE_FORMAT = 1

# Test hook for crash-resume tests: "render:2" SIGKILLs this process right after it commits its second
# render entry, a deterministic stand-in for a user's kill -9 or a lost machine.
FAULT_ENV = "MVGEN_FAULT_KILL_AFTER"


@dataclass
class Entry:
    stage: str
    key: str
    path: Path
    files: dict[str, str]  # name -> sha256
    info: dict[str, Any] = field(default_factory=dict)
    hit: bool = False

    def file(self, name: str) -> Path:
        if name not in self.files:
            raise KeyError(f"store entry {self.stage}/{self.key[:12]} has no file {name!r}")
        return self.path / name

    def copy_to(self, name: str, dest: str | os.PathLike[str]) -> Path:
        """Copy one file out of the store, atomically (temp + rename)."""
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(self.file(name), tmp)
        os.replace(tmp, target)
        return target


class ArtifactStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        try:
            for sub in (".tmp", ".locks", ".corrupt"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MvgenError(f"cannot use the artifact store at {self.root}: {exc.strerror}; "
                             "set store.root to a writable folder") from exc
        self._commits: dict[str, int] = {}
        self._fault = self._parse_fault(os.environ.get(FAULT_ENV, ""))
        self._sweep_dead_tmp()

    # ----------------------------------------------------------------------------------- keys
    @staticmethod
    def key(stage: str, config: Any, inputs: Mapping[str, Any]) -> str:
        return sha256_json({"format": STORE_FORMAT, "stage": stage, "config": config, "inputs": dict(inputs)})

    def entry_dir(self, stage: str, key: str) -> Path:
        return self.root / stage / key[:2] / key

    # ---------------------------------------------------------------------------------- reads
    def exists(self, stage: str, key: str) -> bool:
        """Whether an entry is there, without reading or verifying it (``get`` verifies)."""
        return self.entry_dir(stage, key).is_dir()

    def get(self, stage: str, key: str) -> Entry | None:
        """The verified entry, or None. A damaged entry is moved aside and reported as missing."""
        path = self.entry_dir(stage, key)
        if not path.is_dir():
            return None
        problem = self._verify(path)
        if problem is None:
            meta = read_json(path / ENTRY_FILE)
            return Entry(stage, key, path, meta["files"], meta.get("info", {}), hit=True)
        self._quarantine(path, stage, key, problem)
        return None

    def _verify(self, path: Path) -> str | None:
        try:
            meta = read_json(path / ENTRY_FILE)
        except (OSError, ValueError) as exc:
            return f"unreadable {ENTRY_FILE}: {exc}"
        for name, digest in meta.get("files", {}).items():
            file = path / name
            if not file.is_file():
                return f"missing {name}"
            if file.stat().st_size != meta["sizes"][name]:
                return f"{name} has the wrong size"
            if sha256_file(file) != digest:
                return f"{name} has the wrong checksum"
        return None

    def _quarantine(self, path: Path, stage: str, key: str, problem: str) -> None:
        dest = self.root / ".corrupt" / f"{stage}-{key[:16]}-{time.time_ns()}"
        try:
            os.replace(path, dest)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
        print(f"mvgen: store entry {stage}/{key[:12]} was damaged ({problem}); moved to {dest}, rebuilding")

    # --------------------------------------------------------------------------------- writes
    def get_or_build(
        self,
        stage: str,
        key: str,
        build: Callable[[Path], dict[str, Any] | None],
    ) -> Entry:
        """Return the entry for key, building it with ``build(tmp_dir)`` if needed.

        ``build`` writes its files into tmp_dir and may return a small info dict kept in _entry.json.
        """
        entry = self.get(stage, key)
        if entry is not None:
            return entry
        lock_path = self.root / ".locks" / f"{stage}-{key}.lock"
        try:
            lock = open(lock_path, "a+b")
        except OSError as exc:
            if exc.errno in _STORAGE_ERRNOS:
                raise _storage_error(self.root, exc) from exc
            raise
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                entry = self.get(stage, key)  # another process may have built it while we waited
                if entry is not None:
                    return entry
                return self._build(stage, key, build)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _build(self, stage: str, key: str, build: Callable[[Path], dict[str, Any] | None]) -> Entry:
        tmp = self.root / ".tmp" / f"{stage}-{key[:16]}-{os.getpid()}-{time.time_ns()}"
        try:
            tmp.mkdir(parents=True)
        except OSError as exc:
            raise _storage_error(self.root, exc) from exc
        try:
            info = build(tmp) or {}
            files, sizes = {}, {}
            for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
                name = file.relative_to(tmp).as_posix()
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
                files[name], sizes[name] = sha256_file(file), file.stat().st_size
            if not files:
                raise RuntimeError(f"stage {stage} produced no files")
            meta = {"format": STORE_FORMAT, "stage": stage, "key": key, "files": files, "sizes": sizes,
                    "info": info, "created": time.time()}
            atomic_write_bytes(tmp / ENTRY_FILE, canonical_json(meta).encode("utf-8"))
            final = self.entry_dir(stage, key)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)  # atomic: readers see no entry or a whole one
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno in _STORAGE_ERRNOS:
                raise _storage_error(self.root, exc) from exc
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._after_commit(stage)
        return Entry(stage, key, final, files, info, hit=False)

    # ------------------------------------------------------------------------------ housekeeping
    def _sweep_dead_tmp(self) -> None:
        """Remove build folders left by processes that no longer exist (killed mid-build)."""
        for tmp in (self.root / ".tmp").iterdir():
            try:
                pid = int(tmp.name.rsplit("-", 2)[1])
            except (IndexError, ValueError):
                continue
            if not _pid_alive(pid):
                shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _parse_fault(spec: str) -> tuple[str, int] | None:
        if not spec:
            return None
        stage, _, count = spec.partition(":")
        return stage, int(count or 1)

    def _after_commit(self, stage: str) -> None:
        self._commits[stage] = self._commits.get(stage, 0) + 1
        if self._fault and self._fault == (stage, self._commits[stage]):
            os.kill(os.getpid(), signal.SIGKILL)


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _storage_error(root: Path, exc: OSError) -> MvgenError:
    reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
              errno.EROFS: "it is read-only", errno.EACCES: "it is not writable",
              errno.EPERM: "it is not writable"}.get(exc.errno or 0, exc.strerror or str(exc))
    return MvgenError(f"cannot write to the artifact store at {root}: {reason}; free space or set store.root "
                      "to a writable folder (nothing already made was touched)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
