"""Scoring tagged documents against gold character spans: what `ner-batch score` reports.

The gold is JSONL, one document per line, in the input format of `ner-batch tag` with the
entities added, so the same file can be tagged and then scored::

    {"id": "r1", "text": "APT28 used X-Agent.", "entities": [{"start": 0, "end": 5, "label": "HackOrg"}, ...]}

Offsets count Unicode code points (Python string indices, as the records of `ner-batch tag`
do), end exclusive. A gold file may annotate only some types (say groups and software): the
types found in it (after ``label_map``) are the scored types; predicted spans of other types
are neither right nor spurious, but a gold span they overlap is reported as confused with them
("Tool -> SecTeam"). A span is right when its start, end and type equal a gold span's.

Nothing in a gold file stops the others: a line that is not a JSON object, an entity with
offsets outside the text or a text that does not match them, a repeated id, each is skipped
and counted with its line number (:class:`~ner_batch.data.conll.Repair`).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any, Container, Iterable, Iterator, Mapping

import numpy as np

from .data.conll import Repair, repair_lines
from .evaluation import MISSED, SPURIOUS, bootstrap, f1_of, span_confusion

Span = tuple[int, int, str]  # (start, end_exclusive, type), character offsets


class GoldError(ValueError):
    """A gold or tags file cannot be used at all (not readable, no document in it)."""


@dataclasses.dataclass
class GoldDoc:
    id: str
    line: int
    spans: list[Span]
    text: str | None = None


@dataclasses.dataclass
class GoldFile:
    path: str
    docs: list[GoldDoc]
    skipped: list[Repair]

    @property
    def types(self) -> list[str]:
        return sorted({t for d in self.docs for _, _, t in d.spans})


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    yield lineno, line
    except (OSError, EOFError) as exc:
        raise GoldError(f"cannot read {path}: {exc}") from None


def read_gold(path: str | Path, label_map: Mapping[str, str] | None = None) -> GoldFile:
    """The documents of a gold JSONL file (``.gz`` too), labels mapped by ``label_map``.

    A document without ``"id"`` gets ``"<path as given>:<line>"``, the id `ner-batch tag`
    gives it when tagged from the same path. Raises :class:`GoldError` when the file cannot
    be read or holds no usable document.
    """
    label_map = dict(label_map or {})
    docs: list[GoldDoc] = []
    skipped: list[Repair] = []
    seen: set[str] = set()
    name = str(path)

    def skip(line: int, kind: str, detail: str) -> None:
        skipped.append(Repair(name, line, kind, "skipped", detail))

    for lineno, line in _lines(path):
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            skip(lineno, "not-json", "the line is not JSON")
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("entities"), list):
            skip(lineno, "no-entities", "expected a JSON object with a list 'entities'")
            continue
        doc_id = obj.get("id", f"{name}:{lineno}")
        if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
            skip(lineno, "bad-id", f"expected a string or integer 'id', found {type(doc_id).__name__}")
            continue
        doc_id = str(doc_id)
        if doc_id in seen:
            skip(lineno, "repeated-id", f"id {doc_id!r} already read; the first document with it is kept")
            continue
        text = obj.get("text") if isinstance(obj.get("text"), str) else None
        spans: set[Span] = set()
        for k, ent in enumerate(obj["entities"]):
            span = _gold_span(ent, text, label_map, lambda kind, detail: skip(lineno, kind, f"entity {k}: {detail}"))
            if span is not None:
                spans.add(span)
        seen.add(doc_id)
        docs.append(GoldDoc(doc_id, lineno, sorted(spans), text))
    if not docs:
        detail = f"; skipped: {', '.join(f'{k} {n}' for k, n in Counter(r.kind for r in skipped).items())}" if skipped else ""
        raise GoldError(f"expected JSON lines with 'entities' in {path}, found no usable document{detail}")
    return GoldFile(name, docs, skipped)


def _gold_span(ent: Any, text: str | None, label_map: Mapping[str, str], skip) -> Span | None:
    if not isinstance(ent, dict):
        skip("bad-entity", f"expected an object with start, end and label, found {type(ent).__name__}")
        return None
    start, end, label = ent.get("start"), ent.get("end"), ent.get("label")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)) or not isinstance(label, str) or not label:
        skip("bad-entity", f"expected integer start and end and a label, found {sorted(ent)}")
        return None
    if not 0 <= start < end or (text is not None and end > len(text)):
        limit = f" and end <= {len(text)} (the text's length)" if text is not None else ""
        skip("bad-offsets", f"expected 0 <= start < end{limit}, found {start}..{end}")
        return None
    if text is not None and isinstance(ent.get("text"), str) and text[start:end] != ent["text"]:
        skip("text-mismatch", f"text[{start}:{end}] is {text[start:end]!r}, the entity says {ent['text']!r} "
                              "(offsets in UTF-16 or bytes? expected Unicode code points)")
        return None
    return start, end, label_map.get(label, label)


@dataclasses.dataclass
class TaggedDoc:
    spans: list[Span]
    texts: list[str]  # each predicted span's text, as the record has it
    error: str | None = None


def read_tags(path: str | Path, ids: Container[str] | None = None) -> tuple[dict[str, TaggedDoc], list[Repair]]:
    """The records of a `ner-batch tag` JSONL output (``.gz`` too) by id, and the lines skipped.

    ``ids``: keep only the records of these documents (the gold's), so a labelled sample scored
    against the output of a whole corpus holds the sample's records, not the corpus's (lines
    that are no record are still counted, wherever they are).
    """
    from .pipeline.records import RecordsError, read_records

    records: dict[str, TaggedDoc] = {}
    skipped: list[Repair] = []
    name = str(path)
    not_records: list[int] = []

    def not_a_record(lineno: int) -> None:
        skipped.append(Repair(name, lineno, "not-a-record", "skipped", "expected a record with 'id' and 'entities'"))

    try:
        for lineno, rec in read_records(path, not_records):
            if not isinstance(rec.get("entities"), list) or "id" not in rec:
                not_a_record(lineno)
                continue
            doc_id = str(rec["id"])
            if ids is not None and doc_id not in ids:
                continue
            if doc_id in records:
                skipped.append(Repair(name, lineno, "repeated-id", "skipped", f"id {doc_id!r} already read"))
                continue
            ents = [e for e in rec["entities"] if isinstance(e, dict) and isinstance(e.get("start"), int)
                    and isinstance(e.get("end"), int) and isinstance(e.get("label"), str)]
            records[doc_id] = TaggedDoc([(e["start"], e["end"], e["label"]) for e in ents],
                                        [e.get("text") if isinstance(e.get("text"), str) else None for e in ents],
                                        rec.get("error") if isinstance(rec.get("error"), str) else None)
    except RecordsError as exc:
        raise GoldError(str(exc)) from None
    for lineno in not_records:
        not_a_record(lineno)
    skipped.sort(key=lambda r: r.line)
    return records, skipped


def scored_units(gold: GoldFile, tags: Mapping[str, TaggedDoc]) -> tuple[list[tuple[list[Span], list[Span]]], dict[str, list[str]]]:
    """(gold spans, predicted spans) of each gold document that can be scored, in the gold's
    order, and the ids of those that cannot, by reason (see :func:`score_spans`)."""
    units: list[tuple[list[Span], list[Span]]] = []
    not_scored: dict[str, list[str]] = {"no record": [], "error record": [], "other text": []}
    for doc in gold.docs:
        rec = tags.get(doc.id)
        if rec is None:
            not_scored["no record"].append(doc.id)
        elif rec.error is not None:
            not_scored["error record"].append(doc.id)
        elif doc.text is not None and any(t is not None and doc.text[s:e] != t for (s, e, _), t in zip(rec.spans, rec.texts)):
            not_scored["other text"].append(doc.id)
        else:
            units.append((doc.spans, rec.spans))
    return units, not_scored


def unit_counts(units: Iterable[tuple[Iterable[Span], Iterable[Span]]], types: Iterable[str]) -> np.ndarray:
    """``(D, 3)`` exact-span counts per document (correct, predicted, gold), predicted spans of
    ``types`` only: the rows :func:`~ner_batch.evaluation.bootstrap` resamples."""
    types = set(types)
    rows = []
    for g_spans, p_spans in units:
        g, p = set(g_spans), {s for s in p_spans if s[2] in types}
        rows.append((len(g & p), len(p), len(g)))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)  # shape: (D, 3)


def score_spans(gold: GoldFile, tags: Mapping[str, TaggedDoc], *, types: Iterable[str] | None = None, rounds: int = 1000,
                seed: int = 0) -> dict[str, Any]:
    """Exact-span precision, recall and F1 per gold type and micro, the span-level type
    confusion (``evaluation.type_confusion``'s format: rows gold, columns the predicted span
    overlapping most, ``(missed)``), and a bootstrap interval of micro F1 over documents.

    ``types``: the types the gold marks wherever they occur (default: those found in it); a
    predicted span of another type is neither right nor spurious. Documents of the gold with
    no record in ``tags``, or with an error record, are left out of every score and listed
    (``not_scored``); so are records whose entity texts disagree with the gold text at their
    offsets (tagged from another text).
    """
    types = set(gold.types if types is None else types)
    units, not_scored = scored_units(gold, tags)
    counts = unit_counts(units, types)  # shape: (D, 3): correct, predicted, gold
    per_type = {t: Counter() for t in sorted(types)}
    for g_spans, p_spans in units:
        g, p = set(g_spans), {s for s in p_spans if s[2] in types}
        for kind, spans in (("correct", g & p), ("predicted", p), ("gold", g)):
            for _, _, t in spans:
                per_type[t][kind] += 1
    result: dict[str, Any] = {
        "gold": gold.path, "types": sorted(types), "documents": len(gold.docs), "scored": len(units),
        "not_scored": {k: v for k, v in not_scored.items() if v},
        "per_type": {t: _prf(c["correct"], c["predicted"], c["gold"]) for t, c in per_type.items()},
        **_prf(*counts.sum(0).tolist()),
        "confusion": span_confusion(units, spurious_types=types),
    }
    if rounds and len(units) > 1:
        result["bootstrap"] = bootstrap(counts, rounds=rounds, seed=seed)
    return result


def _prf(correct: int, predicted: int, gold: int) -> dict[str, Any]:
    return {"precision": correct / predicted if predicted else 0.0, "recall": correct / gold if gold else 0.0,
            "f1": float(f1_of(np.array([correct, predicted, gold]))), "correct": correct, "predicted": predicted, "support": gold}


def missed_breakdown(confusion: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per gold type, what its spans that were not found exactly got: another type (the
    predicted span overlapping most), the right type with other boundaries, or ``(missed)``."""
    out: dict[str, dict[str, int]] = {}
    for g, row in confusion["matrix"].items():
        if g == SPURIOUS:
            continue
        got = {p: n for p, n in row.items() if p != g}
        boundary = row.get(g, 0) - confusion["exact"].get(g, 0)
        if boundary:
            got[f"{g}, other boundaries"] = boundary
        out[g] = dict(sorted(got.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def format_spans_report(result: dict[str, Any], skipped: Iterable[Repair] = ()) -> str:
    """The table `ner-batch score` prints."""
    lines = [f"{result['gold']}: {result['documents']} documents, types {', '.join(result['types'])}; "
             f"scored {result['scored']}"]
    for why, ids in result["not_scored"].items():
        lines.append(f"  not scored, {why}: {len(ids)} (first: {', '.join(ids[:3])})")
    skipped = list(skipped)
    if skipped:
        lines.append("skipped lines and entities:")
        lines += repair_lines(skipped)
    lines.append(f"{'':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'gold':>8}{'predicted':>10}")
    for name, r in [*result["per_type"].items(), ("micro (all)", result)]:
        lines.append(f"{name:<14}{r['precision']*100:>10.2f}{r['recall']*100:>10.2f}{r['f1']*100:>10.2f}"
                     f"{r['support']:>8}{r['predicted']:>10}")
    for g, got in missed_breakdown(result["confusion"]).items():
        total = result["per_type"][g]["support"] - result["per_type"][g]["correct"]
        if total:
            lines.append(f"{g} spans not found exactly ({total}): " + ", ".join(
                f"{'untagged' if p == MISSED else p} {n}" for p, n in got.items()))
    return "\n".join(lines)
