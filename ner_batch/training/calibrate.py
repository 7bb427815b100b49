"""O-shift calibration: one number added to the "O" label's emission of a trained model,
chosen on valid, and folded into the bias of the head's output layer.

A tagger's errors on new names are of two kinds that pull apart: missed mentions and
spurious ones. Where the model sits between them is set by how much every word's "O"
emission outweighs the entity labels, a balance training leaves where it leaves it; a soup
of runs (``ner-batch soup``), whose averaged weights are less sure of "O", tags more words.
Shifting the "O" emission by ``delta`` moves that balance: ``delta > 0`` tags fewer words
(precision up, recall down), ``delta < 0`` more.

The shift is chosen on valid only (``--select``), from a grid, by decoding the same valid
emissions (computed once) with each shift; test is scored once, on the result. Folded into
the bias, it changes no graph, size or speed: the bundle exports and tags as before.
Torch is imported inside the functions only, so the CLI reads the grid without it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .runs import SELECT_SCORES, RunError, read_metrics

#: Shifts tried by default: -1 to 3 in steps of 0.25 (0 keeps the model as trained).
DEFAULT_GRID = tuple(i / 4 for i in range(-4, 13))
#: Largest |shift| accepted: emissions are O(10); a larger shift tags nothing or everything.
MAX_SHIFT = 20.0
LABEL = "O"


def parse_grid(text: str) -> tuple[float, ...]:
    """Shifts from ``"-1,-0.5,0,0.5"``; raises ValueError with one line on anything else."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ValueError(f"expected comma-separated numbers for --grid, e.g. '-1,0,0.5,1', got {text!r}")
    values = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise ValueError(f"expected numbers in --grid, got {p!r} in {text!r}") from None
        if not math.isfinite(v) or abs(v) > MAX_SHIFT:
            raise ValueError(f"expected shifts between -{MAX_SHIFT:g} and {MAX_SHIFT:g} in --grid, got {p}")
        values.append(v)
    return tuple(sorted(set(values)))


