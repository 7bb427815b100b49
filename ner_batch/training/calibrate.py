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

``per_type`` goes one step further: with the O shift fixed, one shift per entity type (its B-
and I- emissions), each chosen on valid with the others fixed, which moves the balance between
types (Tool against HackOrg) too. Thirteen more numbers chosen on the same 662 sentences can
fit their noise, so the procedure is also scored cross-fitted (:func:`cross_fit`: chosen on
some of the valid sentences, scored on the others) beside O-only calibration.
Torch is imported inside the functions only, so the CLI reads the grids without it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..data.dnrti import unseen_mask
from ..evaluation import mention_texts
from .runs import SELECT_SCORES, RunError, read_metrics

#: Shifts tried by default: -1 to 3 in steps of 0.25 (0 keeps the model as trained).
DEFAULT_GRID = tuple(i / 4 for i in range(-4, 13))
#: Per-type shifts tried with ``per_type``: -1 to 1 in steps of 0.25, added to a type's B- and I- emissions.
TYPE_GRID = tuple(i / 4 for i in range(-4, 5))
#: Passes of the per-type search over the types (fewer if a pass changes nothing).
TYPE_PASSES = 2
#: Folds of the cross-fitted check, by default when ``per_type`` is on.
DEFAULT_FOLDS = 2
#: Largest |shift| accepted: emissions are O(10); a larger shift tags nothing or everything.
MAX_SHIFT = 20.0
LABEL = "O"


