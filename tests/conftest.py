"""Shared fixtures: a tiny random encoder with the packaged MiniLM tokenizer, and tiny data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DNRTI = Path(os.environ.get("NER_BATCH_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dnrti"))

LABELS = ["O", "B-Area", "I-Area", "B-HackOrg", "I-HackOrg", "B-Tool", "I-Tool"]

TINY_SENTENCES = [
    (["APT28", "used", "X-Agent", "against", "targets", "in", "Eastern", "Europe", "."],
     ["B-HackOrg", "O", "B-Tool", "O", "O", "O", "B-Area", "I-Area", "O"]),
    (["The", "Lazarus", "Group", "deployed", "Poison", "Ivy", "."],
     ["O", "B-HackOrg", "I-HackOrg", "O", "B-Tool", "I-Tool", "O"]),
]


def tiny_encoder_config() -> dict:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    ).to_dict()


@pytest.fixture(scope="session")
def tokenizer():
    from ner_batch.models.backbone import load_tokenizer

    return load_tokenizer("minilm")


@pytest.fixture(scope="session")
def windower(tokenizer):
    from ner_batch.encoding import Windower

    return Windower(tokenizer.backend_tokenizer, 64)


def make_tiny_model(head: str, *, seed: int = 0, bidirectional: bool = True, max_length: int = 64, dropout: float = 0.0,
                    lstm_hidden: int = 16, word_pooling: str = "first", shape_markers: bool = False):
    import torch

    from ner_batch.models import TaggerConfig, build_model

    torch.manual_seed(seed)
    config = TaggerConfig(head=head, labels=LABELS, backbone="tiny", max_length=max_length, dropout=dropout,
                          lstm_hidden=lstm_hidden, lstm_bidirectional=bidirectional, encoder_config=tiny_encoder_config(),
                          word_pooling=word_pooling, shape_markers=shape_markers)
    return build_model(config, pretrained=False).eval()


def save_tiny_backbone(directory: Path, tokenizer) -> Path:
    """A random 2-layer, 32-wide BERT with the packaged MiniLM tokenizer, saved as a checkpoint for ``--backbone``."""
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(**tiny_encoder_config())).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def tiny_model_factory():
    return make_tiny_model


def write_tiny_data(directory: Path, sentences=TINY_SENTENCES) -> Path:
    """``directory``/{train,valid,test}.txt, each holding ``sentences`` as CoNLL lines (word, space, tag)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = "\n\n".join("\n".join(f"{t} {lab}" for t, lab in zip(toks, labs)) for toks, labs in sentences) + "\n"
    for split in ("train", "valid", "test"):
        (directory / f"{split}.txt").write_text(text)
    return directory


def tiny_sentences():
    from ner_batch.data.conll import Sentence

    return [Sentence(list(t), list(l)) for t, l in TINY_SENTENCES]


OTHER_SENTENCE = (["Sofacy", "used", "Zebrocy", "against", "Europe", "."], ["B-HackOrg", "O", "B-Tool", "O", "B-Area", "O"])


def tiny_splits() -> dict:
    """train / valid / test from the tiny sentences: valid has one sentence train lacks."""
    from ner_batch.data.conll import Sentence

    sents, other = tiny_sentences(), Sentence(*map(list, OTHER_SENTENCE))
    return {"train": sents * 4, "valid": sents + [other], "test": [other]}


def train_tiny_runs(tmp_path, tokenizer, data_seeds=(1, 2, 3), head="softmax", seed=13) -> list:
    """Finished tiny training runs from the same initial weights, one per data seed."""
    from ner_batch.training.trainer import TrainSettings, train

    runs = []
    for ds in data_seeds:
        settings = TrainSettings(head=head, epochs=2, lr=3e-3, head_lr=3e-3, batch_size=2, seed=seed, data_seed=ds, dropout=0.3)
        out = tmp_path / f"{head}-s{seed}-d{ds}"
        train(settings, out, model=make_tiny_model(head, seed=0, dropout=0.3), tokenizer=tokenizer, splits=tiny_splits(),
              progress=False, log=lambda _: None)
        runs.append(out)
    return runs


CHECK_SENTENCES = [s for s, _ in TINY_SENTENCES] + [
    "Kaspersky researchers attributed the campaign to a Chinese-speaking actor .".split(),
    ("In 2017 the group abused CVE-2017-11882 in Microsoft Office documents to drop a PowerShell loader "
     "and a Cobalt Strike beacon on machines of banks in South Korea and Japan .").split(),
    ["Hi"],
    "Sofacy sent spear-phishing emails".split(),
]


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory, tokenizer):
    """Bundles exported in this session from tiny random models of both heads, with those models."""
    from ner_batch.export.build import build_bundle

    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for head in ("softmax", "crf"):
        model = make_tiny_model(head, seed=7)
        sents = tiny_sentences()
        manifest = build_bundle(root / f"run-{head}", root / head, model=model, tokenizer=tokenizer,
                                check_sentences=CHECK_SENTENCES, eval_split=("tiny", sents, [True, False]), log=lambda m: None)
        out[head] = (root / head, model, manifest)
    return out


def interrupt_after_first_shard(monkeypatch):
    """Make the next `tag` run stop (as Ctrl-C would) right after its first shard is recorded."""
    from ner_batch.pipeline.shards import WorkDir

    original = WorkDir.mark_done

    def mark_done(self, stats):
        original(self, stats)
        monkeypatch.setattr(WorkDir, "mark_done", original)
        raise KeyboardInterrupt

    monkeypatch.setattr(WorkDir, "mark_done", mark_done)
