"""Raw text -> sentences -> words, each word with its character offsets in the text.

Offsets are Python string indices (Unicode code points) into the document as decoded,
so ``text[start:end]`` is exactly the word. Words follow DNRTI's tokenization: runs of
letters and digits stay whole together with inner ``. - _ @ / \\ : %`` (so ``CVE-2017-11882``,
``admin@338``, ``example[.]com`` parts, ``192.168.1.1``, ``C:\\Windows\\x.dll`` stay one word),
and every other non-space character is a word of its own.

Sentences end at ``.``, ``!`` or ``?`` (possibly followed by closing quotes or brackets) when
whitespace and then an upper-case letter, digit, quote or bracket follow; at blank lines;
and after a word that is itself a run of ``.!?``. Common abbreviations (``e.g.``, ``Inc.``,
``U.S.``) do not end a sentence. Text with no sentence ends (tables, logs, IOC lists) is one
long sentence: the tagger covers it with overlapping windows and decodes it in overlapping
segments (see :mod:`ner_batch.tagging`), so no cut shows in the output.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterator

Span = tuple[int, int]

_WORD = re.compile(r"[^\W_](?:[\w.\-@/\\:%]*[^\W_]|[\w]*)|\S", re.UNICODE)
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")
_ENDERS = frozenset(".!?")
_CLOSERS = frozenset("\"')]»”’")
_ABBREV = frozenset(
    "a.k.a e.g i.e etc vs al inc ltd corp co mr mrs ms dr st no fig jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k".split()
)


def words(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """Character spans of the words of ``text[start:end]``.

    A combining mark (Unicode category M*: accents in decomposed text, Indic vowel signs and
    viramas) never starts a word of its own: it joins the word before it, and a word that
    goes on right after it joins too (``Ope\u0301ration``, ``हिन्दी`` are one word each).
    """
    spans = [m.span() for m in _WORD.finditer(text, start, len(text) if end is None else end)]
    if text.isascii():
        return spans
    merged: list[Span] = []
    for s, e in spans:
        if merged and merged[-1][1] == s and _joins(text, merged[-1], s):
            merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
    return merged


def _joins(text: str, prev: Span, s: int) -> bool:
    """Whether the word at ``s``, touching ``prev``, continues it across a combining mark."""
    if unicodedata.category(text[s]).startswith("M"):
        return True
    return (unicodedata.category(text[prev[1] - 1]).startswith("M") and text[s].isalnum()
            and (text[prev[0]].isalnum() or unicodedata.category(text[prev[0]]).startswith("M")))


def _paragraphs(text: str) -> Iterator[Span]:
    pos = 0
    for m in _BLANK_LINE.finditer(text):
        yield pos, m.start()
        pos = m.end()
    yield pos, len(text)


def sentences(text: str) -> list[list[Span]]:
    """Sentences of ``text``, each a list of word spans (empty sentences are skipped)."""
    out: list[list[Span]] = []
    for p_start, p_end in _paragraphs(text):
        spans = words(text, p_start, p_end)
        current: list[Span] = []
        for i, (s, e) in enumerate(spans):
            current.append((s, e))
            if _ends_sentence(text, spans, i):
                out.append(current)
                current = []
        if current:
            out.append(current)
    return out


def _ends_sentence(text: str, spans: list[Span], i: int) -> bool:
    s, e = spans[i]
    if text[s] in _CLOSERS and i > 0 and spans[i - 1][1] == s and text[spans[i - 1][0]] in _ENDERS:
        i, (s, e) = i, (spans[i - 1][0], e)  # 'done."' ends like 'done.'
    elif text[s] not in _ENDERS:
        return False
    if i + 1 == len(spans):
        return True
    # Closing quotes and brackets right after the full stop belong to this sentence.
    nxt_s, nxt_e = spans[i + 1]
    if nxt_s == e:  # no space after it: a closing quote, or "?!" inside a word run
        return False
    if text[s] == "." and i > 0:
        ps, pe = spans[i - 1]
        if pe == s and text[ps:pe].lower().rstrip(".") in _ABBREV:
            return False
        if pe == s and pe - ps == 1 and text[ps].isupper():  # initials: "J. Smith"
            return False
    return not text[nxt_s].islower()


def split_document(text: str) -> tuple[list[list[str]], list[list[Span]]]:
    """Words and their spans per sentence."""
    spans = sentences(text)
    return [[text[s:e] for s, e in sent] for sent in spans], spans


def join_words(sentences: list[list[str]]) -> tuple[str, list[list[Span]]]:
    """Pre-tokenized words as one text, words joined by spaces and sentences by newlines, and
    each word's span in that text (what a record's offsets of pre-tokenized input point into)."""
    spans: list[list[Span]] = []
    pieces: list[str] = []
    pos = 0
    for k, sent in enumerate(sentences):
        if k:
            pieces.append("\n")
            pos += 1
        cur = []
        for j, w in enumerate(sent):
            if j:
                pieces.append(" ")
                pos += 1
            cur.append((pos, pos + len(w)))
            pieces.append(w)
            pos += len(w)
        spans.append(cur)
    return "".join(pieces), spans


def _possessive(text: str, start: int, end: int) -> int:
    """How many characters a final possessive takes at ``text[start:end]``'s end (0: none):
    ``'s`` / ``’s``, or ``' s`` as words joined by spaces have it."""
    if end - start > 2 and text[end - 1] in "sS":
        if text[end - 2] in "'’":
            return 2
        if end - start > 3 and text[end - 2] == " " and text[end - 3] in "'’":
            return 3
    return 0


def trim_span(text: str, start: int, end: int) -> Span | None:
    """``text[start:end]`` without the characters at its edges that are no letter or digit and
    without a final possessive (``'s``, ``’s``; a space before it too): ``(EternalBlue)`` ->
    ``EternalBlue``, ``APT28's`` -> ``APT28``, ``Intel®`` -> ``Intel``. None when nothing is left.

    DNRTI's annotators kept such characters inside a token, and so inside an entity; the
    splitter makes them words of their own. Scoring with both sides trimmed
    (``bench/text.py``) and ``train --resplit-trim`` use this one rule.
    """
    while True:
        while start < end and not text[start].isalnum():
            start += 1
        while end > start and not text[end - 1].isalnum():
            end -= 1
        cut = _possessive(text, start, end)
        if cut:
            end -= cut
            continue
        return (start, end) if start < end else None
