"""Nothing lost, mixed or overwritten: hostile inputs, concurrent runs, our own files, clear errors."""

from __future__ import annotations

import codecs
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ner_batch.cli import main
from ner_batch.pipeline.shards import WorkDir

GOOD = "APT28 used X-Agent against targets in Eastern Europe. The Lazarus Group deployed Poison Ivy."


@pytest.fixture
def bundle(tiny_bundles):
    return str(tiny_bundles["crf"][0])


def run(args, **kw):
    return CliRunner().invoke(main, args, catch_exceptions=False, **kw)


def records(path):
    text = Path(path).read_text(encoding="utf-8")
    assert len(text.splitlines()) == text.count("\n")  # every reader sees one line per record
    return [json.loads(line) for line in text.splitlines()]


def check_offsets(rec, text):
    for e in rec["entities"]:
        assert text[e["start"] : e["end"]] == e["text"]


def corrupt_deflate_gz() -> bytes:
    data = bytearray(gzip.compress(("APT28 struck again. " * 200).encode()))
    for i in range(12, len(data) - 8):  # the deflate stream, not the header or CRC
        data[i] ^= 0x5A
    return bytes(data)


# -- 1. concurrent runs -------------------------------------------------------------------

def test_a_second_run_on_the_same_output_is_refused_while_the_first_holds_it(tmp_path, bundle):
    doc = tmp_path / "d.txt"
    doc.write_text(GOOD)
    out = tmp_path / "o.jsonl"
    first = WorkDir.for_output(out)
    first.acquire()  # what a running `tag` holds
    try:
        res = run(["tag", str(doc), "--bundle", bundle, "--out", str(out), "-q"])
        assert res.exit_code == 1 and "another ner-batch run (pid" in res.output and "is writing to this output" in res.output
        assert not out.exists()
    finally:
        first.release()  # a finished or killed run drops its lock with its file descriptor
    assert run(["tag", str(doc), "--bundle", bundle, "--out", str(out), "-q"]).exit_code == 0
    assert len(records(out)) == 1 and not first.path.exists()