def parse_grid(text: str, option: str = "--grid") -> tuple[float, ...]:
    """Shifts from ``"-1,-0.5,0,0.5"``; raises ValueError with one line on anything else."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ValueError(f"expected comma-separated numbers for {option}, e.g. '-1,0,0.5,1', got {text!r}")
    values = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise ValueError(f"expected numbers in {option}, got {p!r} in {text!r}") from None
        if not math.isfinite(v) or abs(v) > MAX_SHIFT:
            raise ValueError(f"expected shifts between -{MAX_SHIFT:g} and {MAX_SHIFT:g} in {option}, got {p}")
        values.append(v)
    return tuple(sorted(set(values)))


def check_folds(folds: int) -> int:
    """``folds`` for --cross-fit (0: none, else at least 2); raises ValueError with one line on anything else."""
    if int(folds) == 1 or int(folds) < 0:
        raise ValueError(f"expected 0 (none) or at least 2 folds, got {folds}")
    return int(folds)


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
    per_type: bool = False,
    type_grid: Sequence[float] = TYPE_GRID,
    folds: int | None = None,
    splits: dict[str, list] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Choose the "O" shift of the finished run ``run`` on valid, write the shifted model to
    ``out_dir/best`` and ``out_dir/metrics.json`` (every shift's valid scores, the chosen
    one's valid and test scores). ``splits`` overrides the DNRTI files (tests).

    ``per_type``: then, with the O shift fixed, one shift per entity type (added to its B- and
    I- emissions) from ``type_grid``, each chosen on valid with the others fixed, in
    ``TYPE_PASSES`` passes over the types (:func:`fit_offset`). ``folds`` (default
    ``DEFAULT_FOLDS`` with ``per_type``, else 0) adds the procedure's cross-fitted valid scores
    beside O-only calibration's (:func:`cross_fit`): what the chosen numbers are worth on
    sentences they were not chosen on.

    Given several runs, the shifts are chosen for their output ensemble (added to its
    averaged emissions), and ``out_dir/best`` is the ensemble with every member shifted alike
    (models/ensemble.py): a model directory that ``export`` and ``evaluate`` take like a run's."""
    from ..data.dnrti import load_split
    from .ensemble import load_runs
    from .trainer import save_and_score, write_metrics

    if select not in SELECT_SCORES:
        raise ValueError(f"expected --select to be one of {', '.join(SELECT_SCORES)}, got {select!r}")
    if not grid:
        raise ValueError("expected at least one shift in --grid, got none")
    if per_type and not type_grid:
        raise ValueError("expected at least one shift in --type-grid, got none")
    folds = check_folds((DEFAULT_FOLDS if per_type else 0) if folds is None else folds)
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
    windower = model.config.windower(tokenizer)
    scorer = ShiftScorer.of_model(model, windower, splits["valid"], splits["train"])
    if folds and len(scorer.sentences) < folds:
        raise RunError(f"expected at least {folds} valid sentences for --cross-fit {folds}, got {len(scorer.sentences)}: "
                       f"give fewer folds")
    key = SELECT_SCORES[select]
    fit = fit_offset(scorer, grid=grid, key=key, type_grid=type_grid if per_type else (), log=log)
    model.shift_label(LABEL, fit["shift"])
    for t, shift in fit["types"].items():
        for label in type_labels(scorer.labels, t):
            model.shift_label(label, shift)
    what = f"chosen O {fit['shift']:+.2f}" + (f" and {len(fit['types'])} type shifts" if per_type else "")
    final = save_and_score(model, tokenizer, windower, out, fit["result"], splits, f"{what} (on {select})", log)
    settings = dict(metrics["settings"])
    earlier = settings.get("calibrate") or {}
    types = dict(earlier.get("types") or {})
    for t, shift in fit["types"].items():
        types[t] = types.get(t, 0.0) + shift
    settings["calibrate"] = {"label": LABEL, "shift": earlier.get("shift", 0.0) + fit["shift"], "select": select,
                             "grid": sorted(float(g) for g in grid), "run": str(run)}
    if per_type or types:  # type shifts of an earlier per-type calibration stay in the bias: recorded as that call chose them
        how = (dict(type_grid=sorted(float(g) for g in type_grid), type_passes=fit["passes"]) if per_type
               else {k: earlier[k] for k in ("type_grid", "type_passes") if k in earlier})
        settings["calibrate"].update(types={t: s for t, s in types.items() if s}, **how)
    if folds:
        both = {"o_only": dict(grid=grid, key=key, type_grid=())}
        if per_type:
            both["per_type"] = dict(grid=grid, key=key, type_grid=type_grid)
        crossed = {name: _valid_entry_of(cross_fit(scorer, folds, lambda idx, kw=kw: fit_offset(scorer, idx=idx, **kw)))
                   for name, kw in both.items()}
        settings["calibrate"]["cross_fit"] = {"folds": folds, **crossed}
        for name, entry in crossed.items():
            log(f"cross-fitted ({folds} folds), {name.replace('_', ' ')}: valid F1 {entry['valid_f1']*100:.2f}  "
                f"unseen {entry['valid_unseen_f1']*100:.2f}")
    if len(runs) > 1:  # the shift of the ensemble's output; each member's own earlier shift is kept beside it
        settings["calibrate"].update(run=None, shift=fit["shift"])
        settings["ensemble"] = {"runs": [str(r) for r in runs],
                                "earlier_shifts": [(m["settings"].get("calibrate") or {}).get("shift", 0.0) for m in each]}
    result = {
        "settings": settings,
        "epochs": [],
        "best_epoch": metrics.get("best_epoch"),
        "calibration": fit["entries"],
        "wall_seconds": round(time.time() - started + sum(m.get("wall_seconds", 0.0) for m in each), 1),
        **final,
    }
    if per_type:
        result["type_calibration"] = fit["trace"]
    if "ingredients" in metrics:
        result["ingredients"] = metrics["ingredients"]
    return write_metrics(out, result)


def type_labels(labels: Sequence[str], entity_type: str) -> list[str]:
    """The B- and I- labels of ``entity_type`` that ``labels`` has."""
    return [f"{p}-{entity_type}" for p in "BI" if f"{p}-{entity_type}" in labels]


