"""Input documents: discovery, format detection and streaming readers.

INPUT is a directory (walked recursively, sorted by relative path), files, or ``-`` for
standard input. Formats, from the extension (``--input-format`` forces one):

``text``   ``.txt``, ``.text``, ``.md`` and anything else: one document per file.
``jsonl``  ``.jsonl``, ``.ndjson``: one document per line, ``{"id", "text"}`` or ``{"id", "tokens"}``.
``conll``  ``.conll``, ``.conllu``, ``.bio``, ``.iob``: one document per file (or per
           ``-DOCSTART-`` section); the first field of each line is the token, other fields
           (tags, labels) are ignored.

Any of them may be gzipped (``.gz``). Text is UTF-8 (a BOM is dropped); UTF-16 with a BOM is
read too. Documents are yielded in a stable order with their global index; a document that
cannot be read becomes a :class:`Document` with ``error`` set, so that records out always
equal documents in.

Inside a directory, hidden files and directories (``.git/``), symbolic links (never followed,
so nothing outside the tree is read and no link loop is walked), and FIFOs, sockets and
devices are skipped, each with a note; so are the run's own output and work directory. A
file or link given directly as INPUT is read. An id that repeats an earlier document's id is
tagged and gets a ``warning``; an id that is not valid Unicode (a file name in another
encoding, a lone surrogate) is written with backslash escapes.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Sequence

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
    warning: str | None = None

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


def safe_id(s: str) -> str:
    """``s`` if it encodes as UTF-8; else with backslash escapes for the bytes of a file name
    in another encoding (``\\xe9``) and for lone surrogates (``\\ud800``)."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        pass
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _bad_unicode(value: str) -> int | None:
    """Index of the first lone surrogate in ``value`` (which JSON can carry), or None."""
    try:
        value.encode("utf-8")
        return None
    except UnicodeEncodeError as exc:
        return exc.start


def detect_format(path: str) -> tuple[str, bool]:
    p = Path(path)
    gz = p.suffix == ".gz"
    ext = Path(p.stem).suffix if gz else p.suffix
    return _EXT.get(ext.lower(), "text"), gz


def discover(inputs: Sequence[str], input_format: str | None = None, *, exclude: Iterable[str | Path] = (),
             note: Callable[[str], None] | None = None) -> list[Source]:
    """Files to read, in order: each INPUT in turn, a directory's files sorted by path.

    ``exclude`` paths (the run's output and work directory) are never inputs; ``note``
    receives one line per thing skipped inside a directory.
    """
    if not inputs:
        raise InputError("expected at least one INPUT (a directory, files, or - for standard input), got none")
    note = note or (lambda m: None)
    excluded = {_real(p) for p in exclude}
    out: list[Source] = []
    for item in inputs:
        if item == "-":
            out.append(Source("-", input_format or "jsonl", False))
            continue
        p = Path(item)
        if p.is_dir():
            files = _walk(p, excluded, note)
            if not files:
                raise InputError(f"expected files to tag in directory {safe_id(item)}, found none (empty directory)")
            for f in files:
                fmt, gz = detect_format(str(f))
                out.append(Source(str(f), input_format or fmt, gz))
        elif p.is_file():
            fmt, gz = detect_format(item)
            out.append(Source(item, input_format or fmt, gz))
        elif p.exists():
            raise InputError(f"expected INPUT {safe_id(item)} to be a file or directory, found something else (a FIFO, socket or device)")
        else:
            raise InputError(f"expected INPUT {safe_id(item)} to exist, found nothing at that path")
    return out


def _real(path: str | Path) -> str:
    return os.path.realpath(os.fspath(path))


