"""Tag a corpus into one output file: shards, workers, progress, resume, final merge."""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing as mp
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .. import __version__
from ..runtime.bundle import MANIFEST, Bundle
from ..runtime.session import device_id_for_worker, gpu_count
from .inputs import Source, count_documents, discover, read_documents
from .shards import ResumeError, Shard, WorkDir, plan_shards  # noqa: F401 (ResumeError re-exported)
from .worker import ShardTagger, TagSettings, run_shards, worker_main



class OutputError(RuntimeError):
    """The output cannot be written."""


class WorkerError(RuntimeError):
    """A worker process failed or died; finished shards are kept for --resume."""


@dataclasses.dataclass
class Summary:
    # Summed over shards (the keys of a worker's per-shard stats):
    documents: int = 0
    errors: int = 0
    sentences: int = 0
    words: int = 0
    word_pieces: int = 0
    entities: int = 0
    padded_positions: int = 0
    positions: int = 0
    windows: int = 0
    seconds_prepare: float = 0.0  # summed over workers (prepare runs beside the model)
    seconds_model: float = 0.0
    seconds_decode: float = 0.0
    seconds_records: float = 0.0
    # About the run as a whole:
    shards: int = 0
    resumed_shards: int = 0
    seconds: float = 0.0
    workers: int = 1
    variant: str = "fp32"
    device: str = "cpu"
    output: str = ""

    def add(self, stats: dict[str, Any]) -> None:
        """Add one shard's stats (the fields before ``shards``)."""
        for f in dataclasses.fields(self):
            if f.name == "shards":
                break
            setattr(self, f.name, getattr(self, f.name) + stats.get(f.name, 0))

    @property
    def padding_ratio(self) -> float:
        return self.padded_positions / max(1, self.positions)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        s = max(self.seconds, 1e-9)
        d.update({
            "seconds": round(self.seconds, 3),
            "documents_per_s": round(self.documents / s, 2),
            "words_per_s": round(self.words / s, 1),
            "word_pieces_per_s": round(self.word_pieces / s, 1),
            "padding_ratio": round(self.padding_ratio, 4),
        })
        for k, v in d.items():
            if k.startswith("seconds_"):
                d[k] = round(v, 3)
        return d

    def table(self) -> str:
        d = self.as_dict()
        rows = [
            ("documents", f"{self.documents:,} ({self.errors:,} errors)"),
            ("sentences", f"{self.sentences:,}"),
            ("words", f"{self.words:,} ({self.word_pieces:,} word pieces)"),
            ("entities", f"{self.entities:,}"),
            ("seconds", f"{self.seconds:.2f}"),
            ("throughput", f"{d['documents_per_s']:,} docs/s, {d['words_per_s']:,} words/s, {d['word_pieces_per_s']:,} pieces/s"),
            ("padding ratio", f"{self.padding_ratio:.3f}"),
            ("time split", f"model {self.seconds_model:.2f}s, decode {self.seconds_decode:.2f}s, records {self.seconds_records:.2f}s, "
                           f"prepare {self.seconds_prepare:.2f}s (beside the model)"),
            ("shards", f"{self.shards} ({self.resumed_shards} from an earlier run)"),
            ("model", f"{self.variant} on {self.device}, {self.workers} worker(s)"),
            ("output", self.output),
        ]
        return "\n".join(f"{k:>14}  {v}" for k, v in rows)


def _fingerprint(sources: Sequence[Source], bundle: Bundle, settings: TagSettings, shard_docs: int, shard_chars: int) -> dict[str, Any]:
    inputs = []
    for s in sources:
        st = os.stat(s.path)
        inputs.append([s.path, s.format, s.gz, st.st_size, st.st_mtime_ns])
    digest = hashlib.sha256(repr(inputs).encode()).hexdigest()
    # Everything that can change a byte of the output. The batching flags cannot for the
    # batch-independent variants, but can for int8-dynamic: a resume keeps them all equal.
    return {
        "inputs": digest,
        "n_inputs": len(inputs),
        "bundle": hashlib.sha256((bundle.path / MANIFEST).read_bytes()).hexdigest(),
        "variant": settings.variant,
        "device": settings.device,
        "output_format": settings.output_format,
        "shard_docs": shard_docs,
        "shard_chars": shard_chars,
        "token_budget": settings.token_budget,
        "max_batch": settings.max_batch,
        "ner_batch": __version__,
    }


