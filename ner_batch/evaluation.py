"""Scores with seqeval: micro precision/recall/F1, per entity type, on a split and its unseen part;
bootstrap intervals of F1 and of the difference between two taggers on the same sentences."""

from __future__ import annotations

from collections import Counter
from typing import Any, Container, Iterable, Sequence

import numpy as np

from .labels import bio_spans

MISSED = "(missed)"  # a gold span no predicted span overlaps
SPURIOUS = "(none)"  # the gold side of a predicted span that overlaps no gold span


def score(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], unseen: Sequence[bool] | None = None) -> dict[str, Any]:
    """seqeval scores (default, CoNLL-style mode) of predicted BIO tags against gold.

    Returns ``{"precision", "recall", "f1", "accuracy", "sentences", "per_type":
    {type: {"precision", "recall", "f1", "support"}}, "unseen": {...}, "seen": {...}}``
    (``unseen`` and ``seen`` only when a mask is given: the same micro scores on the
    sentences it marks, and on the others).
    """
    from seqeval.metrics import accuracy_score, classification_report
    from seqeval.metrics.sequence_labeling import precision_recall_fscore_support

    gold = [list(g) for g in gold]
    pred = [list(p) for p in pred]
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: expected {len(g)} predicted tags, got {len(p)}")
    # one extraction of the entities per part: seqeval's precision_score, recall_score and
    # f1_score would each extract them again (scoring was most of a calibration's time)
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    micro = report["micro avg"]
    result: dict[str, Any] = {
        "sentences": len(gold),
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "accuracy": float(accuracy_score(gold, pred)),
        "per_type": {
            k: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]), "support": int(v["support"])}
            for k, v in sorted(report.items())
            if not k.endswith(" avg")
        },
    }
    result["confusion"] = type_confusion(gold, pred)
    if unseen is not None:  # the part not in train, and the part in train verbatim (what memorising scores)
        for key, wanted in (("unseen", True), ("seen", False)):
            g2 = [g for g, u in zip(gold, unseen) if bool(u) == wanted]
            p2 = [p for p, u in zip(pred, unseen) if bool(u) == wanted]
            prf = precision_recall_fscore_support(g2, p2, average="micro", zero_division=0)[:3] if g2 else (0.0,) * 3
            result[key] = {"sentences": len(g2), **{k: float(v) for k, v in zip(("precision", "recall", "f1"), prf)}}
    return result


def span_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> np.ndarray:
    """Per sentence, the entity spans ``(correct, predicted, gold)``: what micro F1 adds up.

    A span is correct when its boundaries and type equal a gold span's (seqeval's default
    mode: an ``I-X`` that continues no ``X`` starts a span). Summed over sentences,
    ``2 * correct / (predicted + gold)`` is seqeval's micro F1.

    Returns an int64 array of shape ``(S, 3)``.
    """
    out = np.zeros((len(gold), 3), dtype=np.int64)  # shape: (S, 3)
    for i, (g, p) in enumerate(zip(gold, pred)):
        g_spans, p_spans = set(bio_spans(list(g))), set(bio_spans(list(p)))
        out[i] = (len(g_spans & p_spans), len(p_spans), len(g_spans))
    return out


def f1_of(counts: np.ndarray) -> np.ndarray:
    """Micro F1 from summed ``(correct, predicted, gold)`` counts ``(..., 3)``; 0 where nothing
    was predicted and nothing is gold (as seqeval with ``zero_division=0``). Shape ``(...)``."""
    counts = np.asarray(counts, dtype=np.float64)
    denominator = counts[..., 1] + counts[..., 2]  # shape: (...)
    return np.divide(2.0 * counts[..., 0], denominator, out=np.zeros_like(denominator), where=denominator > 0)


def resample_weights(strata: np.ndarray, rounds: int, seed: int = 0) -> np.ndarray:
    """How often each sentence is drawn in each of ``rounds`` bootstrap resamples.

    Sentences are drawn with replacement within their stratum (``strata``: ``(S,)`` labels,
    e.g. the unseen mask), each stratum keeping its size, so one resample serves both the
    whole split and its unseen part. Returns int64 weights ``(rounds, S)``; every row sums
    to ``S`` and, within a stratum, to the stratum's size.
    """
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    weights = np.zeros((rounds, len(strata)), dtype=np.int64)  # shape: (R, S)
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)  # shape: (S_k,)
        draws = rng.integers(0, len(members), size=(rounds, len(members)))  # shape: (R, S_k)
        rows = np.repeat(np.arange(rounds), len(members))  # shape: (R * S_k,)
        np.add.at(weights, (rows, members[draws.ravel()]), 1)
    return weights


