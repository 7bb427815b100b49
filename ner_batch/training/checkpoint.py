"""A training run's state after each finished epoch, so that a stopped run can go on (`train --resume`).

A crf run takes about an hour on one core and a `make train` six or seven; a killed process
(a closed laptop, a session's end, an out-of-memory neighbour) should cost the unfinished epoch,
not the run. After every epoch :func:`save_checkpoint` writes ``OUT/checkpoint.pt`` whole or not
at all: the weights, the optimizer's moments, the schedule's step, the weight average and the
start anchor when the run has them, the random streams (dropout draws from torch's), the epoch
history and the log's lines. The batches of every epoch are drawn up front from ``--data-seed``,
so a resumed run draws the same plan again, loads the state over a model built as the first
time, and ends with the weights, scores and files an unstopped run would have (tested). The
checkpoint is removed when the run ends; a finished run has none.

Only the settings the run started with may resume it: another learning rate half-way would be a
run nobody can name, so :func:`load_checkpoint` refuses in one line naming the settings that differ.

A **branch** (`train --branch-from TRUNK`) starts from another run's checkpoint instead, one that
`--stop-after K` kept: the trunk's weights, optimizer moments, schedule step, average and anchor,
then epochs K+1.. drawn from the branch's own ``--data-seed`` (its batches, rewrites, dropout).
Runs branched from one trunk share their first K epochs, so they end closer to each other than
runs apart from the start (what a soup of them keeps: ``soup.spread``). :func:`load_trunk` allows
no other difference than the data seed: a branch with the trunk's own is the trunk, resumed.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .anchor import ANCHOR_KEY
from .runs import CHECKPOINT_FILE as CHECKPOINT

VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot resume this run: unreadable, of another version, or of other settings."""


@dataclasses.dataclass
class Progress:
    """Where the epoch loop stands after ``epoch`` finished epochs."""

    epoch: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best_score: float = -1.0
    best_epoch: int = 0
    stale: int = 0  # epochs since the last better selection score
    seconds: float = 0.0  # training time so far, over every process that trained this run
    log_lines: list[str] = dataclasses.field(default_factory=list)
    resumed: list[int] = dataclasses.field(default_factory=list)  # epochs after which another process went on
    branch: dict[str, Any] = dataclasses.field(default_factory=dict)  # a branch's trunk: from, epoch, steps, seconds, data_seed


def _random_streams() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
    }


