"""Scores with seqeval: micro precision/recall/F1, per entity type, on a split and its unseen part."""

from __future__ import annotations

from typing import Any, Sequence


def score(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], unseen: Sequence[bool] | None = None) -> dict[str, Any]:
    """seqeval scores (default, CoNLL-style mode) of predicted BIO tags against gold.

    Returns ``{"precision", "recall", "f1", "accuracy", "sentences", "per_type":
    {type: {"precision", "recall", "f1", "support"}}, "unseen": {...}}`` (``unseen`` only
    when a mask is given: the same micro scores on the sentences it marks).
    """
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    gold = [list(g) for g in gold]
    pred = [list(p) for p in pred]
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: expected {len(g)} predicted tags, got {len(p)}")
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    result: dict[str, Any] = {
        "sentences": len(gold),
        "precision": float(precision_score(gold, pred, zero_division=0)),
        "recall": float(recall_score(gold, pred, zero_division=0)),
        "f1": float(f1_score(gold, pred, zero_division=0)),
        "accuracy": float(accuracy_score(gold, pred)),
        "per_type": {
            k: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]), "support": int(v["support"])}
            for k, v in sorted(report.items())
            if not k.endswith(" avg")
        },
    }
    if unseen is not None:
        g2 = [g for g, u in zip(gold, unseen) if u]
        p2 = [p for p, u in zip(pred, unseen) if u]
        result["unseen"] = {
            "sentences": len(g2),
            "precision": float(precision_score(g2, p2, zero_division=0)) if g2 else 0.0,
            "recall": float(recall_score(g2, p2, zero_division=0)) if g2 else 0.0,
            "f1": float(f1_score(g2, p2, zero_division=0)) if g2 else 0.0,
        }
    return result


def format_report(result: dict[str, Any], title: str = "") -> str:
    lines = []
    if title:
        lines.append(title)
    lines.append(f"{'':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for name, r in result["per_type"].items():
        lines.append(f"{name:<14}{r['precision']*100:>10.2f}{r['recall']*100:>10.2f}{r['f1']*100:>10.2f}{r['support']:>10}")
    lines.append(
        f"{'micro (all)':<14}{result['precision']*100:>10.2f}{result['recall']*100:>10.2f}{result['f1']*100:>10.2f}"
        f"{result['sentences']:>10}  sentences"
    )
    if "unseen" in result:
        u = result["unseen"]
        lines.append(
            f"{'micro unseen':<14}{u['precision']*100:>10.2f}{u['recall']*100:>10.2f}{u['f1']*100:>10.2f}"
            f"{u['sentences']:>10}  sentences not in train"
        )
    lines.append(f"token accuracy {result['accuracy']*100:.2f}")
    return "\n".join(lines)
