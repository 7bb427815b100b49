"""`ner-batch score`: tagged records against gold character spans of the user's own text."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner

from conftest import DNRTI
from ner_batch.cli import main
from ner_batch.evaluation import MISSED, SPURIOUS, score
from ner_batch.gold_spans import GoldError, format_spans_report, missed_breakdown, read_gold, read_tags, score_spans
from ner_batch.labels import bio_spans

TEXT = "APT28 used X-Agent and Zebrocy against NATO in 2018 with the Sofacy backdoor of Lazarus."


def span(text: str, label: str, word: str, nth: int = 0) -> dict:
    start = -1
    for _ in range(nth + 1):
        start = text.index(word, start + 1)
    return {"start": start, "end": start + len(word), "label": label, "text": word}


def write_jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def files(tmp_path):
    gold = write_jsonl(tmp_path / "gold.jsonl", [{"id": "d1", "text": TEXT, "entities": [
        span(TEXT, "group", "APT28"), span(TEXT, "software", "X-Agent"), span(TEXT, "software", "Zebrocy"),
        span(TEXT, "group", "Lazarus"), span(TEXT, "software", "Sofacy backdoor")]}])
    # APT28 right; X-Agent tagged HackOrg (same span); Zebrocy untagged; "Sofacy backdoor" found as "Sofacy"
    # (right type, other boundaries); Lazarus right; NATO tagged Org (a type the gold does not mark: neither
    # right nor spurious); "2018" tagged HackOrg: spurious.
    tags = write_jsonl(tmp_path / "tags.jsonl", [{"id": "d1", "entities": [
        {**span(TEXT, "HackOrg", "APT28"), "score": 0.9}, span(TEXT, "HackOrg", "X-Agent"), span(TEXT, "Org", "NATO"),
        span(TEXT, "HackOrg", "2018"), span(TEXT, "HackOrg", "Lazarus"), span(TEXT, "Tool", "Sofacy")]}])
    return gold, tags


def test_scores_counted_by_hand(files):
    gold_path, tags_path = files
    gold = read_gold(gold_path, {"group": "HackOrg", "software": "Tool"})
    tags, skipped = read_tags(tags_path)
    assert gold.types == ["HackOrg", "Tool"] and not gold.skipped and not skipped
    result = score_spans(gold, tags, rounds=0)
    hack, tool = result["per_type"]["HackOrg"], result["per_type"]["Tool"]
    # HackOrg: gold APT28, Lazarus; predicted APT28, X-Agent, 2018, Lazarus -> 2 right of 4 predicted, 2 gold
    assert (hack["correct"], hack["predicted"], hack["support"]) == (2, 4, 2)
    # Tool: gold X-Agent, Zebrocy, "Sofacy backdoor"; predicted "Sofacy" -> 0 right
    assert (tool["correct"], tool["predicted"], tool["support"]) == (0, 1, 3)
    assert result["precision"] == pytest.approx(2 / 5) and result["recall"] == pytest.approx(2 / 5)
    assert result["f1"] == pytest.approx(0.4) and result["scored"] == 1 and "bootstrap" not in result
    matrix = result["confusion"]["matrix"]
    assert matrix["Tool"] == {"HackOrg": 1, MISSED: 1, "Tool": 1} and result["confusion"]["exact"] == {"HackOrg": 2}
    assert matrix[SPURIOUS] == {"HackOrg": 1}  # 2018; NATO (Org) is not a type of this gold: not spurious
    assert missed_breakdown(result["confusion"])["Tool"] == {"HackOrg": 1, MISSED: 1, "Tool, other boundaries": 1}
    report = format_spans_report(result)
    assert "Tool spans not found exactly (3): untagged 1, HackOrg 1, Tool, other boundaries 1" in report


def test_equals_seqeval_on_word_spans_of_real_sentences():
    """Sentences as documents (words joined by spaces), random predictions: the character-span
    scores equal seqeval's on the BIO tags, per type and micro."""
    from ner_batch.data.dnrti import load_split

    if not (DNRTI / "valid.txt").is_file():
        pytest.skip("needs DNRTI")
    sents = load_split(DNRTI, "valid")[0][:200]
    rng = random.Random(0)
    types = sorted({t for s in sents for _, _, t in bio_spans(s.labels)})
    gold_rows, pred_tags, tag_rows = [], [], {}
    for i, s in enumerate(sents):
        offs, pos = [], 0
        for w in s.tokens:
            offs.append((pos, pos + len(w)))
            pos += len(w) + 1
        text = " ".join(s.tokens)
        pred = [rng.choice(["O", f"B-{rng.choice(types)}", f"I-{rng.choice(types)}"]) if rng.random() < 0.25 else g
                for g in s.labels]
        pred_tags.append(pred)
        to_chars = lambda spans: [(offs[a][0], offs[b - 1][1], t) for a, b, t in spans]  # noqa: E731
        gold_rows.append((str(i), to_chars(bio_spans(s.labels)), text))
        tag_rows[str(i)] = to_chars(bio_spans(pred))
    from ner_batch.gold_spans import GoldDoc, GoldFile, TaggedDoc

    gold = GoldFile("valid", [GoldDoc(i, 0, sorted(set(g)), text) for i, g, text in gold_rows], [])
    tags = {i: TaggedDoc(spans, [None] * len(spans)) for i, spans in tag_rows.items()}
    result = score_spans(gold, tags, rounds=0)
    expected = score([s.labels for s in sents], pred_tags)
    assert result["f1"] == pytest.approx(expected["f1"]) and result["precision"] == pytest.approx(expected["precision"])
    for t in types:
        assert result["per_type"][t]["f1"] == pytest.approx(expected["per_type"][t]["f1"]), t