class ShiftScorer:
    """A model's valid emissions, computed once, decoded and scored with any offset added.

    ``emissions``: per sentence ``(n_words, L)``, stitched as the tagging path stitches them;
    an offset ``(L,)`` is added to every word's emissions before the decode, exactly as a
    shift folded into the output layer's bias would be (that is what :func:`calibrate_run`
    saves). Torch-free; :meth:`of_model` computes the emissions of a PyTorch model."""

    def __init__(self, emissions: Sequence[np.ndarray], sentences: Sequence, train: Sequence, decoder) -> None:
        if len(emissions) != len(sentences):
            raise ValueError(f"expected one emission matrix per sentence, got {len(emissions)} for {len(sentences)}")
        self.emissions = [np.asarray(e, dtype=np.float32) for e in emissions]  # per sentence, shape: (n, L)
        self.sentences, self.train, self.decoder = list(sentences), list(train), decoder
        self.labels = list(decoder.labels)
        # what every score needs of train, computed once: the unseen mask and train's mention texts
        self.unseen = unseen_mask(self.sentences, self.train)
        self.known = mention_texts([s.labels for s in self.train], [s.tokens for s in self.train])
        # scores by (offset, sentences): a cross-fit runs the same O sweep on each fold for O-only and per-type fits
        self._scores: dict[tuple[bytes, tuple[int, ...] | None], dict[str, Any]] = {}

    @classmethod
    def of_model(cls, model, windower, sentences: Sequence, train: Sequence) -> "ShiftScorer":
        import torch

        from .trainer import sentence_tagger

        tagger = sentence_tagger(model, windower)
        with torch.no_grad():
            emissions = tagger.emissions(tagger.plan([s.tokens for s in sentences]))
        return cls(emissions, sentences, train, tagger.decoder)

    def predict(self, offset: np.ndarray, idx: Sequence[int] | None = None) -> list[list[str]]:
        """Labels of the sentences ``idx`` (default: all) decoded with ``offset`` (L,) added."""
        offset = np.asarray(offset, dtype=np.float32)  # shape: (L,)
        idx = range(len(self.emissions)) if idx is None else idx
        decoded = self.decoder([self.emissions[i] + offset for i in idx])
        return [[self.labels[t] for t in tags.tolist()] for tags, _ in decoded]

    def score(self, offset: np.ndarray, idx: Sequence[int] | None = None) -> dict[str, Any]:
        """Scores (whole, unseen, seen, new names) of the sentences ``idx`` decoded with ``offset``.

        Computed once per offset and sentence set; later calls return the same (read-only) dict."""
        from .trainer import score_predictions

        key = (np.asarray(offset, dtype=np.float32).tobytes(), None if idx is None else tuple(idx))
        if key not in self._scores:
            idx = range(len(self.sentences)) if idx is None else idx
            self._scores[key] = score_predictions([self.sentences[i] for i in idx], self.predict(offset, idx),
                                                  self.train, unseen=[self.unseen[i] for i in idx], known=self.known)
        return self._scores[key]


def _valid_entry_of(result: dict[str, Any]) -> dict[str, float]:
    from .trainer import _valid_entry

    return _valid_entry(result)


