"""Tagging one shard of documents, and the loop a worker runs over shards.

A shard is prepared (sentence and word splitting, then :meth:`SentenceTagger.plan`: word
pieces, windows, length-sorted token-budget batches) on a background thread while the
previous shard runs through ONNX Runtime, which releases the GIL: tokenization overlaps
inference. :meth:`SentenceTagger.run` does the rest, as everywhere else.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..batching import BatchSettings
from ..runtime.bundle import Bundle
from ..runtime.tagger import Tagger
from ..tagging import Plan, TagStats
from .inputs import Document
from .records import error_record, one_line, record, to_conll, to_jsonl
from ..segment import Span, join_words, split_document
from .shards import Shard, write_atomic


@dataclasses.dataclass
class TagSettings:
    """What a worker needs to build its own tagger (picklable, for spawned processes)."""

    bundle: str
    variant: str = "fp32"
    device: str = "auto"
    threads: int = 0
    token_budget: int = 8192
    max_batch: int = 32
    output_format: str = "jsonl"  # jsonl, conll or stix
    verify: bool = True  # check the bundle's checksums (the parent process did it already for workers)
    stix_time: str = ""  # created/modified/published of STIX objects: the run's start
    device_id: int = 0  # the CUDA device this worker opens (round-robin over GPUs for local workers)

    @property
    def batching(self) -> BatchSettings:
        return BatchSettings(self.token_budget, self.max_batch)


@dataclasses.dataclass
class _DocPart:
    doc: Document
    text: str = ""
    words: list[list[str]] = dataclasses.field(default_factory=list)
    spans: list[list[Span]] = dataclasses.field(default_factory=list)
    first_sentence: int = 0


@dataclasses.dataclass
class Prepared:
    shard: Shard
    parts: list[_DocPart]
    plan: Plan
    seconds: float = 0.0  # spent preparing (on the background thread)


class ShardTagger:
    def __init__(self, settings: TagSettings, say: Callable[[str], None] | None = None):
        self.settings = settings
        bundle = Bundle.load(settings.bundle, verify=settings.verify)
        self.tagger = Tagger(bundle, settings.variant, settings.device, settings.threads, batching=settings.batching,
                             device_id=settings.device_id, say=say)
        self.stix = None
        if settings.output_format == "stix":
            from ..output.stix import StixBuilder

            self.stix = StixBuilder(settings.stix_time)

    def _format(self, rec: dict[str, Any], words, tags) -> str:
        if self.settings.output_format == "conll":
            return to_conll(rec, words, tags)
        if self.stix is not None:
            return one_line(self.stix.bundle(rec)) + "\n"
        return to_jsonl(rec)

    def prepare(self, shard: Shard) -> Prepared:
        t0 = time.perf_counter()
        try:
            parts, all_words = self._split(shard.docs)
            plan = self.tagger.plan(all_words)
        except Exception:  # one document the splitter or tokenizer cannot take: find it, keep the others
            docs = [self._alone(doc) for doc in shard.docs]
            parts, all_words = self._split(docs)
            plan = self.tagger.plan(all_words)
        return Prepared(shard, parts, plan, time.perf_counter() - t0)

    def _split(self, docs) -> tuple[list[_DocPart], list[list[str]]]:
        parts: list[_DocPart] = []
        all_words: list[list[str]] = []
        for doc in docs:
            part = _DocPart(doc, first_sentence=len(all_words))
            if doc.error is None:
                if doc.text is not None:
                    part.text = doc.text
                    part.words, part.spans = split_document(doc.text)
                else:
                    sents = doc.sentences if doc.sentences is not None else [doc.tokens or []]
                    sents = [s for s in sents if s]
                    part.text, part.spans = join_words(sents)
                    part.words = sents
                all_words.extend(part.words)
            parts.append(part)
        return parts, all_words

    def _alone(self, doc: Document) -> Document:
        """``doc``, or an error copy of it when it cannot be split and tokenized on its own."""
        try:
            _, words = self._split([doc])
            self.tagger.plan(words)
            return doc
        except Exception as exc:
            return dataclasses.replace(doc, error=f"cannot tag this document: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    def infer(self, prep: Prepared) -> tuple[str, dict[str, Any]]:
        """The shard's output text and its counts."""
        cost = TagStats()
        tags = self.tagger.run(prep.plan, cost)
        t_post = time.perf_counter()
        sentence_pieces = prep.plan.pieces_per_sentence()
        out: list[str] = []
        stats = {"shard": prep.shard.index, "documents": len(prep.parts), "errors": 0, "sentences": 0, "words": 0,
                 "word_pieces": cost.word_pieces, "entities": 0, "padded_positions": cost.padded_positions,
                 "positions": cost.positions, "windows": cost.windows, "seconds_prepare": prep.seconds,
                 "seconds_model": cost.seconds_model, "seconds_decode": cost.seconds_decode}
        for part in prep.parts:
            if part.doc.error is not None:
                rec = error_record(part.doc)
                stats["errors"] += 1
                out.append(self._format(rec, [], []))
                continue
            k0, k1 = part.first_sentence, part.first_sentence + len(part.words)
            doc_tags = tags[k0:k1]
            rec = record(part.doc, part.spans, doc_tags, part.text, int(sentence_pieces[k0:k1].sum()))
            stats["sentences"] += rec["counts"]["sentences"]
            stats["words"] += rec["counts"]["words"]
            stats["entities"] += rec["counts"]["entities"]
            out.append(self._format(rec, part.words, doc_tags))
        stats["seconds_records"] = time.perf_counter() - t_post
        return "".join(out), stats