def _check_output(out: Path) -> Path:
    """The path to write (a symlink is written through: its target), or OutputError."""
    if out.is_symlink():
        out = Path(os.path.realpath(out))
    if out.is_dir():
        raise OutputError(f"cannot write output {out}: it is a directory; expected a file path such as tags.jsonl")
    parent = out.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write output {out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write output {out}: directory {parent} is not writable")
    if out.exists() and not os.access(out, os.W_OK):
        raise OutputError(f"cannot write output {out}: the file exists and is not writable")
    tmp = out.with_name(out.name + ".tmp")
    if tmp.is_dir() and not tmp.is_symlink():
        raise OutputError(f"cannot write output {out}: {tmp}, where it is assembled, is a directory; move it away")
    return out


def check_writable_file(path: str | Path, what: str) -> None:
    """OutputError unless ``path`` can be created or replaced (checked before any work)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {what} {path}: it is a directory; expected a file path")
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {what} {path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputError(f"cannot write {what} {path}: not writable")


def _refuse_output_as_input(out: Path, sources: Sequence[Source]) -> None:
    real = os.path.realpath(out)
    for s in sources:
        if s.path != "-" and os.path.realpath(s.path) == real:
            raise OutputError(f"--out {out} is also an INPUT: writing it would replace what is being read; choose another output path")


def tag_corpus(
    inputs: Sequence[str],
    bundle: str | Path,
    out: str | Path,
    *,
    variant: str = "fp32",
    device: str = "auto",
    workers: int = 1,
    threads: int = 0,
    input_format: str | None = None,
    output_format: str = "jsonl",
    resume: bool = False,
    shard_docs: int = 512,
    shard_chars: int = 1 << 17,
    token_budget: int = 8192,
    max_batch: int = 32,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
    engine: str = "local",
    ray_address: str | None = None,
) -> Summary:
    """Tag every document of ``inputs`` into ``out``; see the module docstring."""
    say = say or (lambda m: print(m, file=sys.stderr))
    started = time.perf_counter()
    out = _check_output(Path(out))
    work = WorkDir.for_output(out)
    skipped: list[str] = []
    sources = discover(inputs, input_format, exclude=[out, out.with_name(out.name + ".tmp"), work.path], note=skipped.append)
    for line in skipped[:10]:
        say(line)
    if len(skipped) > 10:
        say(f"... and {len(skipped) - 10} more skipped")
    _refuse_output_as_input(out, sources)
    if resume and any(s.path == "-" for s in sources):
        raise ResumeError("cannot resume a run that reads standard input: its documents cannot be read again")
    loaded = Bundle.load(bundle)
    workers = max(1, int(workers))
    per_worker_threads = threads or max(1, (os.cpu_count() or 1) // workers)
    if output_format == "stix":
        from ..output.stix import _stix2

        _stix2()  # a missing library fails here, before any work
    if engine not in ("local", "ray"):
        raise ValueError(f"expected engine 'local' or 'ray', got {engine!r}")
    if engine == "ray":
        from .ray_engine import _ray

        _ray()  # a missing extra fails here, before any work
    settings = TagSettings(str(loaded.path), variant, device, per_worker_threads, token_budget, max_batch,
                           output_format=output_format, verify=False,  # verified just above
                           stix_time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    loaded.model_path(variant)  # a missing variant fails here, before any work
    cores = os.cpu_count() or 1
    if workers > cores or (threads and threads * workers > cores):
        say(f"note: {workers} worker(s) x {per_worker_threads} thread(s) is more than this machine's {cores} cores: "
            "it will be slower and use more memory, not faster")
    plan = _fingerprint([s for s in sources if s.path != "-"], loaded, settings, shard_docs, shard_chars)
    try:
        finished = work.start(plan, resume)
    except OSError as exc:
        work.release()
        raise OutputError(f"cannot write output {out}: {exc.strerror or exc} ({work.path})") from None
    except ResumeError:
        work.release()
        raise
    try:
        return _tag(sources, settings, work, out, finished, workers, variant, shard_docs, shard_chars, progress, say, started,
                    engine, ray_address)
    finally:
        work.release()


def _tag(sources, settings: TagSettings, work: WorkDir, out: Path, finished, workers: int, variant: str,
         shard_docs: int, shard_chars: int, progress: bool, say, started: float, engine: str = "local",
         ray_address: str | None = None) -> Summary:
    from tqdm.auto import tqdm

    summary = Summary(workers=workers, variant=variant, output=str(out))
    for stats in finished.values():
        summary.add(stats)
    summary.resumed_shards = len(finished)
    tagger = ShardTagger(settings, say=say) if workers == 1 and engine == "local" else None  # says its device note before the bar
    total = count_documents(sources)
    bar = tqdm(total=total, unit="doc", desc="tagging", disable=not progress, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
    n_shards = [0]
    fresh_words = [0]  # words tagged by this run (not the resumed shards), for the rate shown
    lock = threading.Lock()

    def todo() -> Iterator[Shard]:
        for shard in plan_shards(read_documents(sources), shard_docs, shard_chars):
            n_shards[0] = shard.index + 1
            if shard.index in finished:
                with lock:
                    bar.update(len(shard.docs))
                continue
            yield shard

    def on_done(stats: dict[str, Any]) -> None:
        work.mark_done(stats)
        with lock:
            summary.add(stats)
            fresh_words[0] += stats["words"]
            bar.update(stats["documents"])
            elapsed = time.perf_counter() - started
            bar.set_postfix_str(f"{fresh_words[0] / max(elapsed, 1e-9):,.0f} words/s, {summary.entities:,} entities", refresh=False)

    try:
        if engine == "ray":
            from .ray_engine import run_ray

            summary.device = run_ray(settings, work, todo(), on_done, workers, ray_address, say)
        elif tagger is not None:
            summary.device = tagger.tagger.model.device
            run_shards(tagger, todo(), work, on_done)
        else:
            summary.device = _run_workers(settings, work, todo(), on_done, workers, say)
    finally:
        bar.close()
    summary.shards = n_shards[0]
    work.merge(out, summary.shards)
    work.remove()
    summary.seconds = time.perf_counter() - started
    return summary


def _run_workers(settings: TagSettings, work: WorkDir, shards: Iterator[Shard], on_done, workers: int, say) -> str:
    """Spawned worker processes, each with its own session, fed through a bounded queue."""
    ctx = mp.get_context("spawn")
    tasks = ctx.Queue(maxsize=workers)
    results = ctx.Queue()
    gpus = gpu_count() if settings.device in ("auto", "cuda") else 0
    procs = [ctx.Process(target=worker_main, args=(dataclasses.replace(settings, device_id=device_id_for_worker(i, gpus)),
                                                   str(work.path), tasks, results), daemon=True, name=f"ner-batch-worker-{i}")
             for i in range(workers)]
    for p in procs:
        p.start()
    feed_error: list[BaseException] = []
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                tasks.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def feeder() -> None:
        try:
            for shard in shards:
                if not put(shard):
                    return
        except BaseException as exc:
            feed_error.append(exc)
        finally:
            for _ in procs:
                put(None)

    thread = threading.Thread(target=feeder, name="feeder", daemon=True)
    thread.start()
    device, notes, exited = "cpu", set(), 0
    try:
        while exited < len(procs):
            try:
                kind, payload = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise WorkerError(f"worker {dead[0].name} died (exit code {dead[0].exitcode}: killed, or out of memory); "
                                      f"finished shards are kept in {work.path}: run the same command with --resume")
                continue
            if kind == "done":
                on_done(payload)
            elif kind == "note":
                device = payload["device"]
                if payload["message"] and payload["message"] not in notes:
                    notes.add(payload["message"])
                    say(payload["message"])
            elif kind == "exit":
                exited += 1
            else:
                raise WorkerError(payload["message"])
    finally:
        stop.set()
        if exited < len(procs):  # failure or interrupt: do not wait on queues nobody reads
            for p in procs:
                if p.is_alive():
                    p.terminate()
            tasks.cancel_join_thread()
            results.cancel_join_thread()
        for p in procs:
            p.join(timeout=10)
        thread.join(timeout=2)
    if feed_error:
        raise feed_error[0]
    return device

