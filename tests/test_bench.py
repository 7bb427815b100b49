"""The benchmark harness runs end to end on tiny models and writes JSON, Markdown and PNG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DNRTI

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (DNRTI / "test.txt").is_file(), reason="needs DNRTI")
def test_bench_smoke(tmp_path, tiny_bundles, tokenizer):
    runs, export = tmp_path / "runs", tmp_path / "export"
    for head in ("softmax", "crf"):
        path, model, _ = tiny_bundles[head]
        model.save(runs / head / "best", tokenizer)
        (export / head).parent.mkdir(parents=True, exist_ok=True)
        (export / head).symlink_to(path)
    out = tmp_path / "results"
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--runs", str(runs), "--export", str(export), "--data", str(DNRTI),
           "--repeat", "1", "--repeats", "1", "--scales", "1", "2", "--sections", "peers", "ner-batch", "decode", "scaling", "engines", "startup", "profile",
           "candidates", "raw", "--raw-mb", "0.05", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((out / "latest.json").read_text())
    systems = {r["system"] for r in result["rows"]}
    peers = [r for r in result["rows"] if r.get("peer")]
    assert {r["precision"] for r in peers} == {"fp32", "int8"} and all("word_fed_f1" in r for r in peers)
    assert any("ORTOptimizer O2" in r["system"] for r in peers) and any("sorted by length" in r["system"] for r in peers)
    assert set(result["best_peers"]) == {"fp32", "int8"}
    assert result["extra"]["startup_s"]["median_s"] > 0 and result["extra"]["ort_profile_top_ops"]["int8"]
    assert "ner-batch int8, 2 workers" in systems and "batch 256: NumPy Viterbi vs pytorch-crf decode" in systems
    for r in result["rows"]:
        if r["section"] == "softmax":
            assert r["sentences"] == 664 and r["sentences_per_s"] > 0 and 0 <= r["f1"] <= 100
    scaling = [r for r in result["rows"] if r["section"] == "scaling"]
    assert [r["sentences"] for r in scaling] == [664, 1328] and all(r["peak_rss_mb"] > 0 for r in scaling)
    assert any(t["target"].startswith("NumPy Viterbi") for t in result["targets"])
    assert "| target | value | goal | met |" in (out / "latest.md").read_text()
    assert (out / "latest.png").stat().st_size > 1000
    raw = [r for r in result["rows"] if r["section"] == "raw text"]
    assert raw[-1]["system"].startswith("HF pipeline (PyTorch), batch") and all(r["raw_ratio"] > 0 for r in raw[:-1])
    assert all(len(r["runs_s"]) == 1 for r in raw)  # --repeats 1: medians of the same repeats as the rest
    cand = {r["system"]: r for r in result["rows"] if r["section"] == "candidates"}
    assert cand["opt (fused graph), defaults"]["vs_default"] == 1.0 and "int8 static of the fused graph" in cand
    assert all(r["sentences_per_s"] > 0 and 0 <= r["f1"] <= 100 for r in cand.values())
    assert any(t["target"].startswith("start-up share of the 2x run") for t in result["targets"])
    assert "Speed candidates" in (out / "latest.md").read_text()
    engines = [r for r in result["rows"] if r["section"] == "engines"]
    if engines:  # with the [ray] extra
        assert [r["system"].rsplit(" ", 1)[-1] for r in engines] == ["local", "ray"]
        assert engines[1]["same_output_as_local"] is True and engines[1]["peak_rss_mb"] > 0


@pytest.mark.skipif(not (DNRTI / "test.txt").is_file(), reason="needs DNRTI")
def test_bench_cuts_smoke(tmp_path, tiny_bundles):
    export = tmp_path / "export"
    export.mkdir()
    (export / "crf").symlink_to(tiny_bundles["crf"][0])
    out = tmp_path / "results" / "cuts"
    cmd = [sys.executable, str(ROOT / "bench" / "cuts.py"), "--export", str(export), "--data", str(DNRTI), "--bundles", "crf",
           "--variants", "int8", "int8-dynamic", "--repeats", "1", "--repeat-corpus", "1", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["machine"]["cpu_features"]["class"]
    int8 = next(r for r in result["rows"] if r["variant"] == "int8")
    assert all(c["documents_changed"] == 0 for c in int8["cuts"].values())  # batch-independent on real DNRTI too
    assert int8["sentences_per_s"] > 0 and 0 <= int8["joined20_f1"] <= 100
    assert "| bundle | variant | sentences/s |" in out.with_suffix(".md").read_text()


@pytest.mark.skipif(not (DNRTI / "test.txt").is_file(), reason="needs DNRTI")
def test_bench_formats_smoke(tmp_path, tiny_bundles):
    pytest.importorskip("stix2")
    out = tmp_path / "results" / "formats"
    cmd = [sys.executable, str(ROOT / "bench" / "formats.py"), "--bundle", str(tiny_bundles["crf"][0]), "--data", str(DNRTI),
           "--repeats", "1", "--repeat-corpus", "1", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert [r["format"] for r in result["rows"]] == ["jsonl", "conll", "stix"]
    assert result["examples"]["bundles"] >= 4 and result["examples"]["objects"] >= result["examples"]["bundles"]


@pytest.mark.skipif(not (DNRTI / "test.txt").is_file(), reason="needs DNRTI")
def test_bench_markers_and_ensembles_sections_time_bundles_side_by_side(tmp_path, tiny_bundles, tokenizer):
    import dataclasses

    from conftest import CHECK_SENTENCES, make_tiny_model, tiny_sentences
    from ner_batch.export.build import build_bundle
    from ner_batch.models import build_model
    from ner_batch.models.ensemble import EnsembleTagger

    runs, export = tmp_path / "runs", tmp_path / "export"
    export.mkdir()
    for head in ("softmax", "crf"):  # crf has no marker bundle beside it: skipped, and said so
        path, model, _ = tiny_bundles[head]
        model.save(runs / head / "best", tokenizer)
        (export / head).symlink_to(path)
    marked = build_model(dataclasses.replace(make_tiny_model("softmax", seed=7).config, shape_markers=True), pretrained=False)
    build_bundle(tmp_path / "run-shape", export / "softmax-shape", model=marked, tokenizer=tokenizer,
                 check_sentences=CHECK_SENTENCES, eval_split=("tiny", tiny_sentences(), [True, False]), log=lambda m: None)
    ensemble = EnsembleTagger([make_tiny_model("softmax", seed=7), make_tiny_model("softmax", seed=8)])
    build_bundle([tmp_path / "a", tmp_path / "b"], export / "softmax-x2", model=ensemble, tokenizer=tokenizer,
                 check_sentences=CHECK_SENTENCES, variants=("fp32", "opt", "int8"), log=lambda m: None)
    out = tmp_path / "results"
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--runs", str(runs), "--export", str(export), "--data", str(DNRTI),
           "--repeat", "1", "--repeats", "1", "--sections", "markers", "ensembles", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [r for r in json.loads((out / "latest.json").read_text())["rows"] if r["section"] == "markers"]
    assert [r["system"] for r in rows] == [f"softmax {side}, ner-batch {v}, 1 worker" for v in ("fp32", "int8")
                                           for side in ("no markers", "+ shape markers")]
    assert all(r["rounds"] == 5 and len(r["runs_s"]) == 5 for r in rows)
    assert rows[1]["word_pieces"] > rows[0]["word_pieces"] and rows[1]["speed_vs_no_markers"] > 0
    md = (out / "latest.md").read_text()
    assert "| softmax + shape markers, ner-batch int8, 1 worker | int8 |" in md
    assert "| section | system |" not in md and "Command: `bench/run.py --sections markers ensembles`" in md  # a partial run says so
    assert "No peers in this run, so no ratios" in md and "best peer row" not in md
    assert "markers: no crf bundle pair with and without shape markers; skipped" in res.stderr
    ens = [r for r in json.loads((out / "latest.json").read_text())["rows"] if r["section"] == "ensembles"]
    source = json.loads((export / "softmax" / "manifest.json").read_text())["source_run"]  # the row names the run it times
    assert [r["system"] for r in ens] == [f"{name}, ner-batch {v}, 1 worker" for v in ("opt", "int8")
                                          for name in (f"softmax (default, from {source})", "softmax-x2 (ensemble of 2)")]
    assert ens[0]["speed_vs_first"] == 1.0 and ens[1]["speed_vs_first"] > 0 and len(ens[1]["runs_s"]) == 5
    assert "| softmax-x2 (ensemble of 2), ner-batch int8, 1 worker | int8 |" in md
    assert "ensembles: no crf ensemble bundle (export/crf-xN); skipped" in res.stderr


@pytest.mark.skipif(not (DNRTI / "test.txt").is_file(), reason="needs DNRTI")
def test_bench_sections_need_only_their_own_models(tmp_path):
    runs, export, out = tmp_path / "runs", tmp_path / "export", tmp_path / "results"
    runs.mkdir()
    export.mkdir()
    base = [sys.executable, str(ROOT / "bench" / "run.py"), "--runs", str(runs), "--export", str(export), "--data", str(DNRTI),
            "--repeat", "1", "--repeats", "1", "--out", str(out)]
    res = subprocess.run(base + ["--sections", "crf"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1] == \
        f"bench: expected {runs / 'crf' / 'best'}; run `make train` and `make export` first"  # the crf only, not softmax
    res = subprocess.run(base + ["--sections", "roofline"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 2 and f"expected {runs / 'softmax' / 'best'}" in res.stderr
    res = subprocess.run(base + ["--sections", "decode"], capture_output=True, text=True, timeout=600)  # needs no model
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads((out / "latest.json").read_text())["rows"]
    assert rows and {r["section"] for r in rows} == {"decode"}


def test_bench_text_cuts_joined_records_back_into_sentences():
    sys.path.insert(0, str(ROOT / "bench"))
    from text import per_sentence

    from ner_batch.gold_spans import GoldDoc, GoldFile, TaggedDoc

    texts = ["APT28 used X-Agent", "Lazarus Group", "It ran"]  # joined: "APT28 used X-Agent Lazarus Group It ran"
    gold = GoldFile("g", [GoldDoc(f"s{i}", i, [], t) for i, t in enumerate(texts)], [])
    joined = " ".join(texts)
    spans = [(0, 5, "HackOrg"), (11, 18, "Tool"), (19, 32, "HackOrg"), (33, 35, "Way")]
    out = per_sentence({"d0": TaggedDoc(spans, [joined[s:e] for s, e, _ in spans])}, gold, 3)
    assert out["s0"].spans == [(0, 5, "HackOrg"), (11, 18, "Tool")] and out["s1"].spans == [(0, 13, "HackOrg")]
    assert out["s2"].spans == [(0, 2, "Way")] and [texts[i][s:e] for i in range(3) for s, e, _ in out[f"s{i}"].spans] == \
        ["APT28", "X-Agent", "Lazarus Group", "It"]
    one = per_sentence({f"d{i}": TaggedDoc([], []) for i in range(3)}, gold, 1)
    assert set(one) == {"s0", "s1", "s2"}


def test_bench_text_trims_span_edges_alike_in_gold_and_records():
    sys.path.insert(0, str(ROOT / "bench"))
    from text import trim, trimmed_gold, trimmed_tags

    from ner_batch.gold_spans import GoldDoc, GoldFile, TaggedDoc

    text = "(EternalBlue) and APT28's tool Intel® U.S. ''"
    at = {w: (text.index(w), text.index(w) + len(w)) for w in ("(EternalBlue)", "APT28's", "Intel®", "U.S.", "''")}
    got = {w: trim(text, (*at[w], "X")) for w in at}
    assert {w: text[s:e] for w, (s, e, _) in ((w, g) for w, g in got.items() if g)} == {
        "(EternalBlue)": "EternalBlue", "APT28's": "APT28", "Intel®": "Intel", "U.S.": "U.S"}
    assert got["''"] is None and trim("it's", (0, 4, "X")) == (0, 2, "X")  # 's off, then nothing more to trim
    assert trim("APT28 (", (0, 9, "X")) == (0, 9, "X")  # past the sentence's end (a joined record): left as it is
    gold = GoldFile("g", [GoldDoc("s0", 1, [(*at["(EternalBlue)"], "Tool"), (*at["''"], "Tool")], text)], [])
    records = {"s0": TaggedDoc([(at["(EternalBlue)"][0] + 1, at["(EternalBlue)"][1] - 1, "Tool")], ["EternalBlue"])}
    g, t = trimmed_gold(gold), trimmed_tags(gold, records)
    assert g.docs[0].spans == t["s0"].spans == [(1, 12, "Tool")]  # the gold's "(EternalBlue)" now matches; "''" is gone


@pytest.mark.skipif(not (DNRTI / "test.txt").is_file(), reason="needs DNRTI")
def test_bench_text_smoke(tmp_path, tiny_bundles):
    export = tmp_path / "export"
    export.mkdir()
    (export / "crf").symlink_to(tiny_bundles["crf"][0])
    out = tmp_path / "results" / "text"
    cmd = [sys.executable, str(ROOT / "bench" / "text.py"), "--export", str(export), "--data", str(DNRTI), "--bundles", "crf",
           "--splits", "valid", "--joins", "1", "7", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [(r["join"], r["input"]) for r in rows] == [(1, "tokens"), (1, "text"), (7, "tokens"), (7, "text")]
    assert all(r["sentences"] == 662 and 0 <= r["f1"] <= 100 and r["same_words"] == rows[0]["same_words"] for r in rows)
    assert "| crf | valid | 7 | text |" in out.with_suffix(".md").read_text()
    assert all(0 <= r["f1_trimmed"] <= 100 and 0 <= r["unseen_f1_trimmed"] <= 100 for r in rows)


@pytest.mark.skipif(not (DNRTI / "test.txt").is_file(), reason="needs DNRTI")
def test_bench_text_against_a_bundle_pairs_the_same_sentences(tmp_path, tiny_bundles):
    export = tmp_path / "export"
    export.mkdir()
    for name, head in (("crf", "crf"), ("crf-copy", "crf"), ("softmax", "softmax")):
        (export / name).symlink_to(tiny_bundles[head][0])
    out = tmp_path / "text"
    cmd = [sys.executable, str(ROOT / "bench" / "text.py"), "--export", str(export), "--data", str(DNRTI), "--splits", "valid",
           "--joins", "1", "--out", str(out)]
    res = subprocess.run(cmd + ["--bundles", "crf-copy", "softmax", "--against", "crf"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {(r["bundle"], r["input"]): r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    assert [b for b, _ in rows] == ["crf", "crf", "crf-copy", "crf-copy", "softmax", "softmax"]  # the reference first
    for kind in ("tokens", "text"):
        assert "against" not in rows[("crf", kind)]
        # the same model on the same sentences: every resample differs by exactly 0 (an unpaired draw would not)
        for key, suffix in (("against", ""), ("against_trimmed", "_trimmed")):  # as scored, and with span edges trimmed
            assert rows[("crf-copy", kind)][key]["all"] == {"difference": 0.0, "interval": [0.0, 0.0]}
            other = rows[("softmax", kind)][key]
            assert other["all"]["difference"] == pytest.approx(
                rows[("softmax", kind)]["f1" + suffix] - rows[("crf", kind)]["f1" + suffix], abs=0.011)
            assert other["unseen"]["difference"] == pytest.approx(
                rows[("softmax", kind)]["unseen_f1" + suffix] - rows[("crf", kind)]["unseen_f1" + suffix], abs=0.011)
            lo, hi = other["all"]["interval"]
            assert lo <= other["all"]["difference"] <= hi
    assert "| crf-copy | valid | 1 | text |" in out.with_suffix(".md").read_text()
    res = subprocess.run(cmd + ["--bundles", "crf", "--against", "nothing"], capture_output=True, text=True, timeout=600)
    assert res.returncode != 0 and res.stderr.strip().splitlines()[-1] == (
        f"--against nothing: expected a bundle at {export / 'nothing'} (a directory with manifest.json), found none")


def test_bench_soup_parts_averages_one_part_and_keeps_the_other():
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from soup_parts import mixed_state

    average = {"encoder.encoder.layer.0.w": torch.tensor([1.0]), "encoder.embeddings.e": torch.tensor([2.0]),
               "head.emission.weight": torch.tensor([3.0])}
    own = {k: v + 10 for k, v in average.items()}
    assert mixed_state(average, own, "encoder") == {"encoder.encoder.layer.0.w": average["encoder.encoder.layer.0.w"],
                                                    "encoder.embeddings.e": average["encoder.embeddings.e"],
                                                    "head.emission.weight": own["head.emission.weight"]}
    assert mixed_state(average, own, "head") == {"encoder.encoder.layer.0.w": own["encoder.encoder.layer.0.w"],
                                                 "encoder.embeddings.e": own["encoder.embeddings.e"],
                                                 "head.emission.weight": average["head.emission.weight"]}
    with pytest.raises(ValueError, match="expected the averaged part to be 'encoder' or 'head', got 'lstm'"):
        mixed_state(average, own, "lstm")


def test_bench_soup_parts_scores_each_mixture_on_valid(tmp_path, tokenizer, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    from conftest import tiny_splits, train_tiny_runs
    from soup_parts import main, measure, table

    runs = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1, 2), head="crf")
    result = measure(runs, tiny_splits(), own=[1], progress=lambda _: None)
    assert [r["model"] for r in result["rows"]] == [
        "soup of 2 (every part averaged)", f"{runs[1]} alone", f"encoder averaged, head of {runs[1]}",
        f"head averaged, encoder of {runs[1]}"]
    # the run alone, scored here, is the run's own valid score (same sentences, same code)
    alone = json.loads((runs[1] / "metrics.json").read_text())["valid"]
    assert result["rows"][1]["valid_f1"] == round(100 * alone["f1"], 2)
    assert all(r["calibrated_valid_f1"] >= r["valid_f1"] for r in result["rows"])  # shift 0 is in the grid
    assert list(result["spread"]) == ["embeddings", "layer 0", "layer 1", "head"]
    assert f"| encoder averaged, head of {runs[1]} |" in table(result)
    with pytest.raises(ValueError, match=r"expected --own between 0 and 1 \(an index into the runs\), got 2"):
        measure(runs, tiny_splits(), own=[2])
    assert main([str(runs[0]), "--name", "x", "--out-dir", str(tmp_path / "r")]) == 2  # one run cannot be souped
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: expected at least 2 runs to average, got 1"


@pytest.mark.skipif(not (DNRTI / "test.txt").is_file(), reason="needs DNRTI")
def test_bench_pooling_section_times_a_mean_pooled_bundle_beside_its_first_piece_twin(tmp_path, tokenizer):
    from conftest import CHECK_SENTENCES, make_tiny_model
    from ner_batch.export.build import build_bundle

    runs, export, out = tmp_path / "runs", tmp_path / "export", tmp_path / "results"
    export.mkdir()
    base = [sys.executable, str(ROOT / "bench" / "run.py"), "--runs", str(runs), "--export", str(export), "--data", str(DNRTI),
            "--repeat", "1", "--repeats", "1", "--sections", "pooling", "--out", str(out)]
    res = subprocess.run(base, capture_output=True, text=True, timeout=600)  # nothing mean-pooled: said, not an error
    assert res.returncode == 0, res.stderr[-3000:]
    assert "pooling: no bundle of a model trained with --word-pooling mean in export/; skipped" in res.stderr

    model = make_tiny_model("crf", seed=7, word_pooling="mean")
    model.save(runs / "crf-wpmean" / "best", tokenizer)
    build_bundle(runs / "crf-wpmean", export / "crf-wpmean", model=model, tokenizer=tokenizer, check_sentences=CHECK_SENTENCES,
                 variants=("fp32", "opt", "int8"), log=lambda m: None)
    (export / "crf-gone").mkdir()  # a bundle whose run is not on this machine (the twin needs its weights): said, skipped
    gone = {**json.loads((export / "crf-wpmean" / "manifest.json").read_text()), "source_run": str(tmp_path / "elsewhere")}
    (export / "crf-gone" / "manifest.json").write_text(json.dumps(gone))
    res = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"pooling: crf-gone's run {tmp_path / 'elsewhere'} (manifest source_run) is not on this machine; skipped" in res.stderr
    result = json.loads((out / "latest.json").read_text())
    rows = [r for r in result["rows"] if r["section"] == "pooling"]
    assert [r["system"] for r in rows] == [f"crf-wpmean {side}, ner-batch {v}, 1 worker" for v in ("opt", "int8")
                                           for side in ("first-piece twin (speed only)", "(mean pooling)")]
    assert rows[0]["word_pieces"] == rows[1]["word_pieces"] and rows[0]["speed_vs_first"] == 1.0 and rows[1]["speed_vs_first"] > 0
    assert all(len(r["runs_s"]) == 5 for r in rows)
    assert result["extra"]["pooling"]["crf-wpmean"] == {"source_run": str(runs / "crf-wpmean"), "word_pooling": "mean",
                                                        "twin_word_pooling": "first"}
    assert "Word pooling (issue 10)" in (out / "latest.md").read_text()
    assert "| crf-wpmean (mean pooling), ner-batch int8, 1 worker | int8 |" in (out / "latest.md").read_text()