def fit_offset(scorer: ShiftScorer, idx: Sequence[int] | None = None, *, grid: Sequence[float] = DEFAULT_GRID,
               key: str = "valid_f1", type_grid: Sequence[float] = (), passes: int = TYPE_PASSES,
               log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The offset calibration chooses on the sentences ``idx`` (default: all).

    First the "O" shift: each of ``grid`` scored, the best ``key`` kept (ties: the smallest
    |shift|). Then, if ``type_grid`` is given, with it fixed: for each entity type in label
    order, the shift of its B- and I- emissions from ``type_grid`` that scores best with the
    other types' shifts fixed (ties: the smallest |shift|), in up to ``passes`` passes, fewer
    if a pass changes nothing.

    Returns ``offset`` (L,), ``shift`` (O), ``types`` (type -> shift, non-zero ones), ``entries``
    (the O sweep's valid scores, by shift), ``result`` (the scores of the offset chosen),
    ``trace`` (each type trial's chosen shift and score) and ``passes`` (passes run)."""
    from ..labels import entity_types

    labels = scorer.labels
    o = labels.index(LABEL)
    entries, results = sweep_o(scorer, grid, idx, log)
    chosen = choose_shift(entries, key)["shift"]
    offset = np.zeros(len(labels), dtype=np.float32)  # shape: (L,)
    offset[o] = chosen
    result, types, trace, done = results[chosen], {}, [], 0
    while type_grid and done < passes:
        done += 1
        changed = False
        for t in entity_types(labels):
            rows = [labels.index(label) for label in type_labels(labels, t)]
            now = types.get(t, 0.0)
            trials, scored = [], {now: result}
            for shift in sorted(type_grid, key=abs):
                if shift not in scored:
                    trial = offset.copy()
                    trial[rows] += shift - now
                    scored[shift] = scorer.score(trial, idx)
                trials.append({"shift": float(shift), **_valid_entry_of(scored[shift])})
            best = choose_shift(trials, key)
            if best["shift"] != now:
                offset[rows] += best["shift"] - now
                types[t], result, changed = best["shift"], scored[best["shift"]], True
            trace.append({"pass": done, "type": t, **best})
            log(f"pass {done}, {t} {best['shift']:+.2f}: valid F1 {best['valid_f1']*100:.2f}  "
                f"unseen {best['valid_unseen_f1']*100:.2f}")
        if not changed:
            break
    return {"offset": offset, "shift": chosen, "types": {t: s for t, s in types.items() if s}, "entries": entries,
            "result": result, "trace": trace, "passes": done}


def cross_fit(scorer: ShiftScorer, folds: int, fit: Callable[[list[int]], dict[str, Any]]) -> dict[str, Any]:
    """Cross-fitted valid scores of a calibration procedure: the sentences split into ``folds``
    parts by index (sentence i in part i % folds), ``fit(idx)`` (returning an ``offset``) run on
    all parts but one and applied to that one, each part's labels from the fit it was left out
    of, and all of them scored together, so that no sentence is scored with numbers chosen on it."""
    n = len(scorer.sentences)
    predicted: list[list[str] | None] = [None] * n
    for k in range(folds):
        held = [i for i in range(n) if i % folds == k]
        offset = fit([i for i in range(n) if i % folds != k])["offset"]
        for i, labels in zip(held, scorer.predict(offset, held)):
            predicted[i] = labels
    from .trainer import score_predictions

    return score_predictions(scorer.sentences, predicted, scorer.train, unseen=scorer.unseen, known=scorer.known)


def sweep_o(scorer: ShiftScorer, grid: Sequence[float], idx: Sequence[int] | None = None,
            log: Callable[[str], None] = lambda _: None) -> tuple[list[dict[str, Any]], dict[float, dict[str, Any]]]:
    """Each "O" shift of ``grid`` scored on the sentences ``idx`` (default: all): the entries (by
    shift: the shift and its valid scores) and each shift's full result."""
    o = scorer.labels.index(LABEL)
    entries, results = [], {}
    for shift in sorted(grid, key=abs):
        offset = np.zeros(len(scorer.labels), dtype=np.float32)  # shape: (L,)
        offset[o] = shift
        results[float(shift)] = scorer.score(offset, idx)
        e = {"shift": float(shift), **_valid_entry_of(results[float(shift)])}
        entries.append(e)
        log(f"O {shift:+.2f}: valid F1 {e['valid_f1']*100:.2f}  P {e['valid_precision']*100:.2f}  "
            f"R {e['valid_recall']*100:.2f}  unseen {e['valid_unseen_f1']*100:.2f}  "
            f"new-name recall {e['valid_new_name_recall']*100:.2f}")
    entries.sort(key=lambda e: e["shift"])
    return entries, results


def sweep_shifts(model, windower, valid_s, train_s, grid: Sequence[float],
                 log: Callable[[str], None] = print) -> tuple[list[dict[str, Any]], dict[float, dict[str, Any]]]:
    """Score ``model`` on valid with each "O" shift of ``grid`` added to its emissions; the model is
    not changed. Returns :func:`sweep_o`'s entries and results. The valid emissions are computed once."""
    return sweep_o(ShiftScorer.of_model(model, windower, valid_s, train_s), grid, log=log)