def bootstrap(counts: np.ndarray, unseen: Sequence[bool] | None = None, against: np.ndarray | None = None, *,
              rounds: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Percentile intervals of micro F1 over sentence resamples (stratified by ``unseen``).

    Args:
        counts: ``(S, 3)`` per-sentence span counts of a tagger (``span_counts``).
        unseen: ``(S,)`` mask of the sentences not in train; adds the interval on that part.
        against: ``(S, 3)`` counts of a second tagger on the same sentences; adds the paired
            intervals of the difference ``F1(counts) - F1(against)``, each resample scoring
            both taggers on the same sentences (Koehn, 2004; Berg-Kirkpatrick et al., 2012).

    Returns ``{"rounds", "level", "seed", "all": part, "unseen": part}`` where ``part`` is
    ``{"f1", "interval": [lo, hi]}`` and, with ``against``, also ``"difference": {"f1",
    "interval", "above_zero"}`` (``above_zero``: the share of resamples where the first tagger
    scores higher).
    """
    counts = np.asarray(counts, dtype=np.int64)  # shape: (S, 3)
    if against is not None:
        against = np.asarray(against, dtype=np.int64)  # shape: (S, 3)
        if against.shape != counts.shape:
            raise ValueError(f"expected the compared tagger's counts for {len(counts)} sentences, got {against.shape}")
    mask = np.zeros(len(counts), dtype=bool) if unseen is None else np.asarray(unseen, dtype=bool)  # shape: (S,)
    weights = resample_weights(mask, rounds, seed)  # shape: (R, S)
    tails = [(1.0 - level) / 2.0, 1.0 - (1.0 - level) / 2.0]
    parts = {"all": np.ones(len(counts), dtype=bool)}
    if unseen is not None:
        parts["unseen"] = mask
    result: dict[str, Any] = {"rounds": rounds, "level": level, "seed": seed}
    for name, part in parts.items():
        w = weights[:, part]  # shape: (R, S_part)
        f1 = f1_of(w @ counts[part])  # shape: (R,)
        entry: dict[str, Any] = {"f1": float(f1_of(counts[part].sum(0))), "interval": np.quantile(f1, tails).tolist()}
        if against is not None:
            other = against[part]  # shape: (S_part, 3)
            diff = f1 - f1_of(w @ other)  # shape: (R,)
            entry["difference"] = {"f1": entry["f1"] - float(f1_of(other.sum(0))),
                                   "interval": np.quantile(diff, tails).tolist(), "above_zero": float(np.mean(diff > 0))}
        result[name] = entry
    return result


def format_bootstrap(result: dict[str, Any], against: str = "", unit: str = "sentences") -> str:
    """One line per part: F1 and its interval, and with ``against`` the difference to it
    (``unit``: what was resampled, as the last line says)."""
    pct = f"{result['level'] * 100:g}%"
    lines = []
    for name, entry in ((k, result[k]) for k in ("all", "unseen") if k in result):
        lo, hi = entry["interval"]
        line = f"{'micro' if name == 'all' else 'micro unseen'} F1 {entry['f1']*100:.2f}, {pct} interval {lo*100:.2f} to {hi*100:.2f}"
        if "difference" in entry:
            d = entry["difference"]
            line += (f"; minus {against}: {d['f1']*100:+.2f}, {pct} interval {d['interval'][0]*100:+.2f} to "
                     f"{d['interval'][1]*100:+.2f}, higher in {d['above_zero']*100:.1f}% of resamples")
        lines.append(line)
    apart = ", unseen and seen drawn apart" if "unseen" in result else ""
    lines.append(f"(bootstrap: {result['rounds']} resamples of the {unit}{apart}, seed {result['seed']})")
    return "\n".join(lines)


def type_confusion(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Span-level confusion between entity types.

    Each gold span is paired with the predicted span that overlaps it most (ties: the
    leftmost); the pair counts in ``matrix[gold type][predicted type]``, ``MISSED`` when no
    predicted span overlaps. ``exact`` counts the pairs whose boundaries also agree, so
    ``matrix[t][t] - exact[t]`` are right-type, wrong-boundary spans. A predicted span that
    overlaps no gold span counts in ``matrix[SPURIOUS][predicted type]``.

    Returns ``{"matrix": {gold: {pred: n}}, "exact": {gold: n}, "top": [[gold, pred, n], ...]}``
    where ``top`` lists the off-diagonal cells, largest first.
    """
    return span_confusion((bio_spans(list(g)), bio_spans(list(p))) for g, p in zip(gold, pred))


def span_confusion(units: Iterable[tuple[Sequence[tuple[int, int, str]], Sequence[tuple[int, int, str]]]],
                   spurious_types: Container[str] | None = None) -> dict[str, Any]:
    """``type_confusion`` of spans given as ``(start, end_exclusive, type)``, per unit (a
    sentence's word spans, a document's character spans): ``units`` yields ``(gold spans,
    predicted spans)``. With ``spurious_types``, only predicted spans of those types count as
    spurious (the types a partial gold annotates); every predicted span may still pair with a
    gold span. Returns what ``type_confusion`` does.
    """
    matrix: dict[str, Counter] = {}
    exact: Counter = Counter()
    for g_spans, p_spans in units:
        best, touched = pair_spans(g_spans, p_spans)
        for (gs, ge, gt), k in zip(g_spans, best):
            row = matrix.setdefault(gt, Counter())
            if k < 0:
                row[MISSED] += 1
                continue
            row[p_spans[k][2]] += 1
            if p_spans[k] == (gs, ge, gt):
                exact[gt] += 1
        for k, (_, _, pt) in enumerate(p_spans):
            if not touched[k] and (spurious_types is None or pt in spurious_types):
                matrix.setdefault(SPURIOUS, Counter())[pt] += 1
    top = sorted(((g, p, n) for g, row in matrix.items() for p, n in row.items() if p != g), key=lambda x: (-x[2], x[0], x[1]))
    return {
        "matrix": {g: dict(sorted(row.items())) for g, row in sorted(matrix.items())},
        "exact": dict(sorted(exact.items())),
        "top": [list(t) for t in top],
    }


def pair_spans(g_spans: Sequence[tuple[int, int, str]], p_spans: Sequence[tuple[int, int, str]]) -> tuple[list[int], list[bool]]:
    """For each gold span, the index of the predicted span overlapping it most (ties: the
    leftmost; -1 when none overlaps), and for each predicted span whether any gold span
    overlaps it."""
    best_of: list[int] = []
    touched = [False] * len(p_spans)
    for gs, ge, _ in g_spans:
        best, best_overlap = -1, 0
        for k, (ps, pe, _) in enumerate(p_spans):
            overlap = min(ge, pe) - max(gs, ps)
            if overlap > best_overlap:
                best, best_overlap = k, overlap
            if overlap > 0:
                touched[k] = True
        best_of.append(best)
    return best_of, touched


def mention_text(words: Sequence[str], start: int, end: int) -> str:
    """How a mention is compared across splits: its words, lower-cased, one space apart."""
    return " ".join(words[start:end]).lower()


def mention_texts(tags: Sequence[Sequence[str]], words: Sequence[Sequence[str]]) -> set[str]:
    """The texts (``mention_text``) of every entity mention in a split, whatever its type."""
    return {mention_text(w, start, end) for t, w in zip(tags, words) for start, end, _ in bio_spans(list(t))}


def new_name_recall(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], words: Sequence[Sequence[str]],
                    known: set[str]) -> dict[str, Any]:
    """Exact-span recall on gold mentions whose text is not in ``known`` (the mention texts
    of train, any type: see ``mention_text``), beside the same on the known ones.

    This is the case sentence-level "unseen" F1 blurs: a new sentence mostly still names
    groups and tools seen in train. ``per_type[t]["got"]`` says what the new ``t`` mentions
    were tagged as (the type of the predicted span overlapping each most, ``MISSED`` if none).

    Returns ``{"new": {"mentions", "recall", "per_type": {t: {"mentions", "recall", "got"}}},
    "known": {"mentions", "recall"}}``.
    """
    counts = {"new": Counter(), "known": Counter()}
    hits = {"new": Counter(), "known": Counter()}
    got: dict[str, Counter] = {}
    for g_tags, p_tags, w in zip(gold, pred, words):
        if len(w) != len(g_tags):
            raise ValueError(f"expected {len(g_tags)} words for a sentence's gold tags, got {len(w)}")
        g_spans, p_spans = bio_spans(list(g_tags)), bio_spans(list(p_tags))
        best, _ = pair_spans(g_spans, p_spans)
        for span, k in zip(g_spans, best):
            side = "known" if mention_text(w, span[0], span[1]) in known else "new"
            counts[side][span[2]] += 1
            hits[side][span[2]] += int(k >= 0 and p_spans[k] == span)
            if side == "new":
                got.setdefault(span[2], Counter())[p_spans[k][2] if k >= 0 else MISSED] += 1

    def share(h: int, n: int) -> float:
        return h / n if n else 0.0

    result: dict[str, Any] = {}
    for side in ("new", "known"):
        n, h = sum(counts[side].values()), sum(hits[side].values())
        result[side] = {"mentions": n, "recall": share(h, n)}
    result["new"]["per_type"] = {
        t: {"mentions": n, "recall": share(hits["new"][t], n), "got": dict(got[t].most_common())}
        for t, n in sorted(counts["new"].items())
    }
    return result


