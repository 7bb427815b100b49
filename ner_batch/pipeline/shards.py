"""Shards of documents and the work directory that makes a run resumable.

``OUT.parts/`` beside the output holds ``plan.json`` (what the run reads and with which
settings), one ``shard-NNNNNN.part`` per finished shard (written to a temporary name,
fsynced and renamed, so it is complete or absent), and ``done.jsonl``, the manifest of
finished shards with their counts (appended and fsynced after the shard file is in
place). The final merge concatenates the shard files in order into ``OUT.tmp``, fsyncs it
and renames it to ``OUT``: the output appears complete or not at all.
"""

from __future__ import annotations

import dataclasses
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


class WorkDir:
    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def for_output(cls, out: Path) -> "WorkDir":
        return cls(out.with_name(out.name + ".parts"))

    @classmethod
    def at(cls, path: str) -> "WorkDir":
        return cls(Path(path))

    @property
    def plan_file(self) -> Path:
        return self.path / "plan.json"

    @property
    def done_file(self) -> Path:
        return self.path / "done.jsonl"

    def shard_path(self, index: int) -> Path:
        return self.path / f"shard-{index:06d}.part"

    def start(self, plan: dict[str, Any], resume: bool) -> dict[int, dict[str, Any]]:
        """Create (or, resuming, check) the work directory; the finished shards' counts."""
        if resume and self.plan_file.is_file():
            previous = json.loads(self.plan_file.read_text())
            changed = sorted(k for k in set(plan) | set(previous) if plan.get(k) != previous.get(k))
            if changed:
                raise ResumeError(
                    f"cannot resume: {', '.join(changed)} changed since the interrupted run in {self.path}; "
                    "run again without --resume to start over"
                )
            return self.finished()
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
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
        shutil.rmtree(self.path, ignore_errors=True)