def test_two_processes_on_one_output_never_mix(tmp_path, bundle):
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(150):
        (corpus / f"d{i:03d}.txt").write_text(f"Report {i}. " + GOOD * 6)
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"id": f"x{i}", "text": "Sofacy."}) + "\n" for i in range(40)))
    out = tmp_path / "o.jsonl"
    cmd = [sys.executable, "-m", "ner_batch.cli", "tag", "--bundle", bundle, "--out", str(out), "--shard-docs", "2", "-q"]
    proc = subprocess.Popen(cmd + [str(corpus)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (tmp_path / "o.jsonl.parts" / "lock").exists() and time.time() < deadline:
        time.sleep(0.02)
    second = subprocess.run(cmd + [str(other)], capture_output=True, text=True, timeout=120)
    assert proc.wait(timeout=300) == 0
    assert second.returncode == 1 and "another ner-batch run" in second.stderr and "Traceback" not in second.stderr
    recs = records(out)
    assert len(recs) == 150 and all(r["id"].startswith(str(corpus)) for r in recs)


# -- 2. one bad document never stops the others ---------------------------------------------

def test_hostile_documents_become_error_records_and_the_run_goes_on(tmp_path, bundle):
    corpus = tmp_path / "c"
    corpus.mkdir()
    lines = [
        '{"id": "surrogate-text", "text": "APT28 \\ud800 struck"}',
        '{"id": "surrogate-tokens", "tokens": ["APT28", "\\udfff"]}',
        '{"id": "bad\\ud800id", "text": "' + GOOD + '"}',
        "[" * 100_000,
        json.dumps({"id": "good", "text": GOOD}),
    ]
    (corpus / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (corpus / "b.txt.gz").write_bytes(corrupt_deflate_gz())
    (corpus / os.fsdecode(b"caf\xe9.txt")).write_text(GOOD)
    out = tmp_path / "o.jsonl"
    res = run(["tag", str(corpus), "--bundle", bundle, "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    recs = records(out)
    assert len(recs) == 7
    by = {r["id"].rsplit("/", 1)[-1]: r for r in recs}
    assert "lone surrogate at character 6" in by["surrogate-text"]["error"]
    assert "token 1 holds a lone surrogate" in by["surrogate-tokens"]["error"]
    assert by["bad\\ud800id"]["entities"] is not None and "error" not in by["bad\\ud800id"]  # tagged, id escaped
    assert by["a.jsonl:4"]["error"] == "line 4: JSON nested too deeply to read"
    assert by["b.txt.gz"]["error"].startswith("cannot read:")
    assert "error" not in by["caf\\xe9.txt"] and by["caf\\xe9.txt"]["counts"]["words"] > 5
    check_offsets(by["good"], GOOD)


# -- 3. and 4. our own files ----------------------------------------------------------------

def test_output_inside_an_input_directory_is_never_read_back(tmp_path, bundle):
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"d{i}.txt").write_text(GOOD)
    out = corpus / "tags.jsonl"
    for _ in range(3):
        res = run(["tag", str(corpus), "--bundle", bundle, "--out", str(out), "-q"])
        assert res.exit_code == 0, res.output
        assert [Path(r["id"]).name for r in records(out)] == ["d0.txt", "d1.txt", "d2.txt"]
    # interrupted runs leave OUT.parts/ there: still not an input, and resume works
    (corpus / "tags.jsonl.parts").mkdir()
    (corpus / "tags.jsonl.parts" / "ner-batch-workdir").touch()
    (corpus / "tags.jsonl.parts" / "plan.json").write_text("{}")
    assert run(["tag", str(corpus), "--bundle", bundle, "--out", str(out), "-q"]).exit_code == 0
    assert len(records(out)) == 3


def test_output_equal_to_an_input_is_refused(tmp_path, bundle):
    doc = tmp_path / "in.jsonl"
    doc.write_text(json.dumps({"id": "a", "text": GOOD}) + "\n")
    before = doc.read_bytes()
    res = run(["tag", str(doc), "--bundle", bundle, "--out", str(doc)])
    assert res.exit_code == 1 and "is also an INPUT" in res.output
    assert doc.read_bytes() == before


def test_a_work_directory_that_is_not_ours_is_never_deleted(tmp_path, bundle):
    doc = tmp_path / "d.txt"
    doc.write_text(GOOD)
    parts = tmp_path / "o.jsonl.parts"
    parts.mkdir()
    (parts / "precious.txt").write_text("mine")
    res = run(["tag", str(doc), "--bundle", bundle, "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 1 and "is not a ner-batch work directory" in res.output
    assert (parts / "precious.txt").read_text() == "mine"


def test_a_symlink_as_output_is_written_through(tmp_path, bundle):
    doc = tmp_path / "d.txt"
    doc.write_text(GOOD)
    target = tmp_path / "real" / "tags.jsonl"
    target.parent.mkdir()
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert run(["tag", str(doc), "--bundle", bundle, "--out", str(link), "-q"]).exit_code == 0
    assert link.is_symlink() and len(records(target)) == 1


# -- 6. and 7. words and text ----------------------------------------------------------------

def test_combining_marks_stay_in_their_word_and_offsets_are_exact(tmp_path, bundle):
    from ner_batch.segment import words

    text = "Ope\u0301ration Aurora hit हिन्दी sites.\u2028Next\u0085line \u2029 APT28."
    assert [text[s:e] for s, e in words(text)][:4] == ["Ope\u0301ration", "Aurora", "hit", "हिन्दी"]
    doc = tmp_path / "d.jsonl"
    doc.write_text(json.dumps({"id": "x\u2028y", "text": text}) + "\n")
    out = tmp_path / "o.jsonl"
    assert run(["tag", str(doc), "--bundle", bundle, "--out", str(out), "-q"]).exit_code == 0
    [rec] = records(out)
    assert rec["id"] == "x\u2028y"
    check_offsets(rec, text)
    assert "\u2028" not in out.read_text() and "\u0085" not in out.read_text()


def test_conll_input_takes_the_first_field_as_the_token(tmp_path, bundle):
    conll = tmp_path / "x.conll"
    conll.write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    out = tmp_path / "o.jsonl"
    assert run(["tag", str(conll), "--bundle", bundle, "--out", str(out), "-q"]).exit_code == 0
    assert records(out)[0]["text"] == "EU rejects"


def test_inputs_decided_and_documented(tmp_path, bundle):
    corpus = tmp_path / "c"
    (corpus / ".git").mkdir(parents=True)
    (corpus / ".git" / "config").write_text("[core]")
    (corpus / ".hidden.txt").write_text(GOOD)
    outside = tmp_path / "outside.txt"
    outside.write_text(GOOD)
    (corpus / "link.txt").symlink_to(outside)
    os.mkfifo(corpus / "pipe")
    (corpus / "utf16.txt").write_bytes(codecs.BOM_UTF16_LE + GOOD.encode("utf-16-le"))
    (corpus / "docs.jsonl").write_text(json.dumps({"id": "same", "tokens": []}) + "\n" + json.dumps({"id": "same", "text": GOOD}) + "\n")
    out = tmp_path / "o.jsonl"
    res = CliRunner().invoke(main, ["tag", str(corpus), "--bundle", bundle, "--out", str(out), "-q"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "link.txt: a symbolic link" in res.output and "pipe: not a regular file" in res.output
    recs = records(out)
    assert [r["id"].rsplit("/", 1)[-1] for r in recs] == ["same", "same", "utf16.txt"]
    assert recs[0]["warning"] == "empty document"
    assert recs[1]["warning"] == "duplicate id: document 0 has the same id"
    check_offsets(recs[2], GOOD)
    assert "error" not in recs[2] and recs[2]["counts"]["words"] > 10


# -- 8. show ---------------------------------------------------------------------------------

def test_show_escapes_and_survives_what_it_is_given(tmp_path):
    rec = {"id": "evil\x1b[2J", "entities": [{"start": 0, "end": 5, "label": "HackOrg", "text": "AP\x1bT28", "score": 0.9},
                                            {"start": 6, "end": 9, "label": "Tool", "text": "X"}]}
    path = tmp_path / "t.jsonl"
    path.write_text("\n" + json.dumps(rec) + "\nnot json\n" + json.dumps({"id": "noents"}) + "\n")
    res = run(["show", str(path)])
    assert res.exit_code == 0 and "\x1b" not in res.output
    assert "evil\\u001b[2J" in res.output and "AP\\u001bT28" in res.output and "  -  " in res.output
    assert "skipped 1 line(s) that are not JSON records (first: line 3)" in res.output
    gz = tmp_path / "t.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert "AP\\u001bT28" in run(["show", str(gz)]).output
    conll = tmp_path / "t.conll"
    conll.write_text("# id = a\nAPT28\tB-HackOrg\t0.9\n\n")
    res = run(["show", str(conll)])
    assert res.exit_code == 1 and "is CoNLL output" in res.output
    res = run(["show", str(path), "--limit", "-1"])
    assert res.exit_code == 2 and "--limit" in res.output


# -- 9. and 10. clear errors, checked options ---------------------------------------------------

def test_worker_errors_read_like_single_process_errors(tmp_path, bundle):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu (CUDA listed) on a machine without a GPU")
    doc = tmp_path / "d.txt"
    doc.write_text(GOOD)
    outs = []
    for workers in ("1", "2"):
        res = subprocess.run([sys.executable, "-m", "ner_batch.cli", "tag", str(doc), "--bundle", bundle, "--out",
                              str(tmp_path / "o.jsonl"), "--device", "cuda", "--workers", workers, "-q"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        outs.append(res.stderr.strip().splitlines()[-1])
    assert outs[0] == outs[1] and outs[0].startswith("Error: --device cuda")


def test_clear_errors_before_any_work(tmp_path, bundle):
    doc = tmp_path / "d.txt"
    doc.write_text(GOOD)
    out = tmp_path / "o.jsonl"
    res = run(["tag", str(doc), "--bundle", bundle, "--out", str(out), "--summary-json", str(tmp_path / "no" / "s.json")])
    assert res.exit_code == 1 and "cannot write --summary-json" in res.output and not out.exists()
    (tmp_path / "o.jsonl.tmp").mkdir()
    res = run(["tag", str(doc), "--bundle", bundle, "--out", str(out)])
    assert res.exit_code == 1 and "o.jsonl.tmp, where it is assembled, is a directory" in res.output
    for flag, value in (("--shard-docs", "0"), ("--token-budget", "0"), ("--max-batch", "0"), ("--workers", "0"), ("--threads", "-1")):
        res = run(["tag", str(doc), "--bundle", bundle, "--out", str(tmp_path / "p.jsonl"), flag, value])
        assert res.exit_code == 2 and flag in res.output
    res = run(["tag", str(doc), "--bundle", bundle, "--out", str(tmp_path / "p.jsonl"), "--threads", "64", "-q"])
    assert res.exit_code == 0 and "more than this machine's" in res.output


def test_stdin_closed(tmp_path, bundle):
    res = subprocess.run([sys.executable, "-m", "ner_batch.cli", "tag", "-", "--bundle", bundle, "--out", str(tmp_path / "o.jsonl")],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, close_fds=True,
                         preexec_fn=lambda: os.close(0))
    assert res.returncode == 1 and "Traceback" not in res.stderr and "standard input" in res.stderr, res.stderr


def test_evaluate_data_errors(tmp_path, bundle):
    res = run(["evaluate", "--bundle", bundle, "--data", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "expected DNRTI's train.txt" in res.output
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_text("APT28 B-HackOrg\n")
    res = run(["evaluate", "--bundle", bundle, "--data", str(data)])
    assert res.exit_code == 1 and "test.txt (test split), found nothing there" in res.output
    (data / "test.txt").write_text("")
    res = run(["evaluate", "--bundle", bundle, "--data", str(data)])
    assert res.exit_code == 1 and "expected sentences in" in res.output and "(empty file)" in res.output
    (data / "test.txt").write_text("APT28 B-HackOrg\nused O\nEmotet B-Malware\n")
    res = run(["evaluate", "--bundle", bundle, "--data", str(data), "--device", "cpu", "--json"])
    assert res.exit_code == 0 and "labels the model cannot predict (scored as misses): B-Malware" in res.output


# -- the whole list at once, with a kill ---------------------------------------------------------

def test_hostile_corpus_two_workers_killed_and_resumed(tmp_path, bundle):
    corpus = tmp_path / "c"
    corpus.mkdir()
    texts = {}
    for i in range(60):
        name = f"g{i:03d}.txt"
        texts[name] = f"Report {i}. " + GOOD * 4 + " Ope\u0301ration हिन्दी \u2028 ok."
        (corpus / name).write_text(texts[name])
    (corpus / "h1.jsonl").write_text("\n".join(['{"id": "s", "text": "\\ud800"}', "[" * 100_000, "{bad",
                                                json.dumps({"id": "t", "tokens": []})]) + "\n")
    (corpus / "h2.txt.gz").write_bytes(corrupt_deflate_gz())
    (corpus / "h3.bin").write_bytes(b"\x00\x01")
    (corpus / os.fsdecode(b"h4-\xff.txt")).write_text(GOOD)
    expected_docs = 60 + 4 + 1 + 1 + 1
    out = tmp_path / "o.jsonl"
    cmd = [sys.executable, "-m", "ner_batch.cli", "tag", str(corpus), "--bundle", bundle, "--out", str(out),
           "--workers", "2", "--shard-docs", "2", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = tmp_path / "o.jsonl.parts" / "done.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (done.is_file() and len(done.read_text().splitlines()) >= 3):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.5)  # orphaned workers notice their parent is gone
    res = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    recs = records(out)
    assert len(recs) == expected_docs
    for r in recs:
        name = r["id"].rsplit("/", 1)[-1]
        if name in texts:
            check_offsets(r, texts[name])
    assert sum(1 for r in recs if r.get("error")) == 5


def test_a_document_the_tokenizer_cannot_take_becomes_an_error_record(tmp_path, bundle, monkeypatch):
    from ner_batch.encoding import Windower

    original = Windower.word_pieces

    def word_pieces(self, sentences):
        if any("POISON" in w for s in sentences for w in s):
            raise RuntimeError("tokenizer exploded")
        return original(self, sentences)

    monkeypatch.setattr(Windower, "word_pieces", word_pieces)
    doc = tmp_path / "d.jsonl"
    doc.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate([GOOD, "a POISON pill", GOOD])))
    out = tmp_path / "o.jsonl"
    assert run(["tag", str(doc), "--bundle", bundle, "--out", str(out), "-q"]).exit_code == 0
    recs = records(out)
    assert [r.get("error") for r in recs] == [None, "cannot tag this document: RuntimeError: tokenizer exploded", None]
    check_offsets(recs[0], GOOD)
