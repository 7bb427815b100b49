"""CoNLL / DNRTI reader that never loses a sentence and says what it repaired.

The published DNRTI files carry quirks that a naive ``line.split()`` reader either
crashes on or silently mishandles. Each quirk is repaired (or the line dropped)
and recorded as a :class:`Repair` with file and line number; ``strict=True``
turns the first repair into a :class:`ConllFormatError` naming file and line.

Quirks handled (kind names as they appear in the report):

``crlf``               CRLF line endings (one entry per file, with the line count).
``no-final-newline``   the last line has no newline.
``tag-only``           a line holding a label but no token (``O``, `` O``): dropped.
``merged-tokens``      ``computers. In O``: several tokens before one label, a lost
                       sentence boundary. Split into tokens; the first takes the label,
                       the rest ``O`` (or ``I-X`` after ``B-X``/``I-X``).
``separator``          tabs mixed with spaces, or runs of whitespace, between token and label.
``trailing-space``     whitespace at the end of a line.
``leading-space``      whitespace at the start of a line.
``repeated-blank``     more than one blank line between sentences: collapsed.
``orphan-inside``      ``I-X`` with no ``B-X``/``I-X`` before it: relabelled ``B-X``.

Unknown or malformed labels are always an error, strict or not.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from pathlib import Path
from typing import Iterable, Sequence

from ..labels import is_bio_label

_CLEAN_SEPARATOR = re.compile(r"^\S+[ \t]\S+$")


class ConllFormatError(ValueError):
    """A CoNLL file cannot be read (or, in strict mode, needs a repair)."""


@dataclasses.dataclass(frozen=True)
class Repair:
    file: str
    line: int  # 1-based line number in the file
    kind: str
    action: str  # "repaired" or "dropped"
    detail: str
    count: int = 1  # lines covered (CRLF is one entry per file)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.kind} ({self.action}): {self.detail}"


@dataclasses.dataclass
class Sentence:
    tokens: list[str]
    labels: list[str]
    file: str = ""
    line: int = 0  # line of the first token


@dataclasses.dataclass
class ReadReport:
    """What a read repaired or dropped, with counts per kind."""

    repairs: list[Repair] = dataclasses.field(default_factory=list)
    sentences: int = 0
    tokens: int = 0

    def counts(self) -> dict[str, int]:
        counter: collections.Counter[str] = collections.Counter()
        for r in self.repairs:
            counter[r.kind] += r.count
        return dict(sorted(counter.items()))

    def summary(self, max_lines_per_kind: int = 3) -> str:
        if not self.repairs:
            return f"{self.sentences} sentences, {self.tokens} tokens, no repairs"
        lines = [f"{self.sentences} sentences, {self.tokens} tokens; repairs:"]
        return "\n".join(lines + repair_lines(self.repairs, max_lines_per_kind))


def repair_lines(repairs: Sequence[Repair], max_lines_per_kind: int = 3) -> list[str]:
    """One line per kind of repair: its count, what was done, and the first places it was done."""
    by_kind: dict[str, list[Repair]] = collections.defaultdict(list)
    for r in repairs:
        by_kind[r.kind].append(r)
    lines = []
    for kind, items in sorted(by_kind.items()):
        where = ", ".join(f"{Path(r.file).name}:{r.line}" for r in items[:max_lines_per_kind])
        more = f" (+{len(items) - max_lines_per_kind} more)" if len(items) > max_lines_per_kind else ""
        lines.append(f"  {kind}: {sum(r.count for r in items)} [{items[0].action}] at {where}{more}")
    return lines


def _inside_of(label: str) -> str:
    return "I-" + label[2:] if label != "O" else "O"


def parse_conll(
    text: str,
    *,
    file: str = "<string>",
    strict: bool = False,
    label_set: Sequence[str] | None = None,
) -> tuple[list[Sentence], ReadReport]:
    """Parse CoNLL text (``token label`` per line, blank line between sentences).

    The label is the last whitespace-separated field; anything before it is the token
    (several fields = merged tokens). ``label_set``, when given, is the closed set of
    labels allowed; otherwise any BIO label (``O``, ``B-X``, ``I-X``) is accepted.
    """
    report = ReadReport()
    allowed = set(label_set) if label_set is not None else None

    def repair(line: int, kind: str, action: str, detail: str, count: int = 1) -> None:
        item = Repair(file, line, kind, action, detail, count)
        if strict:
            raise ConllFormatError(f"{file}:{line}: {kind}: {detail} (strict mode: fix the file or read without --strict)")
        report.repairs.append(item)

    crlf_lines = text.count("\r\n")
    if crlf_lines:
        repair(1, "crlf", "repaired", f"{crlf_lines} lines end in CRLF; read as LF", crlf_lines)
        text = text.replace("\r\n", "\n")
    if "\r" in text:
        line = text[: text.index("\r")].count("\n") + 1
        raise ConllFormatError(f"{file}:{line}: stray carriage return inside a line; expected LF or CRLF line endings")
    raw_lines = text.split("\n")
    if text and not text.endswith("\n"):
        repair(len(raw_lines), "no-final-newline", "repaired", "last line has no newline")
    elif text:
        raw_lines.pop()  # the empty string after the final newline

    sentences: list[Sentence] = []
    tokens: list[str] = []
    labels: list[str] = []
    first_line = 0
    blank_run = 0

    def close() -> None:
        nonlocal tokens, labels
        if tokens:
            sentences.append(Sentence(tokens, labels, file, first_line))
        tokens, labels = [], []

    for lineno, raw in enumerate(raw_lines, start=1):
        if raw.strip() == "":
            blank_run += 1
            if blank_run == 2:
                repair(lineno, "repeated-blank", "repaired", "more than one blank line between sentences")
            if raw:
                repair(lineno, "trailing-space", "repaired", "blank line holds whitespace")
            close()
            continue
        blank_run = 0
        fields = raw.split()
        if raw != raw.rstrip():
            repair(lineno, "trailing-space", "repaired", f"whitespace at end of line {raw!r}")
        if raw != raw.lstrip():
            if len(fields) > 1:
                repair(lineno, "leading-space", "repaired", f"whitespace at start of line {raw!r}")
        label = fields[-1]
        if not is_bio_label(label) or (allowed is not None and label not in allowed):
            if len(fields) == 1:
                raise ConllFormatError(
                    f"{file}:{lineno}: expected 'token label', found a single field {raw.strip()!r} that is not a label"
                )
            want = f"one of the {len(allowed)} known labels" if allowed is not None else "a BIO label (O, B-TYPE, I-TYPE)"
            raise ConllFormatError(f"{file}:{lineno}: expected {want} as the last field, found {label!r}")
        if len(fields) == 1:
            repair(lineno, "tag-only", "dropped", f"label {label!r} with no token")
            continue
        if len(fields) == 2 and not _CLEAN_SEPARATOR.match(raw.strip()):
            repair(lineno, "separator", "repaired", f"irregular whitespace between token and label in {raw!r}")
        words = fields[:-1]
        if len(words) > 1:
            repair(lineno, "merged-tokens", "repaired", f"{len(words)} tokens before one label in {raw.strip()!r}; split")
        if label.startswith("I-"):
            prev = labels[-1] if labels else "O"
            if prev[2:] != label[2:] or prev == "O":
                repair(lineno, "orphan-inside", "repaired", f"{label} follows {prev}; relabelled B-{label[2:]}")
                label = "B-" + label[2:]
        if not tokens:
            first_line = lineno
        for i, word in enumerate(words):
            tokens.append(word)
            labels.append(label if i == 0 else _inside_of(label))
    close()
    report.sentences = len(sentences)
    report.tokens = sum(len(s.tokens) for s in sentences)
    return sentences, report


def read_conll(
    path: str | Path, *, strict: bool = False, label_set: Sequence[str] | None = None
) -> tuple[list[Sentence], ReadReport]:
    """Read a CoNLL file (UTF-8; a BOM is accepted). See :func:`parse_conll`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a CoNLL file at {path}, found nothing there")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConllFormatError(f"{path}:{line}: expected UTF-8 text, found byte {data[exc.start]:#04x}") from None
    return parse_conll(text, file=str(path), strict=strict, label_set=label_set)


def label_list(sentence_sets: Iterable[Sequence[Sentence]]) -> list[str]:
    """Sorted BIO label list over sentences: ``O`` first, then ``B-X``/``I-X`` by type."""
    types = sorted({lab[2:] for sents in sentence_sets for s in sents for lab in s.labels if lab != "O"})
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]
