"""Sentence and word splitting with exact character offsets."""

from __future__ import annotations

import pytest

from ner_batch.segment import sentences, split_document, trim_span, words

TEXT = (
    "APT28 (a.k.a. Sofacy) used X-Agent, e.g. against the U.S. Government. It abused CVE-2017-11882 "
    "to drop C:\\Windows\\temp\\x.dll from hxxp://evil[.]com/a.php; the C2 was 192.168.1.1:443.\n"
    "He said \"done.\" Then 3.5 percent left! Really? yes.\n\nNew paragraph 😀 中文 admin@338 ok"
)


def test_offsets_are_exact_and_ordered():
    words_, spans = split_document(TEXT)
    flat = [sp for sent in spans for sp in sent]
    assert all(TEXT[s:e] == w for sent_w, sent_s in zip(words_, spans) for w, (s, e) in zip(sent_w, sent_s))
    assert all(a[1] <= b[0] for a, b in zip(flat, flat[1:]))
    # Every non-space character is inside exactly one word.
    covered = sum(e - s for s, e in flat)
    assert covered == sum(1 for c in TEXT if not c.isspace())


def test_sentence_boundaries():
    words_, _ = split_document(TEXT)
    firsts = [s[0] for s in words_]
    assert firsts == ["APT28", "It", "He", "Then", "Really", "New"]
    assert "CVE-2017-11882" in words_[1] and "192.168.1.1:443" in words_[1] and "C:\\Windows\\temp\\x.dll" in words_[1]
    assert words_[-1][-4:] == ["😀", "中文", "admin@338", "ok"]


def test_text_without_sentence_ends_stays_one_sentence_losing_nothing():
    # No cut here: the tagger's overlapping windows and decode segments handle any length.
    text = " ".join(f"w{i}" for i in range(1200))
    [sent] = sentences(text)
    assert len(sent) == 1200 and text[slice(*sent[-1])] == "w1199"


def test_empty_and_whitespace():
    assert sentences("") == []
    assert sentences(" \n\n\t ") == []
    assert words("a  b", 0) == [(0, 1), (3, 4)]


@pytest.mark.parametrize("text,kept", [
    ("(EternalBlue)", "EternalBlue"), ("APT28's", "APT28"), ("APT28 ' s", "APT28"), ("Lab’s", "Lab"), ("Intel®", "Intel"),
    ("U.S.", "U.S"), ("“Dark Hotel”", "Dark Hotel"), ("kids", "kids"), ("as", "as"), ("''", None), ("( )", None),
])
def test_trim_span_drops_edge_punctuation_and_a_final_possessive(text, kept):

    span = trim_span(text, 0, len(text))
    assert (None if span is None else text[span[0]:span[1]]) == kept
    pad = f"x {text} y"  # offsets inside a longer text
    span = trim_span(pad, 2, 2 + len(text))
    assert (None if span is None else pad[span[0]:span[1]]) == kept