def test_documents_left_out_are_listed_not_scored(tmp_path):
    gold = write_jsonl(tmp_path / "g.jsonl", [{"id": k, "text": TEXT, "entities": [span(TEXT, "HackOrg", "APT28")]}
                                              for k in ("a", "b", "c", "d")])
    tags = write_jsonl(tmp_path / "t.jsonl", [
        {"id": "a", "entities": [span(TEXT, "HackOrg", "APT28")]},
        {"id": "b", "error": "line 2: invalid JSON", "entities": []},
        {"id": "c", "entities": [{"start": 0, "end": 5, "label": "HackOrg", "text": "OTHER"}]},  # tagged from another text
        "not a record",
    ])
    result = score_spans(read_gold(gold), read_tags(tags)[0], rounds=0)
    assert result["scored"] == 1 and result["f1"] == 1.0
    assert result["not_scored"] == {"no record": ["d"], "error record": ["b"], "other text": ["c"]}
    res = run("score", gold, tags)
    assert res.exit_code == 0
    assert "  not scored, no record: 1 (first: d)" in res.output and "not-a-record: 1 [skipped] at t.jsonl:4" in res.output


def test_a_sample_scored_against_a_whole_corpus_keeps_only_the_samples_records(tmp_path, files):
    gold_path, tags_path = files
    # the sample's record among 3000 others (the output of a corpus the sample was drawn from), one bad line among them
    others = [{"id": f"x{i}", "entities": [span(TEXT, "HackOrg", "APT28")]} for i in range(3000)]
    lines = (tmp_path / "tags.jsonl").read_text(encoding="utf-8").splitlines()
    corpus = write_jsonl(tmp_path / "corpus-tags.jsonl", others[:1500] + lines + ["not a record"] + others[1500:])
    tags, skipped = read_tags(corpus, ids={"d1"})
    assert list(tags) == ["d1"] and [(r.line, r.kind) for r in skipped] == [(1502, "not-a-record")]
    label_map = {"group": "HackOrg", "software": "Tool"}
    alone = score_spans(read_gold(gold_path, label_map), read_tags(tags_path)[0], rounds=0)
    assert score_spans(read_gold(gold_path, label_map), tags, rounds=0) == alone
    res = run("score", gold_path, corpus, "--map", "group=HackOrg", "--map", "software=Tool", "--json", "--bootstrap", "0")
    assert res.exit_code == 0 and json.loads(res.output)["f1"] == pytest.approx(alone["f1"])


