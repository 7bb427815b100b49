"""Output records: one JSON line (or a CoNLL block) per input document."""

from __future__ import annotations

import collections
import json
import re
from typing import Any, Sequence

from ..tagging import SentenceTags
from .inputs import Document
from ..segment import Span


def record(doc: Document, sentences: Sequence[Sequence[Span]], tags: Sequence[SentenceTags], text: str, n_pieces: int) -> dict[str, Any]:
    """The JSON record of a tagged document.

    ``text`` is the document's text (for pre-tokenized input, its words joined by single
    spaces, sentence by sentence); ``sentences`` hold each word's ``(start, end)`` in it.
    """
    entities = []
    word_base = 0
    for spans, wt in zip(sentences, tags):
        for first, last, label, score in wt.entities():
            start, end = spans[first][0], spans[last - 1][1]
            ent: dict[str, Any] = {"start": start, "end": end, "label": label, "text": text[start:end], "score": round(score, 4)}
            if doc.text is None:  # pre-tokenized: token indices over the whole document
                ent["token_start"], ent["token_end"] = word_base + first, word_base + last
            entities.append(ent)
        word_base += len(spans)
    by_label = collections.Counter(e["label"] for e in entities)
    rec: dict[str, Any] = {
        "id": doc.id,
        "entities": entities,
        "counts": {"sentences": len(sentences), "words": word_base, "word_pieces": n_pieces,
                   "entities": len(entities), "by_label": dict(sorted(by_label.items()))},
    }
    if doc.source != doc.id:
        rec["source"] = doc.source
    if doc.text is None:
        rec["text"] = text
    warnings = [w for w in (doc.warning, "empty document" if word_base == 0 else None) if w]
    if warnings:
        rec["warning"] = "; ".join(warnings)
    return rec


def error_record(doc: Document) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": doc.id, "error": doc.error, "entities": [],
                           "counts": {"sentences": 0, "words": 0, "word_pieces": 0, "entities": 0, "by_label": {}}}
    if doc.source != doc.id:
        rec["source"] = doc.source
    return rec


#: Characters that JSON allows raw in strings but that some line readers (Python's
#: ``str.splitlines``, JavaScript) take for line breaks: written escaped.
_LINE_BREAKS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085", "\x1c": "\\u001c",
                "\x1d": "\\u001d", "\x1e": "\\u001e", "\x0b": "\\u000b", "\x0c": "\\u000c"}
_LINE_BREAKS_TABLE = str.maketrans(_LINE_BREAKS)
_LINE_BREAK_RE = re.compile("[" + "".join(_LINE_BREAKS) + "]")


def one_line(serialized_json: str) -> str:
    """Serialized JSON with the characters that some readers take for line breaks escaped."""
    if _LINE_BREAK_RE.search(serialized_json) is None:  # the common case: a C scan, no copy
        return serialized_json
    return serialized_json.translate(_LINE_BREAKS_TABLE)


def to_jsonl(rec: dict[str, Any]) -> str:
    """One JSON line; it splits into exactly one line under every line reader."""
    return one_line(json.dumps(rec, ensure_ascii=False)) + "\n"


def to_conll(rec: dict[str, Any], words: Sequence[Sequence[str]], tags: Sequence[SentenceTags]) -> str:
    """A CoNLL block: ``# id = ...`` then ``word<TAB>label<TAB>score`` lines, a blank line per sentence."""
    lines = [f"# id = {_one_line(rec['id'])}"]
    if rec.get("error"):
        lines.append(f"# error = {_one_line(rec['error'])}")
    if rec.get("warning"):
        lines.append(f"# warning = {_one_line(rec['warning'])}")
    for ws, wt in zip(words, tags):
        lines.extend(f"{w}\t{lab}\t{s:.4f}" for w, lab, s in zip(ws, wt.labels, wt.scores))
        lines.append("")
    if len(lines) == 1 or lines[-1] != "":
        lines.append("")
    return "\n".join(lines) + "\n"


def _one_line(value: str) -> str:
    """A value for a ``# key = value`` comment line: line breaks and control characters escaped."""
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in value)


class RecordsError(ValueError):
    """A file of records cannot be read at all (unreadable, or CoNLL output instead of JSONL)."""


def read_records(path, skipped: list[int]):
    """``(line number, record)`` of each JSON record in a tags.jsonl(.gz) file that `ner-batch tag`
    wrote; the line numbers of lines that are not records (not JSON objects, STIX bundles) go
    to ``skipped``. Raises :class:`RecordsError` for CoNLL output or an unreadable file."""
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                if lineno == 1 and line.startswith("# id = "):
                    raise RecordsError(
                        f"{path} is CoNLL output (--output-format conll); this command reads the JSONL records that "
                        "`ner-batch tag` writes by default")
                try:
                    rec = json.loads(line)
                except (ValueError, RecursionError):
                    rec = None
                if not isinstance(rec, dict) or rec.get("type") == "bundle":
                    skipped.append(lineno)
                    continue
                yield lineno, rec
    except (OSError, EOFError) as exc:
        raise RecordsError(f"cannot read {path}: {exc}") from None

