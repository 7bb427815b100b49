"""The CoNLL reader: every quirk of the published DNRTI files, on small fixtures."""

from __future__ import annotations

import pytest

from conftest import DNRTI
from ner_batch.data.conll import ConllFormatError, label_list, parse_conll, read_conll


def kinds(report):
    return report.counts()


def test_clean_file_needs_no_repair():
    sents, report = parse_conll("APT28 B-HackOrg\nused O\n\nIt O\nworks O\n")
    assert [s.tokens for s in sents] == [["APT28", "used"], ["It", "works"]]
    assert [s.labels for s in sents] == [["B-HackOrg", "O"], ["O", "O"]]
    assert report.repairs == []
    assert (sents[0].line, sents[1].line) == (1, 4)


def test_crlf_and_missing_final_newline():
    sents, report = parse_conll("a O\r\nb B-Tool\r\n\r\nc O", file="f.txt")
    assert [s.tokens for s in sents] == [["a", "b"], ["c"]]
    assert kinds(report) == {"crlf": 3, "no-final-newline": 1}
    last = [r for r in report.repairs if r.kind == "no-final-newline"][0]
    assert (last.file, last.line) == ("f.txt", 4)


def test_tag_only_lines_are_dropped_with_line_numbers():
    sents, report = parse_conll("a O\nO\n O\nb O\n")
    assert sents[0].tokens == ["a", "b"]
    dropped = [r for r in report.repairs if r.kind == "tag-only"]
    assert [(r.line, r.action) for r in dropped] == [(2, "dropped"), (3, "dropped")]


def test_merged_tokens_are_split_and_keep_the_label():
    sents, report = parse_conll("computers. In O\nPoison Ivy B-Tool\nx O\n")
    assert sents[0].tokens == ["computers.", "In", "Poison", "Ivy", "x"]
    assert sents[0].labels == ["O", "O", "B-Tool", "I-Tool", "O"]
    assert [r.line for r in report.repairs if r.kind == "merged-tokens"] == [1, 2]


def test_tabs_runs_of_spaces_and_trailing_spaces():
    sents, report = parse_conll("a\tO\nb   B-Tool\nc O  \nd \t O\n")
    assert sents[0].tokens == ["a", "b", "c", "d"]
    assert sents[0].labels == ["O", "B-Tool", "O", "O"]
    counts = kinds(report)
    assert counts["separator"] == 2  # lines 2 and 4; a single tab is a clean separator
    assert counts["trailing-space"] == 1


def test_repeated_blank_lines_collapse():
    sents, report = parse_conll("a O\n\n\n\nb O\n")
    assert len(sents) == 2
    assert [r.line for r in report.repairs if r.kind == "repeated-blank"] == [3]


def test_orphan_inside_becomes_begin():
    sents, report = parse_conll("a O\nb I-Tool\nc I-Tool\nd B-Area\ne I-Tool\n")
    assert sents[0].labels == ["O", "B-Tool", "I-Tool", "B-Area", "B-Tool"]
    assert [r.line for r in report.repairs if r.kind == "orphan-inside"] == [2, 5]


def test_sentence_start_orphan():
    sents, _ = parse_conll("a I-Tool\n")
    assert sents[0].labels == ["B-Tool"]


def test_bad_label_is_an_error_naming_file_and_line():
    with pytest.raises(ConllFormatError, match=r"f\.txt:2: expected a BIO label .* found 'X-Tool'"):
        parse_conll("a O\nb X-Tool\n", file="f.txt")
    with pytest.raises(ConllFormatError, match=r"f\.txt:1: expected 'token label', found a single field 'word'"):
        parse_conll("word\n", file="f.txt")
    with pytest.raises(ConllFormatError, match=r"expected one of the 3 known labels as the last field, found 'B-Exp'"):
        parse_conll("a B-Exp\n", label_set=["O", "B-Tool", "I-Tool"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("a O\r\n", r"f\.txt:1: crlf: 1 lines end in CRLF"),
        ("a O", r"f\.txt:1: no-final-newline"),
        ("a O\nO\n", r"f\.txt:2: tag-only: label 'O' with no token"),
        ("a O\nx. In O\n", r"f\.txt:2: merged-tokens"),
        ("a   O\n", r"f\.txt:1: separator"),
        ("a O \n", r"f\.txt:1: trailing-space"),
        ("a O\n\n\nb O\n", r"f\.txt:3: repeated-blank"),
        ("a O\nb I-Tool\n", r"f\.txt:2: orphan-inside: I-Tool follows O"),
    ],
)
def test_strict_mode_turns_each_repair_into_an_error(text, message):
    with pytest.raises(ConllFormatError, match=message + r".*strict mode"):
        parse_conll(text, file="f.txt", strict=True)


def test_undecodable_file(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"a O\n\xff\xfe O\n")
    with pytest.raises(ConllFormatError, match=r"bad\.txt:2: expected UTF-8 text, found byte 0xff"):
        read_conll(path)
    with pytest.raises(FileNotFoundError, match="expected a CoNLL file at"):
        read_conll(tmp_path / "missing.txt")


def test_report_summary_lists_lines():
    _, report = parse_conll("a O\nO\nb O\nO\n", file="x/t.txt")
    assert "tag-only: 2 [dropped] at t.txt:2, t.txt:4" in report.summary()


def test_label_list_orders_o_then_types():
    sents, _ = parse_conll("a B-Tool\nb I-Tool\nc B-Area\n")
    assert label_list([sents]) == ["O", "B-Area", "I-Area", "B-Tool", "I-Tool"]


@pytest.mark.skipif(not (DNRTI / "train.txt").is_file(), reason="DNRTI not at ../shared/data/dnrti")
@pytest.mark.parametrize("split, n_sent, n_tag_only, n_merged", [("train", 5251, 179, 3), ("valid", 662, 7, 2), ("test", 664, 16, 1)])
def test_published_dnrti_counts(split, n_sent, n_tag_only, n_merged):
    sents, report = read_conll(DNRTI / f"{split}.txt")
    counts = report.counts()
    assert len(sents) == n_sent
    assert counts["tag-only"] == n_tag_only
    assert counts["merged-tokens"] == n_merged
    assert counts["no-final-newline"] == 1
    assert counts["crlf"] > 0
    assert len(label_list([sents])) == 27
    with pytest.raises(ConllFormatError, match=rf"{split}\.txt:1: crlf"):
        read_conll(DNRTI / f"{split}.txt", strict=True)