def _walk(root: Path, excluded: set[str], note: Callable[[str], None]) -> list[Path]:
    found: list[Path] = []

    def unreadable(err: OSError) -> None:
        note(f"skipped {safe_id(str(err.filename))}: cannot read the directory ({err.strerror})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        kept = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if d.startswith("."):
                continue  # hidden: .git/, .cache/ ...
            if os.path.islink(full):
                note(f"skipped {safe_id(full)}: a symbolic link (links inside a directory are not followed)")
            elif _real(full) in excluded:
                continue  # our own work directory
            else:
                kept.append(d)
        dirnames[:] = kept
        for name in filenames:
            full = os.path.join(dirpath, name)
            if name.startswith(".") or name in _SKIP_NAMES or _real(full) in excluded:
                continue
            try:
                mode = os.lstat(full).st_mode
            except OSError as exc:
                note(f"skipped {safe_id(full)}: {exc.strerror}")
                continue
            if stat.S_ISLNK(mode):
                note(f"skipped {safe_id(full)}: a symbolic link (links inside a directory are not followed)")
            elif not stat.S_ISREG(mode):
                note(f"skipped {safe_id(full)}: not a regular file (a FIFO, socket or device)")
            else:
                found.append(Path(full))
    return sorted(found, key=lambda f: f.relative_to(root).as_posix())


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
    if source.path == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise InputError("cannot read standard input (-): it is closed; expected JSONL documents on it")
        raw: BinaryIO = sys.stdin.buffer
    else:
        raw = open(source.path, "rb")
    return gzip.GzipFile(fileobj=raw) if source.gz else raw  # type: ignore[return-value]


#: What reading a damaged gzip (or file) raises: truncation, bad CRC, corrupt deflate data.
_READ_ERRORS = (OSError, EOFError, zlib.error)


def _decode(data: bytes) -> tuple[str | None, str | None]:
    """Text or an error reason: UTF-16 with a BOM; else NUL bytes mean binary; else strict
    UTF-8 (BOM removed)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), None
        except UnicodeDecodeError as exc:
            return None, f"not valid UTF-16 (it starts with a UTF-16 byte order mark): bad bytes at offset {exc.start}"
    nul = data.find(b"\x00")
    if nul >= 0:
        return None, f"binary content: NUL byte at offset {nul}; expected UTF-8 text"
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8: byte {data[exc.start]:#04x} at offset {exc.start}; expected UTF-8 text"


def read_documents(sources: Sequence[Source], start_index: int = 0) -> Iterator[Document]:
    """Stream documents from the sources, in order; a repeated id gets a warning."""
    index = start_index
    seen: dict[bytes, int] = {}  # digest of an id -> its first document's index
    for source in sources:
        for doc in _read_source(source, index):
            key = hashlib.blake2b(doc.id.encode("utf-8", "surrogatepass"), digest_size=12).digest()
            first = seen.setdefault(key, doc.index)
            if first != doc.index and doc.warning is None:
                doc.warning = f"duplicate id: document {first} has the same id"
            doc.id, doc.source = safe_id(doc.id), safe_id(doc.source)
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
            except _READ_ERRORS as exc:  # a truncated or corrupt gzip
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
            except RecursionError:
                yield Document(index, where, where, error=f"line {lineno}: JSON nested too deeply to read")
                index += 1
                continue
            yield _jsonl_document(obj, index, where, lineno)
            index += 1
    except _READ_ERRORS as exc:
        where = f"{name}:{lineno + 1}"
        yield Document(index, where, where, error=f"cannot read past line {lineno}: {exc}")


def _jsonl_document(obj, index: int, where: str, lineno: int) -> Document:
    if not isinstance(obj, dict):
        return Document(index, where, where, error=f"line {lineno}: expected a JSON object with 'text' or 'tokens', found {type(obj).__name__}")
    doc_id = obj.get("id", where)
    doc_id = doc_id if isinstance(doc_id, str) else json.dumps(doc_id)
    if isinstance(obj.get("text"), str):
        bad = _bad_unicode(obj["text"])
        if bad is not None:
            return Document(index, doc_id, where, error=f"line {lineno}: 'text' holds a lone surrogate at character {bad}; expected valid Unicode")
        return Document(index, doc_id, where, text=obj["text"])
    tokens = obj.get("tokens")
    if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        bad = [i for i, t in enumerate(tokens) if not t.strip() or any(c.isspace() for c in t)]
        if bad:
            return Document(index, doc_id, where, error=f"line {lineno}: token {bad[0]} is empty or contains whitespace; expected words")
        bad = [i for i, t in enumerate(tokens) if _bad_unicode(t) is not None]
        if bad:
            return Document(index, doc_id, where, error=f"line {lineno}: token {bad[0]} holds a lone surrogate; expected valid Unicode")
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
        current.append(fields[0])  # the token; tags and labels after it are ignored
    if current:
        sections[-1].append(current)
    for k, sents in enumerate(sections):
        doc_id = name if len(sections) == 1 else f"{name}#{k + 1}"
        yield Document(index + k, doc_id, name, sentences=sents)
