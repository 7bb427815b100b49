"""Input documents: discovery, format detection and streaming readers.

INPUT is a directory (walked recursively, sorted by relative path), files, or ``-`` for
standard input. Formats, from the extension (``--input-format`` forces one):

``text``   ``.txt``, ``.text``, ``.md`` and anything else: one document per file.
``jsonl``  ``.jsonl``, ``.ndjson``: one document per line, ``{"id", "text"}`` or ``{"id", "tokens"}``.
``conll``  ``.conll``, ``.conllu``, ``.bio``, ``.iob``: one document per file (or per
           ``-DOCSTART-`` section); the first field of each line is the token, and a last
           field, when there are two or more, is a label and is ignored.

Any of them may be gzipped (``.gz``). Documents are yielded in a stable order with their
global index; a document that cannot be read becomes a :class:`Document` with ``error`` set,
so that records out always equal documents in.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import sys
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

FORMATS = ("text", "jsonl", "conll")
_EXT = {
    ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".conll": "conll", ".conllu": "conll", ".bio": "conll", ".iob": "conll",
}
_SKIP_NAMES = {".DS_Store", "Thumbs.db"}


class InputError(ValueError):
    """The inputs as a whole cannot be read (nothing to tag, a path that does not exist)."""


@dataclasses.dataclass
class Document:
    index: int  # position in the whole input, from 0
    id: str
    source: str
    text: str | None = None
    tokens: list[str] | None = None  # pre-tokenized input
    sentences: list[list[str]] | None = None  # pre-split sentences (CoNLL)
    error: str | None = None

    @property
    def size(self) -> int:
        if self.text is not None:
            return len(self.text)
        if self.sentences is not None:
            return sum(len(w) + 1 for s in self.sentences for w in s)
        return sum(len(w) + 1 for w in self.tokens or ())


@dataclasses.dataclass(frozen=True)
class Source:
    path: str  # "-" for stdin
    format: str
    gz: bool


def detect_format(path: str) -> tuple[str, bool]:
    p = Path(path)
    gz = p.suffix == ".gz"
    ext = Path(p.stem).suffix if gz else p.suffix
    return _EXT.get(ext.lower(), "text"), gz


def discover(inputs: Sequence[str], input_format: str | None = None) -> list[Source]:
    """Files to read, in order: each INPUT in turn, a directory's files sorted by path."""
    if not inputs:
        raise InputError("expected at least one INPUT (a directory, files, or - for standard input), got none")
    out: list[Source] = []
    for item in inputs:
        if item == "-":
            out.append(Source("-", input_format or "jsonl", False))
            continue
        p = Path(item)
        if p.is_dir():
            files = sorted(
                (f for f in p.rglob("*") if f.is_file() and f.name not in _SKIP_NAMES and not f.name.startswith(".")),
                key=lambda f: f.relative_to(p).as_posix(),
            )
            if not files:
                raise InputError(f"expected files to tag in directory {item}, found none (empty directory)")
            for f in files:
                fmt, gz = detect_format(str(f))
                out.append(Source(str(f), input_format or fmt, gz))
        elif p.is_file():
            fmt, gz = detect_format(item)
            out.append(Source(item, input_format or fmt, gz))
        elif p.exists():
            raise InputError(f"expected INPUT {item} to be a file or directory, found something else")
        else:
            raise InputError(f"expected INPUT {item} to exist, found nothing at that path")
    return out


def count_documents(sources: Sequence[Source]) -> int | None:
    """Number of documents, when cheap to know (None for stdin and gzipped JSONL)."""
    total = 0
    for s in sources:
        if s.path == "-":
            return None
        if s.format == "jsonl":
            if s.gz:
                return None
            with open(s.path, "rb") as f:
                n = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
                f.seek(0, os.SEEK_END)
                if f.tell():
                    f.seek(-1, os.SEEK_END)
                    n += f.read(1) != b"\n"
            total += n
        elif s.format == "conll":
            return None
        else:
            total += 1
    return total


def _open_binary(source: Source) -> BinaryIO:
    raw: BinaryIO = sys.stdin.buffer if source.path == "-" else open(source.path, "rb")
    return gzip.GzipFile(fileobj=raw) if source.gz else raw  # type: ignore[return-value]


