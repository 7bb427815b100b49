"""STIX 2.1 bundles (tag --output-format stix, convert) and the HTML view (show --html)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from ner_batch.cli import main

pytest.importorskip("stix2")
from ner_batch.output.stix import CUSTOM, StixBuilder, resolve_location, stable_id, validate_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "corpus"


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_every_bundle_of_the_examples_validates_and_ids_are_stable(tmp_path, tiny_bundles):
    bundle = str(tiny_bundles["crf"][0])
    outs = []
    for k in range(2):
        out = tmp_path / f"s{k}.jsonl"
        assert run(["tag", str(EXAMPLES), "--bundle", bundle, "--out", str(out), "--output-format", "stix", "-q"]).exit_code == 0
        outs.append(out.read_text().splitlines())
    tags = tmp_path / "tags.jsonl"
    assert run(["tag", str(EXAMPLES), "--bundle", bundle, "--out", str(tags), "-q"]).exit_code == 0
    n_docs = len(tags.read_text().splitlines())
    assert len(outs[0]) == len(outs[1]) == n_docs
    ids = [[sorted(o["id"] for o in json.loads(line)["objects"]) for line in lines] for lines in outs]
    assert ids[0] == ids[1]  # deterministic ids across runs
    for line in outs[0]:
        assert validate_line(line) >= 2
        bundle_obj = json.loads(line)
        [report] = [o for o in bundle_obj["objects"] if o["type"] == "report"]
        custom = {k for o in bundle_obj["objects"] for k in o if k.startswith("x_")}
        assert custom <= set(CUSTOM)
        referenced = {e["ref"] for e in report["x_ner_batch_entities"] if e["ref"]}
        assert referenced <= {o["id"] for o in bundle_obj["objects"]}
    converted = tmp_path / "c.jsonl"
    res = run(["convert", str(tags), "--to", "stix", "--out", str(converted)])
    assert res.exit_code == 0 and f"wrote {n_docs} STIX bundle(s)" in res.output
    assert [sorted(o["id"] for o in json.loads(x)["objects"]) for x in converted.read_text().splitlines()] == ids[0]


def test_mapping_merges_the_same_entity_and_keeps_every_mention():
    b = StixBuilder("2026-01-01T00:00:00Z")
    rec = {"id": "d", "entities": [
        {"start": 0, "end": 6, "label": "Area", "text": "Russia", "score": 0.9},
        {"start": 10, "end": 17, "label": "Area", "text": "Russian", "score": 0.8},
        {"start": 20, "end": 26, "label": "Area", "text": "Narnia", "score": 0.7},
        {"start": 30, "end": 44, "label": "Exp", "text": "CVE-2017-11882", "score": 0.95},
        {"start": 50, "end": 54, "label": "Time", "text": "2017", "score": 0.9},
        {"start": 60, "end": 65, "label": "Idus", "text": "banks", "score": 0.6},
        {"start": 70, "end": 75, "label": "HackOrg", "text": "APT28", "score": 0.5},
        {"start": 80, "end": 85, "label": "HackOrg", "text": "apt28", "score": 0.9}]}
    objs = json.loads(b.bundle(rec))["objects"]
    by_type = {}
    for o in objs:
        by_type.setdefault(o["type"], []).append(o)
    [loc] = by_type["location"]
    assert loc["country"] == "RU" and len(loc["x_ner_batch_mentions"]) == 2 and loc["id"] == stable_id("location", "RU")
    [vuln] = by_type["vulnerability"]
    assert vuln["external_references"] == [{"source_name": "cve", "external_id": "CVE-2017-11882"}]
    [ind] = [o for o in by_type["identity"] if o["identity_class"] == "class"]
    assert ind["sectors"] == ["financial-services"]
    [group] = by_type["intrusion-set"]
    assert group["confidence"] == 90 and len(group["x_ner_batch_mentions"]) == 2
    [report] = by_type["report"]
    refs = {e["text"]: e["ref"] for e in report["x_ner_batch_entities"]}
    assert refs["Narnia"] is None and refs["2017"] is None and len(report["x_ner_batch_entities"]) == 8
    assert resolve_location("the Middle East") == {"region": "western-asia"}


def test_error_and_empty_records_give_valid_bundles():
    b = StixBuilder("2026-01-01T00:00:00Z")
    assert validate_line(b.bundle({"id": "x", "error": "not valid UTF-8", "entities": []})) == 3
    assert validate_line(b.bundle({"id": "y", "entities": []})) == 2


class _Marks(HTMLParser):
    def __init__(self):
        super().__init__()
        self.marks, self.depth, self.scripts, self.cur, self.texts, self.in_script = [], 0, 0, None, [], False

    def handle_starttag(self, tag, attrs):
        if tag == "mark" and dict(attrs).get("title"):
            self.cur = [dict(attrs), ""]
        if tag == "script":
            self.scripts += 1
            self.in_script = True

    def handle_data(self, data):
        if self.cur is not None:
            self.cur[1] += data
        if not self.in_script:
            self.texts.append(data)

    def handle_endtag(self, tag):
        if tag == "script":
            self.in_script = False
        if tag == "mark" and self.cur is not None:
            self.marks.append(tuple(self.cur))
            self.cur = None


def test_html_wraps_every_entity_once_and_escapes_documents(tmp_path, tiny_bundles):
    corpus = tmp_path / "c"
    corpus.mkdir()
    hostile = "APT28 <script>alert(1)</script> used X-Agent & Poison Ivy in <b>Europe</b>."
    (corpus / "a.txt").write_text(hostile)
    (corpus / "b.jsonl").write_text(json.dumps({"id": "j<i>", "text": "Lazarus Group struck banks."}) + "\n")
    tags = tmp_path / "tags.jsonl"
    assert run(["tag", str(corpus), "--bundle", str(tiny_bundles["crf"][0]), "--out", str(tags), "-q"]).exit_code == 0
    page = tmp_path / "view.html"
    res = run(["show", str(tags), "--html", str(page)])
    assert res.exit_code == 0 and "wrote" in res.output
    text = page.read_text()
    assert "<script>alert" not in text and "<b>Europe" not in text
    assert "http://" not in text and "https://" not in text  # self-contained
    parser = _Marks()
    parser.feed(text)
    assert parser.scripts == 1  # ours only
    assert hostile in "".join(parser.texts)  # shown as text, whole
    recs = [json.loads(x) for x in tags.read_text().splitlines()]
    expected = sorted((e["label"], e["text"]) for r in recs for e in r["entities"])
    got = sorted((m[0]["class"][2:], m[1]) for m in parser.marks)
    assert got == expected and expected


def test_html_pages_a_large_file_with_a_clear_count(tmp_path):
    tags = tmp_path / "t.jsonl"
    tags.write_text("".join(json.dumps({"id": f"d{i}", "text": "APT28 x", "entities": [
        {"start": 0, "end": 5, "label": "HackOrg", "text": "APT28", "score": 0.9}]}) + "\n" for i in range(45)))
    page = tmp_path / "v.html"
    res = run(["show", str(tags), "--html", str(page), "--per-page", "20", "--page", "3"])
    assert res.exit_code == 0 and "5 of 45 documents (page 3 of 3)" in res.output
    assert "documents 41-45 of" not in page.read_text()  # the summary counts with thousands separators
    assert "45 documents (0 unreadable), 45 entities. This page: documents 41-45 (page 3 of 3" in page.read_text()
