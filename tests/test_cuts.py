"""Same entities however the corpus is cut: shards, token budget, batch cap, workers, resume.

For every variant that claims it (``BATCH_INDEPENDENT``: fp32, opt, int8), one corpus of mixed
lengths (pre-tokenized documents longer than three windows, multi-sentence text, one-word
documents) is tagged under several cuts; labels and entities must be identical and scores
equal within 1e-4 (they are printed with 4 decimals).
"""

from __future__ import annotations

import json
import random

import pytest

from conftest import interrupt_after_first_shard

from ner_batch.pipeline.run import tag_corpus
from ner_batch.runtime.bundle import BATCH_INDEPENDENT

WORDS = ("APT28 used X-Agent against targets in Eastern Europe . The Lazarus Group deployed Poison Ivy "
         "and a new Manuscrypt backdoor through spear-phishing emails in 2017 , abusing CVE-2017-11882 .").split()

CUTS = {
    "shard-docs 1": dict(shard_docs=1),
    "shard-docs 7": dict(shard_docs=7),
    "token-budget 128": dict(token_budget=128),
    "max-batch 1": dict(max_batch=1),
    "workers 2": dict(workers=2, shard_docs=5),
}


def make_corpus(path, encoder_budget=62):
    rng = random.Random(4)
    docs = []
    for i in range(24):
        kind = i % 4
        if kind == 0:  # one pre-tokenized document far longer than three windows
            n = rng.randint(150, 260)
            docs.append({"id": f"long{i}", "tokens": [WORDS[(i + k) % len(WORDS)] for k in range(n)]})
        elif kind == 1:  # raw text, several sentences, and a run without sentence ends
            text = " ".join(WORDS[: rng.randint(5, len(WORDS))]) + " " + " ".join(WORDS * 3).replace(" .", "")
            docs.append({"id": f"text{i}", "text": text})
        elif kind == 2:
            docs.append({"id": f"short{i}", "tokens": WORDS[i % 7 : i % 7 + rng.randint(1, 12)]})
        else:
            docs.append({"id": f"one{i}", "text": WORDS[i % len(WORDS)]})
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return docs


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def same_output(ref, got, cut):
    assert len(ref) == len(got), cut
    for a, b in zip(ref, got):
        assert a["id"] == b["id"], cut
        key = lambda e: {k: v for k, v in e.items() if k != "score"}  # noqa: E731
        assert [key(e) for e in a["entities"]] == [key(e) for e in b["entities"]], (cut, a["id"])
        for ea, eb in zip(a["entities"], b["entities"]):
            assert abs(ea["score"] - eb["score"]) <= 1e-4 + 1e-12, (cut, a["id"], ea, eb)


def test_the_claim_is_what_the_docs_say():
    assert BATCH_INDEPENDENT == ("fp32", "opt", "int8")


@pytest.mark.parametrize("head", ["crf", "softmax"])
@pytest.mark.parametrize("variant", BATCH_INDEPENDENT)
def test_same_entities_under_every_cut(tmp_path, tiny_bundles, monkeypatch, variant, head):
    bundle = str(tiny_bundles[head][0])
    corpus = tmp_path / "corpus.jsonl"
    make_corpus(corpus)
    quiet = dict(progress=False, say=lambda m: None, variant=variant, device="cpu")
    ref_path = tmp_path / "ref.jsonl"
    tag_corpus([str(corpus)], bundle, ref_path, **quiet)
    ref = read(ref_path)
    assert sum(len(r["entities"]) for r in ref) > 20  # the random tiny model tags plenty
    assert any(r["counts"]["word_pieces"] > 3 * 64 for r in ref)  # documents longer than three windows
    for cut, kw in CUTS.items():
        out = tmp_path / f"{cut.replace(' ', '-')}.jsonl"
        tag_corpus([str(corpus)], bundle, out, **quiet, **kw)
        same_output(ref, read(out), cut)
    # interrupted after its first shard, then resumed
    out = tmp_path / "resumed.jsonl"
    interrupt_after_first_shard(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        tag_corpus([str(corpus)], bundle, out, shard_docs=4, **quiet)
    summary = tag_corpus([str(corpus)], bundle, out, shard_docs=4, resume=True, **quiet)
    assert summary.resumed_shards == 1
    same_output(ref, read(out), "interrupted and resumed")
