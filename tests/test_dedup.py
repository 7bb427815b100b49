"""--dedup: repeated training sentences kept once, labelled as most of their copies."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import DNRTI, make_tiny_model, save_tiny_backbone, tiny_sentences, write_tiny_data
from ner_batch.cli import main
from ner_batch.data.conll import Sentence
from ner_batch.data.dedup import unique_sentences
from ner_batch.training.trainer import TrainSettings, train


def _s(text: str, labels: str, line: int = 0) -> Sentence:
    return Sentence(text.split(), labels.split(), file="train.txt", line=line)


def test_each_distinct_sentence_is_kept_once_in_first_seen_order_with_its_copies_most_common_labels():
    sentences = [
        _s("APT28 used X-Agent", "B-HackOrg O B-Tool", line=1),
        _s("Carbanak stole money", "B-HackOrg O O", line=5),
        _s("APT28 used X-Agent", "B-HackOrg O O", line=9),  # a copy labelled differently
        _s("Turla used Snake", "B-HackOrg O B-Tool", line=13),
        _s("APT28 used X-Agent", "B-HackOrg O O", line=17),
        _s("Carbanak stole money", "B-Tool O O", line=21),  # a tie: the first copy's labels stay
    ]
    kept, report = unique_sentences(sentences)
    assert [(" ".join(s.tokens), " ".join(s.labels), s.line) for s in kept] == [
        ("APT28 used X-Agent", "B-HackOrg O O", 1),
        ("Carbanak stole money", "B-HackOrg O O", 5),
        ("Turla used Snake", "B-HackOrg O B-Tool", 13),
    ]
    assert (report.sentences, report.kept, report.relabelled) == (6, 3, 2)
    assert report.summary() == ("6 sentences -> 3 distinct (3 repeated copies dropped; 2 had copies labelled "
                                "differently, the most common labelling kept)")
    assert sentences[0].labels == ["B-HackOrg", "O", "B-Tool"]  # the input is left as it was


def test_no_repeats_and_no_sentences_are_said_plainly():
    kept, report = unique_sentences(tiny_sentences())
    assert [s.tokens for s in kept] == [s.tokens for s in tiny_sentences()]
    assert report.summary() == f"{len(kept)} sentences, none repeated"
    assert unique_sentences([])[1].summary() == "0 sentences, none repeated"


def test_training_with_dedup_trains_on_the_distinct_sentences_and_says_so(tmp_path, tokenizer):
    n = len(tiny_sentences())
    splits = {"train": tiny_sentences() * 4, "valid": tiny_sentences(), "test": tiny_sentences()}
    logs = {}
    for dedup in (False, True):
        log: list[str] = []
        train(TrainSettings(head="crf", epochs=1, batch_size=2, warmup=0.0, dedup=dedup), tmp_path / f"run-{dedup}",
              model=make_tiny_model("crf"), tokenizer=tokenizer, splits=splits, progress=False, log=log.append)
        logs[dedup] = "\n".join(log)
    assert f"[train] --dedup: {4 * n} sentences -> {n} distinct ({3 * n} repeated copies dropped; 0 had copies" in logs[True]
    assert f"training crf on {n} sentences" in logs[True] and f"training crf on {4 * n} sentences" in logs[False]
    assert "--dedup" not in logs[False]
    assert json.loads((tmp_path / "run-True" / "metrics.json").read_text())["settings"]["dedup"] is True


def test_the_cli_flag_reaches_the_settings_and_its_help_says_what_it_does(tmp_path, tokenizer):
    res = CliRunner().invoke(main, ["train", "--help"])
    assert "--dedup" in res.output and "once per epoch" in " ".join(res.output.split())
    data = write_tiny_data(tmp_path / "data")  # each split: the tiny sentences, none repeated
    res = CliRunner().invoke(main, ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--dedup", "--epochs", "1",
                                    "--backbone", str(save_tiny_backbone(tmp_path / "tiny-bert", tokenizer)), "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert f"[train] --dedup: {len(tiny_sentences())} sentences, none repeated" in res.output
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["settings"]["dedup"] is True


def test_dnrti_train_repeats_sentences():
    from ner_batch.data.dnrti import load_split

    if not (DNRTI / "train.txt").is_file():
        pytest.skip(f"DNRTI not at {DNRTI}")
    sentences, _ = load_split(DNRTI, "train")
    kept, report = unique_sentences(sentences)
    assert (report.sentences, report.kept) == (5251, 3885) and report.relabelled == 17
    assert len({tuple(s.tokens) for s in kept}) == len(kept)
