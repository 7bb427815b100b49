"""Words -> word pieces -> model windows, shared by training, export and the runtime.

Torch-free (uses the ``tokenizers`` library only), so the tagger and the trainer see
exactly the same input ids and the same first-sub-word positions.

A *window* is a run of whole words whose word pieces, plus the tokenizer's special
tokens, fit in ``max_length``. A sentence longer than that is covered by overlapping
windows (consecutive ones share about ``overlap`` word pieces), and each word *belongs* to
the window where it sits farthest from an edge, so every word's emission is computed with
context on both sides: no word is ever dropped and no window border shows. A single word
with more pieces than fit in a window keeps its first pieces (only the first one is labelled).

*Shape markers* (``shape_markers=True``) give an uncased tokenizer the case it throws away:
a word that is Capitalized, ALL-CAPS, mIxed, or mixes letters and digits gets one extra
piece after its own, a vocabulary token the pre-trained model never used (``[unused1]`` ..
``[unused4]``, see :func:`word_shape`); lower-case words, numbers and punctuation get none.
The first piece, whose emission labels the word, is the word's own.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"
SHAPE_MARKERS = ("[unused1]", "[unused2]", "[unused3]", "[unused4]")  # Capitalized, ALLCAPS, mIxed, letters+digits
#: How a model makes a word's vector of its pieces' states (models/tagger.py ``pool_words``): the first piece's
#: (``word_index``), the last piece's, or their mean; a window holds whole words, so each word's pieces run from
#: its ``word_index`` to the next word's, or to the special pieces after the window's last word.
WORD_POOLINGS = ("first", "last", "mean")


def word_shape(word: str) -> int:
    """0: no marker (lower case, numbers, punctuation); 1: Capitalized; 2: ALL-CAPS (two or
    more letters); 3: mixed case otherwise (PowerShell, iOS); 4: letters and digits (APT28, x64)."""
    letters = [c for c in word if c.isalpha()]
    if not letters or not any(c.isupper() for c in letters):
        return 4 if letters and any(c.isdigit() for c in word) else 0
    if any(c.isdigit() for c in word):
        return 4
    if len(letters) >= 2 and all(c.isupper() for c in letters):
        return 2
    if letters[0].isupper() and not any(c.isupper() for c in letters[1:]):
        return 1
    return 3


@dataclasses.dataclass
class Window:
    """One model input: whole words ``[word_start, word_end)`` of sentence ``sentence``."""

    sentence: int
    word_start: int
    word_end: int
    input_ids: list[int]
    word_index: list[int]  # position of each word's first piece in input_ids
    own_start: int = -1  # words [own_start, own_end) take their emissions from this window
    own_end: int = -1

    def __post_init__(self) -> None:
        if self.own_start < 0:
            self.own_start, self.own_end = self.word_start, self.word_end

    @property
    def n_words(self) -> int:
        return self.word_end - self.word_start

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


@dataclasses.dataclass
class Batch:
    """Padded NumPy arrays for a list of windows (the ONNX graph's inputs)."""

    input_ids: np.ndarray  # shape: (B, T) int64
    attention_mask: np.ndarray  # shape: (B, T) int64
    word_index: np.ndarray  # shape: (B, W) int64, 0 where padded
    word_mask: np.ndarray  # shape: (B, W) int64, 1 for real words
    windows: list[Window]

    def inputs(self) -> dict[str, np.ndarray]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "word_index": self.word_index,
            "word_mask": self.word_mask,
        }

    @property
    def padding_ratio(self) -> float:
        """Share of padded token positions in this batch."""
        return 1.0 - float(self.attention_mask.sum()) / max(1, self.attention_mask.size)


