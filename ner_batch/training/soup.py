"""Model soups: one tagger whose weights are the mean of several fine-tuned runs' weights.

Runs fine-tuned from the same starting weights tend to end in one basin of the loss, where
the mean of their weights scores like an ensemble of them while costing one model at
tagging time (Wortsman et al., 2022, "Model soups"; Neyshabur et al., 2020, on fine-tuned
models sharing a basin). The runs must therefore share the initial weights: the same
backbone and the same ``--seed``, differing in ``--data-seed`` (batch order, windows,
rewrites, dropout) or in other training settings. Runs initialised apart are refused.

Three recipes:

* **uniform**: the mean of all runs given;
* **greedy**: runs sorted by their own selection score (``--select``, on valid), best
  first; each is added only if the soup's score on valid does not drop;
* **greedy-calibrated**: the same order, but every trial (the best run alone first) is scored
  after its best "O" shift on valid (``ner-batch calibrate``'s grid), and the result is saved
  with that shift folded in. Averaging costs a soup whole valid F1 that calibration gives back,
  so a greedy soup scored before calibration rarely grows past its first run.

Only valid is used to choose; test is scored once, on the final soup, and reported. The soup's
``spread`` (per part of the model, how far its runs lie from their mean weights) is logged and kept
in its metrics: it shows where runs ended apart, which is where averaging loses what they learnt.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ..data.dnrti import load_split
from ..models import WordTagger
from ..models.backbone import ENCODER_DROPOUT_FIELDS
from ..models.config import CONFIG_FILE, TaggerConfig
from ..models.tagger import load_model
from .calibrate import DEFAULT_GRID, LABEL, choose_shift, sweep_shifts
from .runs import SELECT_SCORES, SOUP_RECIPES as RECIPES, RunError, read_metrics

# tagger.json fields that may differ between ingredients: everything else must match. Dropout rates
# (the head's, and the encoder's, --encoder-dropout) act only while training; the HF config's
# bookkeeping says where and with which transformers a run was made, not what it computes.
_FREE_FIELDS = ("dropout",)
_FREE_ENCODER_FIELDS = ENCODER_DROPOUT_FIELDS + ("_name_or_path", "transformers_version")


def _tagger_fields(best: Path) -> dict[str, Any]:
    """The model definition saved in ``best/tagger.json``, read the way load_model reads it (so a
    tagger.json written before a field's rename compares equal), less the fields runs may differ in."""
    try:
        config = TaggerConfig.load(best)
    except FileNotFoundError:
        raise RunError(f"expected a trained model in {best}, found no {CONFIG_FILE} (is the run finished?)") from None
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in _FREE_FIELDS}
    fields["encoder_config"] = {k: v for k, v in fields["encoder_config"].items() if k not in _FREE_ENCODER_FIELDS}
    return fields


#: The settings that fix a run's initial weights (metrics.json key, its flag, its value in runs that predate it).
_INITIAL_WEIGHT_SETTINGS = (("seed", "--seed", None), ("reinit_top", "--reinit-top", 0))