def _decode(data: bytes) -> tuple[str | None, str | None]:
    """Text or an error reason: NUL bytes mean binary; otherwise strict UTF-8 (BOM removed)."""
    nul = data.find(b"\x00")
    if nul >= 0:
        return None, f"binary content: NUL byte at offset {nul}; expected UTF-8 text"
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8: byte {data[exc.start]:#04x} at offset {exc.start}; expected UTF-8 text"


def read_documents(sources: Sequence[Source], start_index: int = 0) -> Iterator[Document]:
    """Stream documents from the sources, in order."""
    index = start_index
    for source in sources:
        for doc in _read_source(source, index):
            yield doc
            index += 1


def _read_source(source: Source, index: int) -> Iterator[Document]:
    name = "<stdin>" if source.path == "-" else source.path
    try:
        stream = _open_binary(source)
    except OSError as exc:
        yield Document(index, name, name, error=f"cannot open: {exc.strerror or exc}")
        return
    try:
        if source.format == "jsonl":
            yield from _read_jsonl(stream, name, index)
        else:
            try:
                data = stream.read()
            except (OSError, EOFError) as exc:  # a truncated or corrupt gzip
                yield Document(index, name, name, error=f"cannot read: {exc}")
                return
            text, err = _decode(data)
            if err:
                yield Document(index, name, name, error=err)
            elif source.format == "conll":
                yield from _read_conll_docs(text or "", name, index)
            else:
                yield Document(index, name, name, text=text)
    finally:
        if source.path != "-":
            stream.close()


def _read_jsonl(stream: BinaryIO, name: str, index: int) -> Iterator[Document]:
    lineno = 0
    try:
        for lineno, raw in enumerate(stream, start=1):
            where = f"{name}:{lineno}"
            if not raw.strip():
                continue  # blank lines are not documents
            text, err = _decode(raw)
            if err:
                yield Document(index, where, where, error=f"line {lineno}: {err}")
                index += 1
                continue
            try:
                obj = json.loads(text or "")
            except ValueError as exc:
                yield Document(index, where, where, error=f"line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})")
                index += 1
                continue
            yield _jsonl_document(obj, index, where, lineno)
            index += 1
    except (OSError, EOFError) as exc:
        where = f"{name}:{lineno + 1}"
        yield Document(index, where, where, error=f"cannot read past line {lineno}: {exc}")


def _jsonl_document(obj, index: int, where: str, lineno: int) -> Document:
    if not isinstance(obj, dict):
        return Document(index, where, where, error=f"line {lineno}: expected a JSON object with 'text' or 'tokens', found {type(obj).__name__}")
    doc_id = obj.get("id", where)
    doc_id = doc_id if isinstance(doc_id, str) else json.dumps(doc_id)
    if isinstance(obj.get("text"), str):
        return Document(index, doc_id, where, text=obj["text"])
    tokens = obj.get("tokens")
    if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        bad = [i for i, t in enumerate(tokens) if not t.strip() or any(c.isspace() for c in t)]
        if bad:
            return Document(index, doc_id, where, error=f"line {lineno}: token {bad[0]} is empty or contains whitespace; expected words")
        return Document(index, doc_id, where, tokens=list(tokens))
    return Document(index, doc_id, where, error=f"line {lineno}: expected a string 'text' or a list of strings 'tokens', found keys {sorted(obj)}")


def _read_conll_docs(text: str, name: str, index: int) -> Iterator[Document]:
    sections: list[list[list[str]]] = [[]]
    current: list[str] = []
    for line in io.StringIO(text):
        fields = line.split()
        if not fields:
            if current:
                sections[-1].append(current)
                current = []
            continue
        if fields[0] == "-DOCSTART-":
            if current:
                sections[-1].append(current)
                current = []
            if sections[-1]:
                sections.append([])
            continue
        current.extend(fields[:-1] if len(fields) > 1 else fields)
    if current:
        sections[-1].append(current)
    for k, sents in enumerate(sections):
        doc_id = name if len(sections) == 1 else f"{name}#{k + 1}"
        yield Document(index + k, doc_id, name, sentences=sents)