def choose_shift(entries: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """The entry with the highest ``key``; among equals the smallest |shift| (closest to the model as trained)."""
    return max(entries, key=lambda e: (e[key], -abs(e["shift"])))


def calibrate_run(
    run: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    data: str | Path | None = None,
    *,
    grid: Sequence[float] = DEFAULT_GRID,
    select: str = "valid",
    splits: dict[str, list] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Choose the "O" shift of the finished run ``run`` on valid, write the shifted model to
    ``out_dir/best`` and ``out_dir/metrics.json`` (every shift's valid scores, the chosen
    one's valid and test scores). ``splits`` overrides the DNRTI files (tests).

    Given several runs, the shift is chosen for their output ensemble (the shift added to its
    averaged emissions), and ``out_dir/best`` is the ensemble with every member shifted by it
    (models/ensemble.py): a model directory that ``export`` and ``evaluate`` take like a run's."""
    from ..data.dnrti import load_split
    from .ensemble import load_runs
    from .trainer import save_and_score, write_metrics

    if select not in SELECT_SCORES:
        raise ValueError(f"expected --select to be one of {', '.join(SELECT_SCORES)}, got {select!r}")
    if not grid:
        raise ValueError("expected at least one shift in --grid, got none")
    runs = [Path(run)] if isinstance(run, (str, Path)) else [Path(r) for r in run]
    if not runs:
        raise RunError("expected a run to calibrate, got none")
    run, out = runs[0], Path(out_dir)
    for r in runs:
        if out.resolve() == r.resolve():
            raise RunError(f"expected --out other than the run itself ({r}): the calibrated model is a new run")
    started = time.time()
    each = [read_metrics(r) for r in runs]
    for r, m in zip(runs, each):
        if "valid" not in m:
            raise RunError(f"expected a finished run in {r}, found one without final scores (still training, or stopped?)")
    metrics = each[0]
    model, tokenizer = load_runs(runs)
    for r, m in zip(runs, each):
        if m["settings"].get("calibrate"):
            log(f"note: {r} is calibrated already (O {m['settings']['calibrate']['shift']:+.2f}); shifts add up")
    if splits is None:
        splits = {name: load_split(data, name)[0] for name in ("train", "valid", "test")}
    train_s, valid_s = splits["train"], splits["valid"]
    windower = model.config.windower(tokenizer)
    entries, results = sweep_shifts(model, windower, valid_s, train_s, grid, log)
    chosen = choose_shift(entries, SELECT_SCORES[select])
    model.shift_label(LABEL, chosen["shift"])
    final = save_and_score(model, tokenizer, windower, out, results[chosen["shift"]], splits,
                           f"chosen O {chosen['shift']:+.2f} (on {select})", log)
    settings = dict(metrics["settings"])
    earlier = (settings.get("calibrate") or {}).get("shift", 0.0)
    settings["calibrate"] = {"label": LABEL, "shift": earlier + chosen["shift"], "select": select,
                             "grid": sorted(float(g) for g in grid), "run": str(run)}
    if len(runs) > 1:  # the shift of the ensemble's output; each member's own earlier shift is kept beside it
        settings["calibrate"].update(run=None, shift=chosen["shift"])
        settings["ensemble"] = {"runs": [str(r) for r in runs],
                                "earlier_shifts": [(m["settings"].get("calibrate") or {}).get("shift", 0.0) for m in each]}
    result = {
        "settings": settings,
        "epochs": [],
        "best_epoch": metrics.get("best_epoch"),
        "calibration": entries,
        "wall_seconds": round(time.time() - started + sum(m.get("wall_seconds", 0.0) for m in each), 1),
        **final,
    }
    if "ingredients" in metrics:
        result["ingredients"] = metrics["ingredients"]
    return write_metrics(out, result)


def sweep_shifts(model, windower, valid_s, train_s, grid: Sequence[float],
                 log: Callable[[str], None] = print) -> tuple[list[dict[str, Any]], dict[float, dict[str, Any]]]:
    """Score ``model`` on valid with each "O" shift of ``grid`` added to its emissions; the model is
    not changed. Returns the entries (one per shift, by shift: the shift and its valid scores) and
    each shift's full valid result. The valid emissions are computed once."""
    import torch

    from ..decode import Decoder
    from ..tagging import SentenceTagger
    from .trainer import _valid_entry, score_predictions, to_torch

    o = model.config.labels.index(LABEL)
    model.eval()
    # The valid emissions, computed once: the tagger asks for the same batches in the same
    # order on every pass, so each later pass replays them with the shift added.
    cache: list[np.ndarray] = []
    state = {"shift": 0.0, "replay": 0}

    @torch.no_grad()
    def emit(batch) -> np.ndarray:
        if state["replay"] < 0:
            cache.append(model(**to_torch(batch)).float().numpy())
            emissions = cache[-1]
        else:
            i = state["replay"]
            if i >= len(cache) or cache[i].shape[:2] != batch.word_mask.shape:
                raise RuntimeError(f"expected the tagger to ask for the {len(cache)} batches of the first pass "
                                   f"again, got another batch at position {i}")
            emissions = cache[i]
            state["replay"] += 1
        shifted = emissions.copy()  # shape: (B, W, L)
        shifted[..., o] += state["shift"]
        return shifted

    tagger = SentenceTagger(windower, emit, Decoder(model.config.labels, model.decoder_params() or None))
    words = [s.tokens for s in valid_s]
    entries, results = [], {}
    for i, shift in enumerate(sorted(grid, key=abs)):  # 0 (or the smallest) first: it fills the cache
        state.update(shift=float(shift), replay=-1 if i == 0 else 0)
        result = score_predictions(valid_s, [t.labels for t in tagger.tag(words)], train_s)
        entry = {"shift": float(shift), **_valid_entry(result)}
        entries.append(entry)
        results[float(shift)] = result
        log(f"O {shift:+.2f}: valid F1 {entry['valid_f1']*100:.2f}  P {entry['valid_precision']*100:.2f}  "
            f"R {entry['valid_recall']*100:.2f}  unseen {entry['valid_unseen_f1']*100:.2f}  "
            f"new-name recall {entry['valid_new_name_recall']*100:.2f}")
    entries.sort(key=lambda e: e["shift"])
    return entries, results