def test_bad_gold_lines_and_entities_are_skipped_and_counted(tmp_path):
    text = "Ünïcode APT28 😀 Lazarus group"
    rows = [
        "{not json",
        {"id": "x", "text": text},  # no entities
        {"id": "ok", "text": text, "entities": [
            span(text, "HackOrg", "APT28"),
            {"start": 16, "end": 23, "label": "HackOrg"},  # Lazarus by code points: right
            {"start": 17, "end": 24, "label": "HackOrg", "text": "Lazarus"},  # UTF-16 offsets: mismatch
            {"start": 5, "end": 99, "label": "Tool"},  # past the text
            {"start": "0", "end": 5, "label": "Tool"},  # not integers
            "APT28",
        ]},
        {"id": "ok", "text": text, "entities": []},  # repeated id
        {"id": [1], "text": text, "entities": []},
    ]
    gold = read_gold(write_jsonl(tmp_path / "g.jsonl", rows))
    assert [d.id for d in gold.docs] == ["ok"] and gold.docs[0].spans == [(8, 13, "HackOrg"), (16, 23, "HackOrg")]
    kinds = sorted(r.kind for r in gold.skipped)
    assert kinds == ["bad-entity", "bad-entity", "bad-id", "bad-offsets", "no-entities", "not-json", "repeated-id",
                     "text-mismatch"]
    mismatch = next(r for r in gold.skipped if r.kind == "text-mismatch")
    assert mismatch.line == 3 and "expected Unicode code points" in mismatch.detail
    offsets = next(r for r in gold.skipped if r.kind == "bad-offsets")
    assert "expected 0 <= start < end and end <= 29 (the text's length), found 5..99" in offsets.detail


@pytest.mark.parametrize("rows, tags_rows, args, message", [
    (["[1, 2]", "{}"], None, [], "expected JSON lines with 'entities' in {gold}, found no usable document; skipped: "
                                 "no-entities 2"),
    ([{"id": "a", "entities": []}], [{"id": "zz", "entities": []}], [],
     "expected records in {tags} for the documents of {gold}, found none with the same id (gold ids start 'a')"),
    ([{"id": "a", "entities": []}], ["# id = a", "APT28\tB-HackOrg\t0.9"], [], "{tags} is CoNLL output"),
    ([{"id": "a", "entities": []}], [{"id": "a", "entities": []}], ["--map", "software"],
     "expected --map GOLD=MODEL (e.g. --map software=Tool), got 'software'"),
])
def test_cli_errors_are_one_line(tmp_path, rows, tags_rows, args, message):
    gold = write_jsonl(tmp_path / "g.jsonl", rows)
    tags = write_jsonl(tmp_path / "t.jsonl", tags_rows or [{"id": "a", "entities": []}])
    res = run("score", gold, tags, *args)
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.startswith("Error: " + message.format(gold=gold, tags=tags)) and len(res.output.strip().splitlines()) == 1


def test_cli_table_json_and_bootstrap(files):
    gold, tags = files
    res = run("score", gold, tags, "--map", "group=HackOrg", "--map", "software=Tool", "--confusions")
    assert res.exit_code == 0, res.output
    assert "micro (all)        40.00     40.00     40.00       5         5" in res.output
    assert "type confusion, span level" in res.output and "resamples" not in res.output  # one document: no interval
    data = json.loads(run("score", gold, tags, "--map", "group=HackOrg", "--map", "software=Tool", "--json").output)
    assert data["types"] == ["HackOrg", "Tool"] and data["f1"] == pytest.approx(0.4) and data["skipped"] == []
    unmapped = json.loads(run("score", gold, tags, "--json").output)  # gold labels read as they are: nothing matches
    assert unmapped["types"] == ["group", "software"] and unmapped["f1"] == 0.0


