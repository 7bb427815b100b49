"""Training runs side by side: one row per run directory, read from its ``metrics.json``.

What a row shows is what settings are chosen on (valid F1, valid-unseen F1, valid new-name
recall at the best epoch) beside what is only reported (test, test-unseen), the wall time,
and, for a run with ``--average``, the best epoch of the weights the optimizer stepped, so
that one averaged run answers "averaged or not" too. A run still going, or stopped before its end, shows its best so far,
marked unfinished (and "--resume goes on" when it has a checkpoint to go on from).
Reads JSON only: no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"  # a training run's state after its last finished epoch, while it trains (checkpoint.py)
# --select: the valid score that picks a run's best epoch (and that --patience waits for), by
# the key of an epoch entry in metrics.json. Here, torch-free, for the CLI and the trainer.
SELECT_SCORES = {"valid": "valid_f1", "valid-unseen": "valid_unseen_f1", "new-name-recall": "valid_new_name_recall"}
#: ``ner-batch soup`` recipes (training/soup.py); here so that the CLI lists them without importing torch.
SOUP_RECIPES = ("uniform", "greedy", "greedy-calibrated")


class RunError(ValueError):
    """A directory that is not a readable training run."""


def model_dir(path: str | Path, role: str = "") -> Path:
    """The trained model of a run directory (its ``best/``) or the model directory itself,
    checked to hold one; raises RunError otherwise (``role``, e.g. " for --teacher", says why it was wanted)."""
    from ..models.config import CONFIG_FILE, ENSEMBLE_FILE

    path = Path(path)
    best = path / "best" if (path / "best").is_dir() else path
    if not (best / CONFIG_FILE).is_file() and not (best / ENSEMBLE_FILE).is_file():
        raise RunError(f"expected a trained model in {best}{role}, found no {CONFIG_FILE} (is the run finished?)")
    return best


def read_metrics(run: str | Path) -> dict[str, Any]:
    """The metrics of a run directory, or a metrics file itself (docs/training/*-metrics.json)."""
    path = Path(run) if Path(run).is_file() else Path(run) / METRICS_FILE
    if not path.is_file():
        raise RunError(f"expected a training run with {path}, found {'a directory' if path.is_dir() else 'no such file'}")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: expected JSON, got unreadable content ({exc})") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("epochs"), list) or not isinstance(metrics.get("settings"), dict):
        raise RunError(f"{path}: expected 'settings' and 'epochs' (written by `ner-batch train`), found neither")
    return metrics


def _best(entries: Sequence[tuple[int, dict[str, Any]]], key: str) -> tuple[int, dict[str, Any]] | None:
    """The epoch with the highest ``key`` score, the first of equals (the trainer's rule)."""
    best = None
    for number, e in entries:
        if best is None or e[key] > best[1][key]:
            best = (number, e)
    return best


def run_row(run: str | Path) -> dict[str, Any]:
    """One run's row; scores in percent, rounded to 2 decimals; ``None`` where not measured."""
    m = read_metrics(run)
    s, epochs = m["settings"], m["epochs"]

    def pct(x: float | None) -> float | None:
        return None if x is None else round(100 * x, 2)

    finished = "valid" in m
    row: dict[str, Any] = {
        "run": str(run), "head": s.get("head"), "epochs": s.get("epochs"), "epochs_run": len(epochs),
        "finished": finished, "average": s.get("average") or 0.0,
        "resumable": not finished and Path(run).is_dir() and (Path(run) / CHECKPOINT_FILE).is_file(),
        "wall_minutes": round(m.get("wall_seconds", 0.0) / 60, 1),
        "stopped_after": m.get("stopped_after"),  # --stop-after: a trunk that branches may start from
        "branched_after": (m.get("branched_from") or {}).get("epoch"),  # a branch: the trunk's epochs (not its wall time)
    }
    row["best_epoch"] = m.get("best_epoch") or None  # the trainer's pick: highest --select score, first of equals
    e = next((x for x in epochs if x["epoch"] == row["best_epoch"]), {})
    soup, calibrated = s.get("soup"), s.get("calibrate")
    if soup:
        row["soup"] = len(soup.get("runs", []))
    if s.get("ensemble"):
        row["ensemble"] = len(s["ensemble"].get("runs", []))
    if calibrated:
        row["calibrate"] = calibrated.get("shift")
        if calibrated.get("types"):
            row["calibrate_types"] = len(calibrated["types"])
    if soup or calibrated:  # `ner-batch soup` / `calibrate`: no epochs of their own; the valid scores are the final model's
        valid = m.get("valid") or {}
        e = {"valid_f1": valid.get("f1"), "valid_unseen_f1": (valid.get("unseen") or {}).get("f1"),
             "valid_new_name_recall": ((valid.get("new_names") or {}).get("new") or {}).get("recall")}
    row.update(valid_f1=pct(e.get("valid_f1")), valid_unseen_f1=pct(e.get("valid_unseen_f1")),
               valid_new_name_recall=pct(e.get("valid_new_name_recall")))
    test = m.get("test") or {}
    row.update(test_f1=pct(test.get("f1")), test_unseen_f1=pct((test.get("unseen") or {}).get("f1")),
               test_new_name_recall=pct(((test.get("new_names") or {}).get("new") or {}).get("recall")))
    trained = _best([(e["epoch"], e["trained_weights"]) for e in epochs if "trained_weights" in e and not e.get("trunk")],
                    SELECT_SCORES[s.get("select", "valid")])
    if trained:
        row["trained_weights"] = {"best_epoch": trained[0], "valid_f1": pct(trained[1]["valid_f1"]),
                                  "valid_unseen_f1": pct(trained[1]["valid_unseen_f1"]),
                                  "valid_new_name_recall": pct(trained[1]["valid_new_name_recall"])}
    return row


def format_runs(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table, one line per run (two for an averaged run: averaged, then trained weights)."""

    def cell(x: Any) -> str:
        return "–" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)

    lines = ["| run | head | epochs (best) | valid F1 | valid unseen | valid new-name recall | test F1 | test unseen "
             "| test new-name recall | wall min |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("ensemble"):
            done = f"ensemble of {r['ensemble']} runs of {r['epochs']}"
        elif r.get("soup"):
            done = f"soup of {r['soup']} run{'s' if r['soup'] != 1 else ''} of {r['epochs']}"
        elif r["finished"]:
            done = f"{r['epochs']} ({cell(r['best_epoch'])})"
        else:
            done = f"{r['epochs_run']} of {r['epochs']} ({cell(r['best_epoch'])}), unfinished"
            if r.get("resumable"):
                done += f" (train --resume goes on{', --branch-from starts branches' if r.get('stopped_after') else ''})"
        if r.get("branched_after"):
            done += f", branched after {r['branched_after']}"
        if r.get("calibrate") is not None:
            done += f", O {r['calibrate']:+.2f}"
            if r.get("calibrate_types"):
                done += f" and {r['calibrate_types']} type shift{'s' if r['calibrate_types'] != 1 else ''}"
        name = r["run"] + (f", averaged {r['average']}" if r["average"] else "")
        lines.append(f"| {name} | {r['head']} | {done} | {cell(r['valid_f1'])} | {cell(r['valid_unseen_f1'])} | "
                     f"{cell(r['valid_new_name_recall'])} | {cell(r['test_f1'])} | {cell(r['test_unseen_f1'])} | "
                     f"{cell(r['test_new_name_recall'])} | {r['wall_minutes']:.0f} |")
        t = r.get("trained_weights")
        if t:
            lines.append(f"| {r['run']}, trained weights | {r['head']} | ({t['best_epoch']}) | {cell(t['valid_f1'])} | "
                         f"{cell(t['valid_unseen_f1'])} | {cell(t['valid_new_name_recall'])} | – | – | – | same run |")
    return "\n".join(lines)