def format_new_names(result: dict[str, Any], top: int = 4) -> str:
    """Two lines: exact-span recall on new and known mention texts, then per type on new ones
    with what they were tagged as when not right ("Tool 0.52 of 60: HackOrg 14, missed 9")."""
    new, known = result["new"], result["known"]
    lines = [f"new names (mentions whose text is no mention in train): {new['mentions']}, exact-span recall "
             f"{new['recall']*100:.2f}; known names: {known['mentions']}, recall {known['recall']*100:.2f}"]
    parts = []
    for t, r in sorted(new["per_type"].items(), key=lambda x: -x[1]["mentions"]):
        wrong = [(p, n) for p, n in r["got"].items() if p != t][:top]
        detail = ": " + ", ".join(f"{p.strip('()') if p == MISSED else p} {n}" for p, n in wrong) if wrong else ""
        parts.append(f"{t} {r['recall']*100:.0f}% of {r['mentions']}{detail}")
    if parts:
        lines.append("new mentions by type (recall; what the others got): " + "; ".join(parts))
    return "\n".join(lines)


def format_confusion(confusion: dict[str, Any], top: int = 15) -> str:
    """The confusion matrix as a table (rows: gold type; columns: the type of the predicted
    span that overlaps it most) and the largest off-diagonal cells as "Tool -> HackOrg"."""
    matrix = confusion["matrix"]
    types = sorted({t for t in matrix if t != SPURIOUS} | {p for row in matrix.values() for p in row if p != MISSED})
    cols = types + [MISSED]
    width = max(8, max(len(c) for c in cols) + 1)
    lines = ["type confusion, span level (rows: gold; columns: predicted span overlapping it most)",
             f"{'gold':<{width}}" + "".join(f"{c[:width - 1]:>{width}}" for c in cols) + f"{'exact':>{width}}"]
    for g in [t for t in types if t in matrix] + ([SPURIOUS] if SPURIOUS in matrix else []):  # rows: gold types only
        row = matrix.get(g, {})
        cells = "".join(f"{row.get(c, 0) or '.':>{width}}" for c in cols)
        lines.append(f"{g[:width - 1]:<{width}}{cells}{confusion['exact'].get(g, '') if g != SPURIOUS else '':>{width}}")
    if confusion["top"]:
        lines.append("largest confusions: " + ", ".join(f"{g} -> {p} {n}" for g, p, n in confusion["top"][:top]))
    return "\n".join(lines)


def confusion_headline(confusion: dict[str, Any], top: int = 6) -> str:
    """One line: the largest confusions between two types, then missed and spurious spans."""
    between = [(g, p, n) for g, p, n in confusion["top"] if MISSED not in (g, p) and SPURIOUS not in (g, p)]
    missed = sum(row.get(MISSED, 0) for row in confusion["matrix"].values())
    spurious = sum(confusion["matrix"].get(SPURIOUS, {}).values())
    head = ", ".join(f"{g} -> {p} {n}" for g, p, n in between[:top]) or "none"
    return (f"largest type confusions (gold -> predicted, spans): {head}; missed spans {missed}, spurious spans {spurious} "
            "(evaluate --confusions: the table)")


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
    if "seen" in result:
        u = result["seen"]
        lines.append(
            f"{'micro seen':<14}{u['precision']*100:>10.2f}{u['recall']*100:>10.2f}{u['f1']*100:>10.2f}"
            f"{u['sentences']:>10}  sentences also in train"
        )
    lines.append(f"token accuracy {result['accuracy']*100:.2f}")
    return "\n".join(lines)
