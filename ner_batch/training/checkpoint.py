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


def load_checkpoint(out: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint in ``out`` if it resumes a run of ``settings``; None if there is none.

    Raises CheckpointError for one that cannot be read or was written with other settings.
    """
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        return None
    try:  # weights_only: a checkpoint from elsewhere runs no code when read
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, another pickle
        raise CheckpointError(f"expected a training checkpoint in {path}, could not read it ({type(exc).__name__}): "
                              f"delete it and start the run again without --resume") from None
    if not isinstance(payload, dict) or payload.get("version") != VERSION:
        found = payload.get("version") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"expected a version {VERSION} training checkpoint in {path}, found {found!r}: "
                              f"delete it and start the run again without --resume")
    saved = payload["settings"]
    differ = [k for k in sorted(set(saved) | set(settings)) if saved.get(k) != settings.get(k)]
    if differ:
        shown = ", ".join(f"{_flag(k)} {settings.get(k)!r} where the run has {saved.get(k)!r}" for k in differ[:4])
        more = f" (+{len(differ) - 4} more)" if len(differ) > 4 else ""
        raise CheckpointError(f"expected the settings {path.parent} started with, found {shown}{more}: resume with the "
                              f"run's own command, or train into another --out")
    return payload


def restore(payload: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule,
            average=None, anchor=None) -> Progress:
    """Load a checkpoint's state over a run built as the first time; the random streams last."""
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    schedule.load_state_dict(payload["schedule"])
    if average is not None:
        average.updates = payload["average"]["updates"]
        average.shadow = payload["average"]["shadow"]
    if anchor is not None:  # the optimizer's groups are new dicts now: the anchor must read their lr
        anchor.groups = [g for g in optimizer.param_groups if g.get(ANCHOR_KEY)]
        anchor.start = payload["anchor"]
    _restore_random_streams(payload["random"])
    return Progress(**payload["progress"])