def _restore_random_streams(streams: dict[str, Any]) -> None:
    torch.set_rng_state(streams["torch"])
    version, state, gauss = streams["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, gauss = streams["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def save_checkpoint(out: Path, settings: dict[str, Any], progress: Progress, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, schedule, average=None, anchor=None) -> Path:
    """Write ``out/checkpoint.pt`` (a reader never sees half a file); ``settings`` as dataclasses.asdict gives them."""
    payload = {
        "version": VERSION,
        "settings": settings,
        "progress": dataclasses.asdict(progress),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "average": None if average is None else {"updates": average.updates, "shadow": average.shadow},
        "anchor": None if anchor is None else anchor.start,
        "random": _random_streams(),
    }
    path = Path(out) / CHECKPOINT
    tmp = path.with_suffix(".pt.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _read(path: Path, what_to_do: str) -> dict[str, Any]:
    try:  # weights_only: a checkpoint from elsewhere runs no code when read
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, another pickle
        raise CheckpointError(f"expected a training checkpoint in {path}, could not read it ({type(exc).__name__}): "
                              f"{what_to_do}") from None
    if not isinstance(payload, dict) or payload.get("version") != VERSION:
        found = payload.get("version") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"expected a version {VERSION} training checkpoint in {path}, found {found!r}: {what_to_do}")
    return payload


def _differences(saved: dict[str, Any], settings: dict[str, Any], whose: str, skip: tuple[str, ...] = ()) -> str:
    """The settings that differ from a checkpoint's, named as flags (the first four, then how many more); "" if none."""
    differ = [k for k in sorted(set(saved) | set(settings)) if k not in skip and saved.get(k) != settings.get(k)]
    shown = ", ".join(f"{_flag(k)} {settings.get(k)!r} where {whose} has {saved.get(k)!r}" for k in differ[:4])
    return shown + (f" (+{len(differ) - 4} more)" if len(differ) > 4 else "")


def finished_training(progress: dict[str, Any], epochs: int, patience: int) -> bool:
    """No epoch left after ``progress``: all trained, or --patience spent (the trainer's stopping rule)."""
    return progress["epoch"] >= epochs or bool(patience and progress["stale"] >= patience)


def load_checkpoint(out: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint in ``out`` if it resumes a run of ``settings``; None if there is none.

    Raises CheckpointError for one that cannot be read or was written with other settings.
    """
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        return None
    payload = _read(path, "delete it and start the run again without --resume")
    shown = _differences(payload["settings"], settings, "the run")
    if shown:
        raise CheckpointError(f"expected the settings {path.parent} started with, found {shown}: resume with the "
                              f"run's own command, or train into another --out")
    return payload


_BRANCH_MAY_DIFFER = ("data_seed", "branch_from")


def _data_seed(settings: dict[str, Any]) -> int:
    return settings["seed"] if settings.get("data_seed") is None else settings["data_seed"]


def load_trunk(trunk: str | Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint a branch of ``settings`` starts from: ``trunk``'s (a run directory, or its
    checkpoint file), written with the same settings but the data seed, with epochs left to train.

    Raises CheckpointError in one line for a missing or unreadable one, other settings, the
    trunk's own data seed, or a trunk with no epoch left.
    """
    path = Path(trunk) if Path(trunk).is_file() else Path(trunk) / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"expected a stopped run's {CHECKPOINT} to branch from at {path}, found none: train the "
                              f"trunk with --stop-after N first (a finished run keeps no checkpoint)")
    payload = _read(path, "train the trunk again with --stop-after N")
    saved = payload["settings"]
    shown = _differences(saved, settings, "the trunk", skip=_BRANCH_MAY_DIFFER)
    if shown:
        raise CheckpointError(f"expected the settings of the trunk {path.parent} but --data-seed, found {shown}: "
                              f"branch with the trunk's command and another --data-seed")
    if _data_seed(saved) == _data_seed(settings):
        raise CheckpointError(f"expected another --data-seed than the trunk's {_data_seed(saved)}: a branch with the "
                              f"trunk's own is the trunk (resume it with --resume instead)")
    done = payload["progress"]
    if finished_training(done, settings["epochs"], settings["patience"]):
        raise CheckpointError(f"expected a trunk with epochs left to train, found {path.parent} stopped after epoch "
                              f"{done['epoch']} of {settings['epochs']}"
                              + (" by --patience" if done["epoch"] < settings["epochs"] else "")
                              + ": stop the trunk earlier (--stop-after N)")
    return payload


def trunk_origin(trunk: str | Path, payload: dict[str, Any]) -> dict[str, Any]:
    """What a branch records of its trunk (metrics.json's ``branched_from``)."""
    done = payload["progress"]
    return {"from": str(trunk), "epoch": done["epoch"], "steps": payload["schedule"]["last_epoch"],
            "seconds": round(done["seconds"], 1), "data_seed": _data_seed(payload["settings"])}


def branch(payload: dict[str, Any], origin: dict[str, Any], data_seed: int, model: torch.nn.Module,
           optimizer: torch.optim.Optimizer, schedule, average=None, anchor=None) -> Progress:
    """Load a trunk's state over a branch built as a new run, and draw the rest from ``data_seed``:
    the random streams start afresh from it; the trunk's epochs stay in the history (marked
    ``trunk``) but the best epoch is chosen among the branch's own."""
    restore(payload, model, optimizer, schedule, average, anchor, streams=False)
    torch.manual_seed(data_seed)
    random.seed(data_seed)
    np.random.seed(data_seed)
    history = [{**h, "trunk": True} for h in payload["progress"]["history"]]
    return Progress(epoch=origin["epoch"], history=history, branch=origin)


def restore(payload: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule,
            average=None, anchor=None, *, streams: bool = True) -> Progress:
    """Load a checkpoint's state over a run built as the first time; the random streams last (unless not ``streams``)."""
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    schedule.load_state_dict(payload["schedule"])
    if average is not None:
        average.updates = payload["average"]["updates"]
        average.shadow = payload["average"]["shadow"]
    if anchor is not None:  # the optimizer's groups are new dicts now: the anchor must read their lr
        anchor.groups = [g for g in optimizer.param_groups if g.get(ANCHOR_KEY)]
        anchor.start = payload["anchor"]
    if streams:
        _restore_random_streams(payload["random"])
    return Progress(**payload["progress"])