class Windower:
    """Turns pre-split words into windows of word-piece ids with first-piece positions.

    Named for what it makes: in this package ``encoder`` is only ever the transformer (a
    WordTagger's HF model), and ``encoder_config`` its HF config.
    """

    def __init__(self, tokenizer: Tokenizer, max_length: int = 256, overlap: int | None = None, *,
                 shape_markers: bool = False):
        self.pad_id = _pad_id(tokenizer)
        self.shape_markers = bool(shape_markers)
        self.marker_ids: list[int] = []
        if self.shape_markers:
            found = [tokenizer.token_to_id(m) for m in SHAPE_MARKERS]
            if any(i is None for i in found):
                missing = [m for m, i in zip(SHAPE_MARKERS, found) if i is None]
                raise ValueError(f"shape markers: expected {', '.join(SHAPE_MARKERS)} in the tokenizer's vocabulary, "
                                 f"found no {', '.join(missing)}; train without --shape-markers (a cased backbone sees case anyway)")
            self.marker_ids = [int(i) for i in found]
        tokenizer = Tokenizer.from_str(tokenizer.to_str())  # private copy: no padding, no truncation
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        plain = tokenizer.encode(["a"], is_pretokenized=True, add_special_tokens=False).ids
        full = tokenizer.encode(["a"], is_pretokenized=True, add_special_tokens=True).ids
        at = _find(full, plain)
        self.prefix = full[:at]
        self.suffix = full[at + len(plain) :]
        self.budget = self.max_length - len(self.prefix) - len(self.suffix)
        if self.budget < 1:
            raise ValueError(f"max_length {max_length} leaves no room for words after special tokens")
        self.unk_id = _special_id(tokenizer, ("[UNK]", "<unk>"), default=0)
        # Word pieces shared by consecutive windows of a long sentence: a word near a border
        # keeps at least about overlap / 2 pieces of context on its short side.
        self.overlap = self.budget // 4 if overlap is None else int(overlap)
        if not 0 <= self.overlap <= self.budget // 2:
            raise ValueError(f"expected an overlap of 0..{self.budget // 2} word pieces (half a window), got {overlap}")

    @classmethod
    def from_dir(cls, directory: str | Path, max_length: int = 256, *, shape_markers: bool = False) -> "Windower":
        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"expected a tokenizer at {path}, found no {TOKENIZER_FILE}")
        return cls(Tokenizer.from_file(str(path)), max_length, shape_markers=shape_markers)

    def word_pieces(self, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
        """Word-piece ids per word per sentence; a word with no pieces gets ``[UNK]``; with
        shape markers, a marked word's marker follows its pieces."""
        out: list[list[list[int]]] = []
        encodings = self.tokenizer.encode_batch(
            [list(s) for s in sentences], is_pretokenized=True, add_special_tokens=False
        )
        for words, enc in zip(sentences, encodings):
            pieces: list[list[int]] = [[] for _ in words]
            for tid, wid in zip(enc.ids, enc.word_ids):
                if wid is not None:
                    pieces[wid].append(tid)
            for p in pieces:
                if not p:
                    p.append(self.unk_id)
            if self.shape_markers:
                for word, p in zip(words, pieces):
                    shape = word_shape(word)
                    if shape:
                        p.append(self.marker_ids[shape - 1])
            out.append(pieces)
        return out

    def windows(self, sentences: Sequence[Sequence[str]], neighbours: int = 0) -> list[Window]:
        """All windows of all sentences, in order (sentence, then word position).

        With ``neighbours > 0`` the sentences are read as consecutive text: a sentence that
        fits in one window also gets up to ``neighbours`` word pieces of whole words from the
        sentences before it and as many from those after it (fewer when the window is full),
        which it does not own; its window's ``word_start`` is then negative (words before the
        sentence) and ``word_end`` beyond its length. A longer sentence is split as usual.
        """
        if neighbours < 0:
            raise ValueError(f"expected neighbours >= 0 word pieces, got {neighbours}")
        all_pieces = self.word_pieces(sentences)
        if not neighbours:
            return [w for si, pieces in enumerate(all_pieces) for w in self.split(si, pieces)]
        result: list[Window] = []
        for si, pieces in enumerate(all_pieces):
            size = sum(len(p) for p in pieces)
            if size > self.budget or not pieces:
                result.extend(self.split(si, pieces))
                continue
            room = min(neighbours, (self.budget - size) // 2)  # so that all of it fits in one window
            before = _edge_words((all_pieces[j] for j in range(si - 1, -1, -1)), room, reverse=True)  # nearest first
            after = _edge_words((all_pieces[j] for j in range(si + 1, len(all_pieces))), room, reverse=False)
            w = self.window(si, 0, [*before, *pieces, *after], self.budget)
            result.append(dataclasses.replace(w, word_start=-len(before), word_end=len(pieces) + len(after),
                                              own_start=0, own_end=len(pieces)))
        return result

    def split(self, sentence: int, pieces: Sequence[Sequence[int]]) -> list[Window]:
        """Cover one sentence's words with overlapping windows, and say which window each word
        belongs to.

        Each window is filled with whole words up to the budget; the next one starts so that
        it repeats the last ``overlap`` word pieces (whole words, at least one word of
        progress). A word belongs to the window where its distance to the nearest window
        edge, in word pieces, is largest (the sentence's own ends are no edges; ties go to
        the earlier window), so owned ranges are contiguous and split each overlap near
        its middle.
        """
        n = len(pieces)
        windows: list[Window] = []
        start = 0
        while start < n:
            w = self.window(sentence, start, pieces, self.budget)
            windows.append(w)
            if w.word_end >= n:
                break
            nxt, shared = w.word_end, 0
            while nxt - 1 > w.word_start and shared + min(len(pieces[nxt - 1]), self.budget) <= self.overlap:
                nxt -= 1
                shared += min(len(pieces[nxt]), self.budget)
            start = nxt
        if len(windows) > 1:
            _assign_owners(windows, n, len(self.prefix), len(self.suffix))
        return windows

    def window(self, sentence: int, start: int, pieces: Sequence[Sequence[int]], limit: int, stop: int | None = None) -> Window:
        """The window of whole words ``pieces[start:stop]`` from ``start`` on, holding at most
        ``limit`` word pieces (``<= budget``) and at least one word (cut to its first pieces
        if it alone is longer than the budget)."""
        limit = min(limit, self.budget)
        stop = len(pieces) if stop is None else stop
        ids = list(self.prefix)
        index: list[int] = []
        end = start
        while end < stop:
            p = pieces[end]
            if len(ids) - len(self.prefix) + len(p) > limit:
                if end != start:
                    break
                p = p[: self.budget]  # one word longer than a window: keep its first pieces
            index.append(len(ids))
            ids.extend(p)
            end += 1
        ids.extend(self.suffix)
        return Window(sentence, start, end, ids, index)

    def collate(self, windows: Sequence[Window]) -> Batch:
        """Pad windows into a :class:`Batch` (right padding)."""
        b = len(windows)
        t = max(w.n_tokens for w in windows)
        nw = max(w.n_words for w in windows)
        input_ids = np.full((b, t), self.pad_id, dtype=np.int64)  # shape: (B, T)
        attention = np.zeros((b, t), dtype=np.int64)  # shape: (B, T)
        word_index = np.zeros((b, nw), dtype=np.int64)  # shape: (B, W)
        word_mask = np.zeros((b, nw), dtype=np.int64)  # shape: (B, W)
        for i, w in enumerate(windows):
            input_ids[i, : w.n_tokens] = w.input_ids
            attention[i, : w.n_tokens] = 1
            word_index[i, : w.n_words] = w.word_index
            word_mask[i, : w.n_words] = 1
        return Batch(input_ids, attention, word_index, word_mask, list(windows))


def _edge_words(sentences: Iterable[Sequence[Sequence[int]]], limit: int, *, reverse: bool) -> list[Sequence[int]]:
    """Whole words' pieces next to a sentence, at most ``limit`` pieces in all: from the start of
    ``sentences`` (the following ones), or with ``reverse`` from the end of each (the preceding
    ones, nearest first); returned in reading order. Reads only as many sentences as it needs."""
    taken: list[Sequence[int]] = []
    used = 0
    for p in (p for pieces in sentences for p in (reversed(pieces) if reverse else pieces)):
        if used + len(p) > limit:
            break
        taken.append(p)
        used += len(p)
    return taken[::-1] if reverse else taken


def _assign_owners(windows: Sequence[Window], n: int, n_prefix: int, n_suffix: int) -> None:
    """Set each window's owned word range: every word goes to the window where it is farthest
    (in word pieces) from an edge that is not an end of the sentence."""
    best = np.full(n, -1.0)  # shape: (n,)
    owner = np.zeros(n, dtype=np.int64)  # shape: (n,)
    for k, w in enumerate(windows):
        first = np.asarray(w.word_index, dtype=np.float64) - n_prefix  # shape: (n_words,)
        content = w.n_tokens - n_prefix - n_suffix
        after = content - np.append(first[1:], content)  # pieces after each word, in this window
        left = np.full_like(first, np.inf) if w.word_start == 0 else first
        right = np.full_like(after, np.inf) if w.word_end == n else after
        dist = np.minimum(left, right)
        span = slice(w.word_start, w.word_end)
        better = dist > best[span]
        best[span] = np.where(better, dist, best[span])
        owner[span] = np.where(better, k, owner[span])
    for k, w in enumerate(windows):
        own = np.flatnonzero(owner == k)
        if len(own) == 0:  # a window that only repeats words others hold better (very long words)
            w.own_start = w.own_end = w.word_start
            continue
        w.own_start, w.own_end = int(own[0]), int(own[-1]) + 1
        if w.own_end - w.own_start != len(own):
            raise AssertionError(f"window {k} of a sentence owns non-contiguous words {own.tolist()}")


def _find(haystack: list[int], needle: list[int]) -> int:
    for i in range(len(haystack) - len(needle) + 1):
        if haystack[i : i + len(needle)] == needle:
            return i
    raise ValueError("tokenizer's special-token template does not contain the plain encoding")


def _special_id(tokenizer: Tokenizer, names: Sequence[str], default: int) -> int:
    for name in names:
        tid = tokenizer.token_to_id(name)
        if tid is not None:
            return tid
    return default


def _pad_id(tokenizer: Tokenizer) -> int:
    try:
        cfg = json.loads(tokenizer.to_str()).get("padding") or {}
        if "pad_id" in cfg:
            return int(cfg["pad_id"])
    except (ValueError, TypeError):
        pass
    return _special_id(tokenizer, ("[PAD]", "<pad>"), default=0)