def check_ingredients(runs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Each run's metrics, after checking that the runs can be averaged: at least two,
    finished, the same model definition (head, labels, backbone, sizes, markers) and the
    same initial weights (``--seed``, ``--reinit-top``). Raises RunError naming the first difference."""
    if len(runs) < 2:
        raise RunError(f"expected at least 2 runs to average, got {len(runs)}")
    if len({str(Path(r).resolve()) for r in runs}) != len(runs):
        raise RunError("expected distinct runs, got one run twice")
    metrics = [read_metrics(r) for r in runs]
    first, first_fields = Path(runs[0]), _tagger_fields(Path(runs[0]) / "best")
    for run, m in zip(runs[1:], metrics[1:]):
        fields = _tagger_fields(Path(run) / "best")
        for key in sorted(set(first_fields) | set(fields)):
            if first_fields.get(key) != fields.get(key):
                what = "its encoder config" if key == "encoder_config" else f"{first_fields.get(key)!r} vs {fields.get(key)!r}"
                raise RunError(f"expected runs of one model definition, but {run} differs from {first} in {key} ({what})")
        for key, flag, default in _INITIAL_WEIGHT_SETTINGS:
            want, got = metrics[0]["settings"].get(key, default), m["settings"].get(key, default)
            if got != want:
                raise RunError(
                    f"expected runs from the same initial weights (one {flag}, other --data-seed), got {flag} {want} "
                    f"in {first} and {got} in {run}: runs initialised apart do not average into a working model")
    return metrics


def average_states(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating-point tensors; other tensors (integer buffers such
    as position ids) must be equal and are kept. Raises ValueError on any mismatch."""
    keys = list(states[0])
    for i, s in enumerate(states[1:], 2):
        if set(s) != set(keys):
            diff = sorted(set(s) ^ set(keys))
            raise ValueError(f"expected the same parameters in every model, model {i} differs in {diff[:3]}")
    out: dict[str, torch.Tensor] = {}
    for k in keys:
        values = [s[k] for s in states]
        if any(v.shape != values[0].shape for v in values):
            raise ValueError(f"expected {k} of one shape in every model, got {[tuple(v.shape) for v in values]}")
        if values[0].is_floating_point():
            out[k] = torch.stack([v.float() for v in values]).mean(0).to(values[0].dtype)  # shape: as each value
        else:
            if any(not torch.equal(v, values[0]) for v in values[1:]):
                raise ValueError(f"expected the non-float tensor {k} to be equal in every model, it differs")
            out[k] = values[0].clone()
    return out


_LAYER = re.compile(r"\.layer\.(\d+)\.")  # BERT's encoder.layer.N, DistilBERT's transformer.layer.N


def model_part(key: str) -> str:
    """The part of a WordTagger a state-dict key belongs to: "embeddings", "layer N" (the
    encoder's Nth transformer layer), "encoder" (the rest of the backbone) or "head"."""
    if not key.startswith("encoder."):
        return "head"
    layer = _LAYER.search(key)
    if layer:
        return f"layer {layer.group(1)}"
    return "embeddings" if ".embeddings." in key else "encoder"


def spread(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, float]:
    """How far the runs' weights lie from their mean, per model part (``model_part``), relative to
    their size: sqrt(sum_i ||w_i - mean||^2 / sum_i ||w_i||^2) over the part's floating-point tensors.

    0 for identical runs; two runs at relative distance d from each other (||a - b|| / rms of
    ||a||, ||b||) have a spread of d / 2. Runs that share a basin sit close together; a part whose
    spread stands out (a layer drawn afresh, a head trained from scratch) is where a soup averages
    runs that did not end alike. Returned in the order the parts first appear in the state."""
    apart: dict[str, float] = {}
    size: dict[str, float] = {}
    for key, first in states[0].items():
        if not first.is_floating_point():
            continue
        values = torch.stack([s[key].double() for s in states])  # shape: (runs, *first.shape)
        part = model_part(key)
        apart[part] = apart.get(part, 0.0) + float(((values - values.mean(0)) ** 2).sum())
        size[part] = size.get(part, 0.0) + float((values ** 2).sum())
    return {part: math.sqrt(apart[part] / size[part]) if size[part] else 0.0 for part in apart}


def format_spread(parts: Mapping[str, float]) -> str:
    return "spread of the runs around their mean weights (relative, per part): " + ", ".join(
        f"{part} {value:.3f}" for part, value in parts.items())


def load_runs(runs: Sequence[str | Path]) -> tuple[WordTagger, Any, list[dict[str, torch.Tensor]]]:
    """The first run's model (to load other weights into), its tokenizer, and a copy of every
    run's weights, in the order of ``runs``."""
    states: list[dict[str, torch.Tensor]] = []
    first = tokenizer = None
    for run in runs:
        model, tok = load_model(Path(run) / "best")
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        if first is None:
            first, tokenizer = model, tok
    return first, tokenizer, states


def make_soup(
    runs: Sequence[str | Path],
    out_dir: str | Path,
    data: str | Path | None = None,
    *,
    recipe: str = "greedy",
    select: str = "valid",
    grid: Sequence[float] = DEFAULT_GRID,
    splits: dict[str, list] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Average ``runs`` into ``out_dir/best`` and write ``out_dir/metrics.json`` (valid and
    test scores, which runs went in). ``grid``: the "O" shifts a greedy-calibrated trial tries.
    ``splits`` overrides the DNRTI files (tests)."""
    from .trainer import _valid_entry, evaluate_model, save_and_score, write_metrics

    if recipe not in RECIPES:
        raise ValueError(f"expected a recipe among {RECIPES}, got {recipe!r}")
    if select not in SELECT_SCORES:
        raise ValueError(f"expected --select to be one of {', '.join(SELECT_SCORES)}, got {select!r}")
    key = SELECT_SCORES[select]
    started = time.time()
    metrics = check_ingredients(runs)
    if splits is None:
        splits = {name: load_split(data, name)[0] for name in ("train", "valid", "test")}
    train_s, valid_s = splits["train"], splits["valid"]

    soup, tokenizer, states = load_runs(runs)  # soup holds the averaged weights as they are tried
    windower = soup.config.windower(tokenizer)

    def load(members: Sequence[int]) -> None:
        soup.load_state_dict(average_states([states[i] for i in members]))

    def scored(members: Sequence[int]) -> dict[str, Any]:
        load(members)
        return evaluate_model(soup, windower, valid_s, train_s)

    calibrate_trials = recipe == "greedy-calibrated"

    def tried(members: Sequence[int]) -> tuple[float, dict[str, Any]]:
        """A greedy trial's O shift and valid result: its best shift on valid (ties to the smallest
        |shift|) if the recipe calibrates trials, else 0 and the soup as it is."""
        if not calibrate_trials:
            return 0.0, scored(members)
        load(members)
        entries, results = sweep_shifts(soup, windower, valid_s, train_s, grid, log=lambda _: None)
        shift = choose_shift(entries, key)["shift"]
        return shift, results[shift]

    ingredients = []
    for i, run in enumerate(runs):  # each run alone, scored here with the same code as the soup
        alone = scored([i])
        ingredients.append({"run": str(run), "data_seed": metrics[i]["settings"].get("data_seed"),
                            "best_epoch": metrics[i].get("best_epoch"), **_valid_entry(alone)})
        log(f"{run}: valid F1 {alone['f1']*100:.2f}  valid unseen F1 {alone['unseen']['f1']*100:.2f}  "
            f"new-name recall {alone['new_names']['new']['recall']*100:.2f}")
    order = sorted(range(len(runs)), key=lambda i: -ingredients[i][key])  # best first, first of equals
    shift = 0.0
    if recipe == "uniform":
        members = list(order)
        valid = scored(members)
    else:  # greedy: runs best first, each kept only if the trial's score does not drop
        members = [order[0]]
        if calibrate_trials:
            shift, valid = tried(members)
            best = _valid_entry(valid)[key]
            log(f"{runs[order[0]]} alone, O {shift:+.2f}: {select} {best*100:.2f}")
        else:  # the first run's own score, measured above
            valid, best = None, ingredients[order[0]][key]
        for i in order[1:]:
            trial_shift, trial = tried(members + [i])
            score = _valid_entry(trial)[key]
            kept = score >= best
            at = f", O {trial_shift:+.2f}" if calibrate_trials else ""
            log(f"+ {runs[i]}{at}: {select} {score*100:.2f} against {best*100:.2f}: {'added' if kept else 'left out'}")
            if kept:
                members, best, shift, valid = members + [i], score, trial_shift, trial
        if valid is None:
            valid = scored(members)
    for i, ing in enumerate(ingredients):
        ing["in_soup"] = i in members
    parts = spread([states[i] for i in members])
    log(format_spread(parts))
    load(members)
    if shift:
        soup.shift_label(LABEL, shift)
    note = f", O {shift:+.2f}" if calibrate_trials else ""
    final = save_and_score(soup, tokenizer, windower, Path(out_dir), valid, splits,
                           f"soup of {len(members)} of {len(runs)} runs ({recipe}, on {select}{note})", log)
    settings = dict(metrics[members[0]]["settings"])
    settings["soup"] = {"recipe": recipe, "select": select, "runs": [str(runs[i]) for i in members]}
    if calibrate_trials:  # read by `ner-batch runs` like a calibrated run's
        settings["calibrate"] = {"label": LABEL, "shift": shift, "select": select,
                                 "grid": sorted(float(g) for g in grid), "run": None}
    result = {
        "settings": settings,
        "epochs": [],
        "best_epoch": None,
        "ingredients": ingredients,
        "spread": {part: round(value, 5) for part, value in parts.items()},
        # every run's training was spent on this model, the ones left out too
        "wall_seconds": round(time.time() - started + sum(m.get("wall_seconds", 0.0) for m in metrics), 1),
        **final,
    }
    return write_metrics(Path(out_dir), result)
