"""`ner-batch tag`: formats, offsets, bad input, order, workers, atomic output, kill and resume."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import interrupt_after_first_shard
from click.testing import CliRunner

from ner_batch.cli import main
from ner_batch.pipeline.run import tag_corpus

CTI = [
    "APT28 used X-Agent against government targets in Eastern Europe. The Lazarus Group deployed Poison Ivy.",
    "Kaspersky researchers attributed the campaign to a Chinese-speaking actor. It abused CVE-2017-11882 in 2017.",
    "Sofacy sent spear-phishing emails with a malicious Word document to banks in South Korea and Japan.",
]


@pytest.fixture
def bundle(tiny_bundles):
    return str(tiny_bundles["crf"][0])


def run_tag(args, **kw):
    return CliRunner().invoke(main, ["tag", *args], catch_exceptions=False, **kw)


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def check_offsets(rec, text):
    for ent in rec["entities"]:
        assert text[ent["start"] : ent["end"]] == ent["text"]
        assert 0.0 <= ent["score"] <= 1.0
        assert ent["label"] in {"Area", "HackOrg", "Tool"}


def make_corpus(root: Path, n: int = 12, repeat: int = 1) -> list[str]:
    texts = []
    for i in range(n):
        text = f"Report {i}. " + " ".join([CTI[i % 3]] * repeat) + (" 😀 中文 Ünïcode." if i % 4 == 0 else "")
        (root / f"doc{i:03d}.txt").write_text(text, encoding="utf-8")
        texts.append(text)
    return texts


def test_directory_of_text_files(tmp_path, bundle):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = make_corpus(corpus, 5)
    out = tmp_path / "tags.jsonl"
    summary_file = tmp_path / "summary.json"
    res = run_tag([str(corpus), "--bundle", bundle, "--out", str(out), "--summary-json", str(summary_file), "--variant", "fp32"])
    assert res.exit_code == 0, res.output
    recs = read_jsonl(out)
    assert [Path(r["id"]).name for r in recs] == [f"doc{i:03d}.txt" for i in range(5)]
    for rec, text in zip(recs, texts):
        check_offsets(rec, text)
        assert rec["counts"]["entities"] == len(rec["entities"])
        assert rec["counts"]["words"] > 0
    summary = json.loads(summary_file.read_text())
    assert summary["documents"] == 5 and summary["errors"] == 0
    assert summary["words"] == sum(r["counts"]["words"] for r in recs)
    assert 0.0 <= summary["padding_ratio"] < 1.0
    assert not (tmp_path / "tags.jsonl.parts").exists()


def test_jsonl_text_tokens_gzip_and_bad_lines(tmp_path, bundle):
    path = tmp_path / "in.jsonl.gz"
    lines = [
        json.dumps({"id": "a", "text": CTI[0]}),
        "{not json",
        json.dumps({"id": "b", "tokens": ["APT28", "used", "Mimikatz", "."]}),
        json.dumps({"id": 7, "body": "no text"}),
        json.dumps(["not", "an", "object"]),
    ]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    out = tmp_path / "out.jsonl"
    assert run_tag([str(path), "--bundle", bundle, "--out", str(out), "-q"]).exit_code == 0
    recs = read_jsonl(out)
    assert len(recs) == 5
    assert recs[0]["id"] == "a"
    check_offsets(recs[0], CTI[0])
    assert recs[1]["id"].endswith("in.jsonl.gz:2") and recs[1]["error"].startswith("line 2: invalid JSON")
    assert recs[2]["text"] == "APT28 used Mimikatz ." and recs[2]["counts"]["words"] == 4
    for ent in recs[2]["entities"]:
        assert 0 <= ent["token_start"] < ent["token_end"] <= 4
        check_offsets(recs[2], recs[2]["text"])
    assert recs[3]["id"] == "7" and "expected a string 'text' or a list of strings 'tokens'" in recs[3]["error"]
    assert "expected a JSON object" in recs[4]["error"]


def test_stdin_and_conll_in_and_out(tmp_path, bundle):
    out = tmp_path / "out.jsonl"
    res = run_tag(["-", "--bundle", bundle, "--out", str(out), "-q"], input=json.dumps({"id": "s", "text": CTI[1]}) + "\n")
    assert res.exit_code == 0
    assert read_jsonl(out)[0]["id"] == "s"

    conll = tmp_path / "x.conll"
    conll.write_text("-DOCSTART-\nAPT28 B-HackOrg\nused O\n\nX-Agent B-Tool\n-DOCSTART-\nSofacy\nagain\n")
    out2 = tmp_path / "out.conll"
    assert run_tag([str(conll), "--bundle", bundle, "--out", str(out2), "--output-format", "conll", "-q"]).exit_code == 0
    blocks = out2.read_text().split("# id = ")[1:]
    assert len(blocks) == 2
    rows = [line.split("\t") for line in blocks[0].splitlines()[1:] if line]
    assert [r[0] for r in rows] == ["APT28", "used", "X-Agent"]
    assert all(len(r) == 3 and 0 <= float(r[2]) <= 1 for r in rows)


def test_forced_input_format(tmp_path, bundle):
    path = tmp_path / "data.txt"
    path.write_text(json.dumps({"id": "forced", "text": "APT28 struck."}) + "\n")
    out = tmp_path / "o.jsonl"
    assert run_tag([str(path), "--bundle", bundle, "--out", str(out), "--input-format", "jsonl", "-q"]).exit_code == 0
    assert read_jsonl(out)[0]["id"] == "forced"


def test_bad_documents_give_error_records_never_silence(tmp_path, bundle):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a_empty.txt").write_bytes(b"")
    (corpus / "b_latin1.txt").write_bytes("caf\xe9 APT28".encode("latin-1"))
    (corpus / "c_binary.bin").write_bytes(b"\x7fELF\x00\x01\x02")
    (corpus / "d_emoji.txt").write_text("APT28 🐻‍❄️ struck 北京 and Москва with X-Agent.", encoding="utf-8")
    long_word = "ab-" * 334
    (corpus / "e_longword.txt").write_text(f"APT28 used {long_word} then X-Agent.", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    assert run_tag([str(corpus), "--bundle", bundle, "--out", str(out), "-q"]).exit_code == 0
    recs = {Path(r["id"]).name: r for r in read_jsonl(out)}
    assert len(recs) == 5
    assert recs["a_empty.txt"]["warning"] == "empty document" and recs["a_empty.txt"]["entities"] == []
    assert recs["b_latin1.txt"]["error"] == "not valid UTF-8: byte 0xe9 at offset 3; expected UTF-8 text"
    assert recs["c_binary.bin"]["error"].startswith("binary content: NUL byte at offset 4")
    check_offsets(recs["d_emoji.txt"], (corpus / "d_emoji.txt").read_text(encoding="utf-8"))
    long_rec = recs["e_longword.txt"]
    check_offsets(long_rec, (corpus / "e_longword.txt").read_text(encoding="utf-8"))
    # Words: APT28 used <word split at its inner punctuation-free runs> then X-Agent .
    assert long_rec["counts"]["words"] >= 6


def test_five_megabyte_document_without_newline_is_not_truncated(tmp_path, bundle):
    from ner_batch.segment import words

    unit = "APT28 used X-Agent against targets in Eastern Europe and then moved on "
    text = (unit * (5_000_000 // len(unit) + 1))[:5_000_000]
    (tmp_path / "big.txt").write_text(text)
    out = tmp_path / "o.jsonl"
    assert run_tag([str(tmp_path / "big.txt"), "--bundle", bundle, "--out", str(out), "-q"]).exit_code == 0
    [rec] = read_jsonl(out)
    assert rec["counts"]["words"] == len(words(text))
    check_offsets(rec, text)
    assert max((e["end"] for e in rec["entities"]), default=0) > 4_900_000  # the end of the text was tagged


def test_inputs_and_outputs_that_cannot_work(tmp_path, bundle):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_tag([str(empty), "--bundle", bundle, "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code != 0 and "found none (empty directory)" in res.output
    res = run_tag([str(tmp_path / "nope.txt"), "--bundle", bundle, "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code != 0 and "expected INPUT" in res.output and "to exist" in res.output
    doc = tmp_path / "d.txt"
    doc.write_text("APT28.")
    res = run_tag([str(doc), "--bundle", str(tmp_path / "missing-bundle"), "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code != 0 and "expected a model bundle directory" in res.output
    res = run_tag([str(doc), "--bundle", bundle, "--out", str(tmp_path / "no" / "such" / "dir" / "o.jsonl")])
    assert res.exit_code != 0 and "cannot write output" in res.output and "does not exist" in res.output
    res = run_tag([str(doc), "--bundle", bundle, "--out", str(tmp_path)])
    assert res.exit_code != 0
    assert not (tmp_path / "o.jsonl").exists()


def test_incompatible_bundle(tmp_path, tiny_bundles):
    import shutil

    b = tmp_path / "b"
    shutil.copytree(tiny_bundles["crf"][0], b)
    m = json.loads((b / "manifest.json").read_text())
    m["format_version"] = 1  # an older bundle: int8 meant dynamic then
    (b / "manifest.json").write_text(json.dumps(m))
    doc = tmp_path / "d.txt"
    doc.write_text("APT28.")
    res = run_tag([str(doc), "--bundle", str(b), "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 1 and "expected bundle format version 2, found 1; re-export it" in res.output


def test_two_workers_equal_one(tmp_path, bundle):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    make_corpus(corpus, 10)
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    tag_corpus([str(corpus)], bundle, one, workers=1, shard_docs=3, progress=False, say=lambda m: None)
    summary = tag_corpus([str(corpus)], bundle, two, workers=2, shard_docs=3, progress=False, say=lambda m: None)
    assert one.read_bytes() == two.read_bytes()
    assert summary.documents == 10 and summary.shards == 4 and summary.workers == 2


@pytest.mark.parametrize("change, key", [
    (["--variant", "fp32"], "variant"), (["--token-budget", "512"], "token_budget"), (["--max-batch", "4"], "max_batch"),
    (["--shard-docs", "2"], "shard_docs"), (["--output-format", "conll"], "output_format"), (["--device", "cpu"], "device"),
])
def test_resume_refuses_each_changed_setting_by_name(tmp_path, bundle, monkeypatch, change, key):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    make_corpus(corpus, 6)
    out = tmp_path / "o.jsonl"
    args = [str(corpus), "--bundle", bundle, "--out", str(out), "--shard-docs", "3", "-q"]
    interrupt_after_first_shard(monkeypatch)
    res = run_tag(args)
    assert res.exit_code == 130 and "--resume" in res.output and not out.exists()
    res = run_tag([*args, *change, "--resume"])
    assert res.exit_code != 0 and f"cannot resume: {key} changed since" in res.output, res.output
    summary = tmp_path / "s.json"
    res = run_tag([*args, "--resume", "--summary-json", str(summary)])  # unchanged: resumes
    assert res.exit_code == 0, res.output
    assert json.loads(summary.read_text())["resumed_shards"] == 1 and len(read_jsonl(out)) == 6


def test_kill_and_resume_gives_the_uninterrupted_output(tmp_path, bundle):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    make_corpus(corpus, 300, repeat=8)
    reference = tmp_path / "ref.jsonl"
    tag_corpus([str(corpus)], bundle, reference, shard_docs=2, progress=False, say=lambda m: None)

    out = tmp_path / "tags.jsonl"
    cmd = [sys.executable, "-m", "ner_batch.cli", "tag", str(corpus), "--bundle", bundle, "--out", str(out),
           "--shard-docs", "2", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = tmp_path / "tags.jsonl.parts" / "done.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if done.is_file() and len(done.read_text().splitlines()) >= 5:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # no partial output
    finished = len(done.read_text().splitlines())
    assert 5 <= finished < 150  # killed mid-run

    summary = tmp_path / "summary.json"
    res = subprocess.run(cmd + ["--resume", "--summary-json", str(summary)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    # reused, not recomputed (the last manifest line may have been cut by the kill)
    assert json.loads(summary.read_text())["resumed_shards"] >= finished - 1
    assert out.read_bytes() == reference.read_bytes()
    recs = read_jsonl(out)
    assert len(recs) == 300 and len({r["id"] for r in recs}) == 300