def test_tag_then_score_end_to_end(tmp_path, tiny_bundles):
    """The gold file is itself the input of `tag`; its documents without id are matched by path:line."""
    path, _, _ = tiny_bundles["crf"]
    texts = [TEXT, "The Lazarus Group deployed Poison Ivy.", "Nothing here."]
    gold = write_jsonl(tmp_path / "gold.jsonl", [{"text": t, "entities": [span(t, "HackOrg", "Lazarus")] if "Lazarus" in t else []}
                                                 for t in texts])
    out = tmp_path / "tags.jsonl"
    assert run("tag", gold, "--bundle", path, "--out", out, "-q").exit_code == 0
    tags, _ = read_tags(out)
    assert set(tags) == {f"{gold}:{n}" for n in (1, 2, 3)}
    res = run("score", gold, out, "--bootstrap", "200")
    assert res.exit_code == 0 and "scored 3" in res.output and "(bootstrap: 200 resamples of the documents, seed 0)" in res.output


def test_unreadable_gold_is_one_line(tmp_path):
    bad = tmp_path / "g.jsonl.gz"
    bad.write_bytes(b"not gzip")
    tags = write_jsonl(tmp_path / "t.jsonl", [{"id": "a", "entities": []}])
    with pytest.raises(GoldError, match="cannot read"):
        read_gold(bad)
    res = run("score", bad, tags)
    assert res.exit_code == 1 and res.output.startswith(f"Error: cannot read {bad}")


def test_types_option_scores_a_type_the_gold_lacks(files, tmp_path):
    gold, tags = files
    maps = ["--map", "group=HackOrg", "--map", "software=Tool"]
    data = json.loads(run("score", gold, tags, *maps, "--types", "HackOrg,Tool,Org", "--json").output)
    assert data["per_type"]["Org"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "correct": 0, "predicted": 1, "support": 0}
    assert data["predicted"] == 6 and data["confusion"]["matrix"]["(none)"] == {"HackOrg": 1, "Org": 1}  # NATO now spurious
    res = run("score", gold, tags, *maps, "--types", "HackOrg")
    assert res.exit_code == 1 and res.output.strip() == (
        f"Error: expected --types to name every type in {gold} (HackOrg, Tool), got 'HackOrg'; missing Tool")


def test_score_runs_without_torch(files):
    import subprocess
    import sys

    gold, tags = files
    code = ("import sys\nsys.modules['torch'] = None\nsys.modules['seqeval'] = None\n"  # any import of them raises
            "from ner_batch.cli import main\n"
            f"main(['score', {gold!r}, {tags!r}, '--map', 'group=HackOrg', '--map', 'software=Tool', '--json'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["f1"] == pytest.approx(0.4)


def test_confusion_table_rows_are_gold_types_only():
    from ner_batch.evaluation import format_confusion, span_confusion

    confusion = span_confusion([([(0, 5, "Tool")], [(0, 5, "Exp"), (9, 12, "Org")])], spurious_types={"Tool"})
    rows = [line.split()[0] for line in format_confusion(confusion).splitlines()[2:] if not line.startswith("largest")]
    assert rows == ["Tool"] and "Exp" in format_confusion(confusion).splitlines()[1]  # Exp a column, never a row


def test_the_example_gold_file_reads_clean():
    from pathlib import Path

    gold = read_gold(Path(__file__).resolve().parents[1] / "examples" / "gold.jsonl", {"group": "HackOrg", "software": "Tool"})
    assert not gold.skipped and len(gold.docs) == 8 and gold.types == ["HackOrg", "Tool"]
    assert sum(len(d.spans) for d in gold.docs) == 18
