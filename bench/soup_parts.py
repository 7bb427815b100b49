"""Where does a soup lose? The runs' weights averaged in one part of the model only.

A uniform soup (``ner-batch soup``) averages every weight of its runs and scores 1.5-3.5 whole
valid points below the runs' mean before calibration (docs/training/experiments.md, "Soups and
calibration"). This measures which part costs it: for each run named by ``--own`` (default: the
first two), the model with the encoder averaged and that run's own head, and the model with the
head averaged and that run's own encoder, beside the run alone and the whole soup. Each row is
scored on valid as it is and after its best "O" shift (``ner-batch calibrate``'s default grid,
chosen on whole valid), with the soup's ``spread`` per part beside them.

Valid only (test is not read): it explains a soup, it chooses nothing. No timing, so it may run
beside other work. Writes ``bench/results/soup-parts-NAME.json`` and ``.md``.

    python bench/soup_parts.py runs/crf-ri1-d13 runs/crf-ri1-d14 ... --name crf-ri1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine  # noqa: E402

from ner_batch.data.dnrti import load_split  # noqa: E402
from ner_batch.training.calibrate import DEFAULT_GRID, choose_shift, sweep_shifts  # noqa: E402
from ner_batch.training.runs import SELECT_SCORES  # noqa: E402
from ner_batch.training.soup import average_states, check_ingredients, format_spread, load_runs, model_part, spread  # noqa: E402


def log(msg: str) -> None:
    print(f"[soup-parts {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def mixed_state(average: Mapping[str, Any], own: Mapping[str, Any], averaged: str) -> dict[str, Any]:
    """``average``'s weights in the part ``averaged`` ("encoder": every part but the head;
    "head"), ``own``'s everywhere else."""
    if averaged not in ("encoder", "head"):
        raise ValueError(f"expected the averaged part to be 'encoder' or 'head', got {averaged!r}")
    in_head = {k: model_part(k) == "head" for k in average}
    return {k: average[k] if in_head[k] == (averaged == "head") else own[k] for k in average}


def measure(runs: Sequence[str | Path], splits: Mapping[str, list], own: Sequence[int] = (0, 1),
            grid: Sequence[float] = DEFAULT_GRID, progress: Callable[[str], None] = log) -> dict[str, Any]:
    """Valid scores of the whole soup of ``runs``, and for each index in ``own`` of the run alone and
    of the two part-averaged models; each as it is and after its best O shift on valid (``grid``
    must hold 0, the model as it is)."""
    if 0.0 not in grid:
        raise ValueError(f"expected the O-shift grid to hold 0 (the model as it is), got {list(grid)}")
    check_ingredients(runs)
    for i in own:
        if not 0 <= i < len(runs):
            raise ValueError(f"expected --own between 0 and {len(runs) - 1} (an index into the runs), got {i}")
    model, tokenizer, states = load_runs(runs)
    average = average_states(states)
    windower = model.config.windower(tokenizer)
    key = SELECT_SCORES["valid"]

    def row(name: str, state: Mapping[str, Any]) -> dict[str, Any]:
        model.load_state_dict(state)
        entries, results = sweep_shifts(model, windower, splits["valid"], splits["train"], grid, log=lambda _: None)
        plain, best = results[0.0], choose_shift(entries, key)
        chosen = results[best["shift"]]
        out = {"model": name, "shift": best["shift"],
               "valid_f1": round(100 * plain["f1"], 2),
               "valid_unseen_f1": round(100 * plain["unseen"]["f1"], 2),
               "calibrated_valid_f1": round(100 * chosen["f1"], 2),
               "calibrated_valid_unseen_f1": round(100 * chosen["unseen"]["f1"], 2)}
        progress(f"{name}: valid {out['valid_f1']} / {out['valid_unseen_f1']}; O {best['shift']:+.2f}: "
                 f"{out['calibrated_valid_f1']} / {out['calibrated_valid_unseen_f1']}")
        return out

    rows = [row(f"soup of {len(runs)} (every part averaged)", average)]
    for i in own:
        rows.append(row(f"{runs[i]} alone", states[i]))
        rows.append(row(f"encoder averaged, head of {runs[i]}", mixed_state(average, states[i], "encoder")))
        rows.append(row(f"head averaged, encoder of {runs[i]}", mixed_state(average, states[i], "head")))
    return {"runs": [str(r) for r in runs], "spread": {p: round(v, 5) for p, v in spread(states).items()}, "rows": rows}


def table(result: Mapping[str, Any]) -> str:
    lines = ["| model | valid F1 | valid unseen | O shift | calibrated valid F1 | calibrated valid unseen |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['valid_f1']:.2f} | {r['valid_unseen_f1']:.2f} | {r['shift']:+.2f} | "
                     f"{r['calibrated_valid_f1']:.2f} | {r['calibrated_valid_unseen_f1']:.2f} |")
    return "\n".join(lines) + f"\n\n{format_spread(result['spread']).capitalize()}.\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished runs of one --seed (as `ner-batch soup` takes them)")
    parser.add_argument("--data", default=None, help="DNRTI directory (default: $NER_BATCH_DATA or ../shared/data/dnrti)")
    parser.add_argument("--own", type=int, nargs="+", default=[0, 1], help="indices of the runs whose own parts are kept")
    parser.add_argument("--name", required=True, help="results go to bench/results/soup-parts-NAME.{json,md}")
    parser.add_argument("--out-dir", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    try:
        check_ingredients(args.runs)  # before reading the data: a wrong run list is the likelier mistake
        splits = {s: load_split(args.data, s)[0] for s in ("train", "valid")}
        result = measure(args.runs, splits, own=args.own)
    except (ValueError, OSError) as e:  # RunError is a ValueError: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    result["machine"] = machine()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"soup-parts-{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"soup-parts-{args.name}.md").write_text(f"# Soup parts: {args.name}\n\n{table(result)}")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
