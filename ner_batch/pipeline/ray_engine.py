"""``--engine ray``: the same shards, tagged by actors on a Ray cluster.

The driver (this process) reads the inputs and cuts the same shards as the local engine;
each Ray actor builds one :class:`~ner_batch.pipeline.worker.ShardTagger` (one ONNX Runtime
session, ``--threads`` intra-op threads: Ray itself only sets ``OMP_NUM_THREADS``) and
returns each shard's output text and counts. The driver writes the shard files, the
manifest and the final output exactly as the local engine does, so records, order, atomic
output and ``--resume`` are the same, and the output is byte-identical. Ray's own ordering
and checkpointing are not relied on: the manifest is the source of truth.

Faults: a shard whose actor dies is submitted again (to the restarted actor or another), up
to ``MAX_SHARD_TRIES`` times; after that, or when Ray itself fails, the run ends with one
line and the finished shards stay for ``--resume``. A Ray started for the run is shut down
after it; on a cluster, our actors are killed when the run ends, however it ends.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Callable, Iterator

from .shards import Shard, WorkDir, write_atomic
from .worker import ShardTagger, TagSettings

MAX_SHARD_TRIES = 3


class RayEngineError(RuntimeError):
    """Ray is missing, cannot start, or failed in a way the run cannot recover from."""


def _ray():
    try:
        import ray
    except ImportError:
        raise RayEngineError("--engine ray needs Ray: pip install 'ner-batch[ray]'") from None
    return ray


class _ShardActor:
    """One per Ray worker process: its own tagger, built once."""

    def __init__(self, settings: TagSettings):
        self.notes: list[str] = []
        self.tagger = ShardTagger(settings, say=self.notes.append)

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "device": self.tagger.tagger.model.device, "notes": self.notes}

    def tag(self, shard: Shard) -> tuple[int, str, dict[str, Any]]:
        text, stats = self.tagger.infer(self.tagger.prepare(shard))
        return shard.index, text, stats


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when a ``host:port`` cluster address does not answer."""
    import re
    import socket

    m = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address.strip())
    if not m:
        return  # "auto" and other forms: left to Ray
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout).close()
    except OSError as exc:
        raise RayEngineError(f"cannot start or reach Ray (address {address}): {exc.strerror or exc}; "
                             "start it with `ray start --head`, or leave out --ray-address for a local Ray") from None


def run_ray(settings: TagSettings, work: WorkDir, shards: Iterator[Shard], on_done: Callable[[dict[str, Any]], None],
            workers: int, address: str | None, say: Callable[[str], None], *, on_actors: Callable[[list[dict]], None] | None = None) -> str:
    """Tag ``shards`` on ``workers`` Ray actors; returns the device the actors run on."""
    ray = _ray()
    started_here = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            _check_reachable(address)
        try:
            if address:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            else:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        except Exception as exc:  # ConnectionError, RuntimeError... from a cluster that is not there
            raise RayEngineError(f"cannot start or reach Ray ({'address ' + address if address else 'a local Ray'}): "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        started_here = True
    options: dict[str, Any] = {"num_cpus": max(1, settings.threads), "max_restarts": MAX_SHARD_TRIES, "max_task_retries": 0}
    if settings.device == "cuda":
        options["num_gpus"] = 1
    actor_cls = ray.remote(**options)(_ShardActor)
    actors = [actor_cls.remote(settings) for _ in range(workers)]
    try:
        try:
            infos = ray.get([a.info.remote() for a in actors])
        except ray.exceptions.RayActorError as exc:
            cause = getattr(exc, "cause", None) or exc
            raise RayEngineError(f"a Ray actor could not start its tagger: {str(cause).splitlines()[-1]}") from None
        for note in dict.fromkeys(n for i in infos for n in i["notes"]):
            say(note)
        if on_actors:
            on_actors(infos)
        _drive(ray, actors, shards, work, on_done)
        return infos[0]["device"] if infos else "cpu"
    finally:
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already gone
                pass
        if started_here:
            ray.shutdown()


def _drive(ray, actors, shards: Iterator[Shard], work: WorkDir, on_done) -> None:
    """At most two shards in flight per actor. A shard whose actor died goes again to any live
    actor; the dead actor's slots come back once Ray has restarted it and it answers."""
    pending: dict[Any, tuple[Shard, int, int]] = {}  # future -> (shard, actor index, tries)
    probes: dict[Any, int] = {}  # future of info() on a restarting actor -> its index
    lost = [0] * len(actors)  # slots of each actor waiting for it to come back
    down: set[int] = set()
    retry: deque[tuple[Shard, int]] = deque()
    free = deque(k for k in range(len(actors)) for _ in range(2))
    source = iter(shards)
    exhausted = False
    failures = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError)
    while True:
        while free and (retry or not exhausted):
            k = free.popleft()
            if k in down:
                lost[k] += 1
                continue
            if retry:
                shard, tries = retry.popleft()
            else:
                shard = next(source, None)
                if shard is None:
                    exhausted = True
                    free.appendleft(k)
                    break
                tries = 0
            pending[actors[k].tag.remote(shard)] = (shard, k, tries + 1)
        if not pending and not probes:
            if retry:
                raise RayEngineError(f"no Ray actor is left to tag shard {retry[0][0].index}; finished shards are kept in "
                                     f"{work.path}: run the same command with --resume")
            return
        [ready], _ = ray.wait(list(pending) + list(probes), num_returns=1)
        if ready in probes:
            k = probes.pop(ready)
            try:
                ray.get(ready)
            except failures:
                continue  # restarts used up: the actor stays down, its slots are gone
            down.discard(k)
            free.extend([k] * lost[k])
            lost[k] = 0
            continue
        shard, k, tries = pending.pop(ready)
        try:
            index, text, stats = ray.get(ready)
        except failures as exc:
            if tries >= MAX_SHARD_TRIES:
                raise RayEngineError(f"shard {shard.index} failed {tries} times on Ray actors ({type(exc).__name__}); "
                                     f"finished shards are kept in {work.path}: run the same command with --resume") from None
            retry.append((shard, tries))
            lost[k] += 1
            if k not in down:
                down.add(k)
                probes[actors[k].info.remote()] = k
            continue
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise RayEngineError(f"a Ray actor failed on shard {shard.index}: {type(cause).__name__ if cause else 'error'}: "
                                 f"{str(cause or exc).splitlines()[0]}; finished shards are kept in {work.path}") from None
        write_atomic(work.shard_path(index), text)
        on_done(stats)
        free.append(k)
