"""Shards of documents and the work directory that makes a run resumable.

``OUT.parts/`` beside the output holds ``ner-batch-workdir`` (the marker that makes it ours:
a directory without it is never deleted or reused), ``lock`` (held with ``flock`` for as long
as a run works there: a second run on the same output is refused, and a killed run's lock
goes with its process), ``plan.json`` (what the run reads and with which
settings), one ``shard-NNNNNN.part`` per finished shard (written to a temporary name,
fsynced and renamed, so it is complete or absent), and ``done.jsonl``, the manifest of
finished shards with their counts (appended and fsynced after the shard file is in
place). The final merge concatenates the shard files in order into ``OUT.tmp``, fsyncs it
and renames it to ``OUT``: the output appears complete or not at all.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

from .inputs import Document


@dataclasses.dataclass
class Shard:
    index: int
    docs: list[Document]


def plan_shards(docs: Iterable[Document], max_docs: int = 512, max_chars: int = 1 << 17) -> Iterator[Shard]:
    """Consecutive documents, at most ``max_docs`` and about ``max_chars`` characters a shard.

    Deterministic for the same input, so a resumed run cuts the same shards.
    """
    batch: list[Document] = []
    size = 0
    index = 0
    for doc in docs:
        if batch and (len(batch) >= max_docs or size + doc.size > max_chars):
            yield Shard(index, batch)
            index += 1
            batch, size = [], 0
        batch.append(doc)
        size += doc.size
    if batch:
        yield Shard(index, batch)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ResumeError(RuntimeError):
    """A run cannot be resumed as asked."""


MARKER = "ner-batch-workdir"


class WorkDirBusy(ResumeError):
    """Another run holds the work directory."""


class WorkDir:
    def __init__(self, path: Path):
        self.path = path
        self._lock_fd: int | None = None

    @classmethod
    def for_output(cls, out: Path) -> "WorkDir":
        return cls(out.with_name(out.name + ".parts"))

    @property
    def plan_file(self) -> Path:
        return self.path / "plan.json"

    @property
    def done_file(self) -> Path:
        return self.path / "done.jsonl"

    def shard_path(self, index: int) -> Path:
        return self.path / f"shard-{index:06d}.part"

    def acquire(self) -> None:
        """Make the directory ours (refusing one that is not) and lock it for this process."""
        if self.path.exists() and not self.path.is_dir():
            raise ResumeError(f"cannot use {self.path} as the work directory: it exists and is not a directory; move it away")
        if self.path.is_dir() and any(self.path.iterdir()) and not (self.path / MARKER).is_file():
            raise ResumeError(
                f"{self.path} exists and is not a ner-batch work directory (no {MARKER} file in it): refusing to "
                "delete or reuse it; move it away or choose another --out"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / MARKER).touch()
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise WorkDirBusy(
                f"another ner-batch run (pid {holder}) is writing to this output ({self.path} is locked); "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    def start(self, plan: dict[str, Any], resume: bool) -> dict[int, dict[str, Any]]:
        """Lock the work directory and check (resuming) or reset it; the finished shards' counts."""
        self.acquire()
        if resume and self.plan_file.is_file():
            previous = json.loads(self.plan_file.read_text())
            changed = sorted(k for k in set(plan) | set(previous) if plan.get(k) != previous.get(k))
            if changed:
                raise ResumeError(
                    f"cannot resume: {', '.join(changed)} changed since the interrupted run in {self.path}; "
                    "run again without --resume to start over"
                )
            return self.finished()
        for entry in self.path.iterdir():  # a fresh start: our own leftovers go, marker and lock stay
            if entry.name in (MARKER, "lock"):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        write_atomic(self.plan_file, json.dumps(plan, indent=1, sort_keys=True))
        _fsync_dir(self.path.parent)
        return {}

    def finished(self) -> dict[int, dict[str, Any]]:
        done: dict[int, dict[str, Any]] = {}
        if not self.done_file.is_file():
            return done
        for line in self.done_file.read_text().splitlines():
            try:
                stats = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill: that shard is redone
            if self.shard_path(stats["shard"]).is_file():
                done[stats["shard"]] = stats
        return done

    def mark_done(self, stats: dict[str, Any]) -> None:
        with open(self.done_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(stats) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def merge(self, out: Path, n_shards: int) -> None:
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "wb") as dst:
            for k in range(n_shards):
                with open(self.shard_path(k), "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, out)
        _fsync_dir(out.parent)

    def remove(self) -> None:
        """Delete the work directory (ours: it carries the marker) and drop the lock."""
        if (self.path / MARKER).is_file():
            shutil.rmtree(self.path, ignore_errors=True)
        self.release()