def run_shards(tagger: ShardTagger, shards: Iterable[Shard], work_dir, on_done: Callable[[dict[str, Any]], None]) -> None:
    """Prepare the next shard on a background thread while this one infers and writes.

    At most one shard is prepared ahead: a worker holds two shards at a time, so that
    several workers sharing one task queue stay balanced and memory stays bounded.
    """
    ready: queue.Queue = queue.Queue()
    slot = threading.Semaphore(1)  # one prepared shard ahead, no more
    stop = threading.Event()
    failure: list[BaseException] = []

    def producer() -> None:
        try:
            it = iter(shards)
            while True:
                slot.acquire()
                if stop.is_set():
                    break
                shard = next(it, None)
                if shard is None:
                    break
                ready.put(tagger.prepare(shard))
        except BaseException as exc:  # re-raised on the consuming side
            failure.append(exc)
        finally:
            ready.put(None)

    thread = threading.Thread(target=producer, name="prepare", daemon=True)
    thread.start()
    try:
        while True:
            prep = ready.get()
            slot.release()
            if prep is None:
                break
            text, stats = tagger.infer(prep)
            write_atomic(work_dir.shard_path(prep.shard.index), text)
            on_done(stats)
    finally:
        stop.set()
        slot.release()
        thread.join(timeout=5)
    if failure:
        raise failure[0]


def worker_main(settings: TagSettings, work_dir_path: str, tasks, results) -> None:
    """Entry point of a spawned worker: its own ONNX Runtime session, shards from ``tasks``."""
    from .shards import WorkDir

    parent = os.getppid()
    try:
        notes: list[str] = []
        tagger = ShardTagger(settings, say=notes.append)
        for message in notes or [""]:
            results.put(("note", {"device": tagger.tagger.model.device, "message": message}))

        def from_queue() -> Iterator[Shard]:
            while True:
                try:
                    shard = tasks.get(timeout=1.0)
                except queue.Empty:
                    if os.getppid() != parent:  # the parent was killed: stop instead of lingering
                        return
                    continue
                if shard is None:
                    return
                yield shard

        run_shards(tagger, from_queue(), WorkDir(Path(work_dir_path)), lambda stats: results.put(("done", stats)))
        results.put(("exit", None))
    except BaseException as exc:
        # Our own errors (device, bundle) read as they do with one worker; anything else names its type.
        known = type(exc).__name__ in ("DeviceError", "BundleError", "OutputError")
        message = str(exc) if known else f"a worker failed: {type(exc).__name__}: {exc}"
        results.put(("error", {"message": message.splitlines()[0] if message else type(exc).__name__,
                               "traceback": traceback.format_exc()}))

