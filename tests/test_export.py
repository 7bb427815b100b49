"""Export: ONNX == PyTorch at other shapes, the export check's failure path, bundle errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from conftest import CHECK_SENTENCES, LABELS
from ner_batch.encoding import Windower
from ner_batch.export.check import ExportCheckError, check_export
from ner_batch.runtime.bundle import Bundle, BundleError, sha256
from ner_batch.runtime.tagger import Tagger
from ner_batch.training.trainer import predict_tokens, to_torch

HEADS = ["softmax", "crf"]


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("variant", ["fp32", "opt"])
def test_bundle_matches_pytorch_at_other_shapes(head, variant, tiny_bundles, windower):
    _assert_bundle_matches_pytorch(*tiny_bundles[head], variant)


def test_a_crf_without_lstm_exports_and_matches_pytorch(tmp_path, tokenizer):
    from conftest import make_tiny_model, tiny_sentences
    from ner_batch.export.build import build_bundle

    model = make_tiny_model("crf", seed=7, lstm_hidden=0)
    assert model.head.forward_lstm is None and model.head.emission.in_features == 32  # the encoder's width
    manifest = build_bundle(tmp_path / "run", tmp_path / "crf-nolstm", model=model, tokenizer=tokenizer,
                            check_sentences=CHECK_SENTENCES, eval_split=("tiny", tiny_sentences(), [True, False]),
                            log=lambda m: None)
    assert manifest["head"] == "crf" and manifest["lstm"] is None
    for variant in ("fp32", "opt"):
        _assert_bundle_matches_pytorch(tmp_path / "crf-nolstm", model, manifest, variant)


def _assert_bundle_matches_pytorch(path, model, manifest, variant):
    tagger = Tagger(path, variant, device="cpu")
    windows = tagger.windower.windows(CHECK_SENTENCES)
    for size in (1, 2, 5, len(windows)):  # the graph was traced at batch 2 with the first two windows
        for start in range(0, len(windows) - size + 1, max(1, size)):
            batch = tagger.windower.collate(windows[start : start + size])
            with torch.no_grad():
                ref = model(**to_torch(batch)).numpy()
            got = tagger.emit(batch)
            mask = batch.word_mask.astype(bool)
            np.testing.assert_allclose(got[mask], ref[mask], atol=1e-4, rtol=1e-4)
    # Same labels as the PyTorch model's own decoding.
    expected = predict_tokens(model, Windower(tagger.windower.tokenizer, manifest["max_length"]), CHECK_SENTENCES)
    assert [w.labels for w in tagger.tag_words(CHECK_SENTENCES)] == expected


@pytest.mark.parametrize("head", HEADS)
def test_batched_equals_one_by_one_in_the_runtime(head, tiny_bundles):
    tagger = Tagger(tiny_bundles[head][0], "fp32", device="cpu")
    together = tagger.tag_words(CHECK_SENTENCES)
    for sentence, result in zip(CHECK_SENTENCES, together):
        [alone] = tagger.tag_words([sentence])
        assert alone.labels == result.labels
        np.testing.assert_allclose(alone.scores, result.scores, atol=1e-5)
        assert all(0.0 <= s <= 1.0 for s in alone.scores)


@pytest.mark.parametrize("head", HEADS)
def test_manifest_records_checks_variants_scores_and_checksums(head, tiny_bundles):
    path, _, manifest = tiny_bundles[head]
    assert manifest["head"] == head and manifest["num_labels"] == len(LABELS)
    assert manifest["export_check"]["fp32"]["max_abs_diff"] < 1e-3
    assert set(manifest["variants"]) == {"fp32", "opt", "int8", "int8-dynamic", "fp16"}
    assert manifest["variants"]["opt"]["fused_operators"].get("Attention") == 2
    for v in ("fp32", "opt", "int8", "int8-dynamic"):
        assert 0.0 <= manifest["variants"][v]["f1"]["f1"] <= 1.0
        assert manifest["variants"][v]["f1"]["cpu"]["class"]  # the CPU its F1 was measured on
        assert manifest["variants"][v]["batch_independent"] == (v != "int8-dynamic")
    assert "unverified" in manifest["variants"]["fp16"]["f1"]
    on_disk = json.loads((path / "manifest.json").read_text())
    for name, digest in on_disk["files"].items():
        assert sha256(path / name) == digest
    assert ("crf.json" in on_disk["files"]) == (head == "crf")
    assert on_disk["versions"]["onnxruntime-gpu" if "onnxruntime-gpu" in on_disk["versions"] else "onnxruntime"]


@pytest.mark.parametrize("head", HEADS)
def test_int8_is_static_qdq_of_the_encoder_matmuls_only(head, tiny_bundles):
    path, _, manifest = tiny_bundles[head]
    info = manifest["variants"]["int8"]
    graph = onnx.load(str(path / "model.int8.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert "DynamicQuantizeLinear" not in ops and ops.count("QuantizeLinear") > 0
    # every encoder MatMul gets quantized inputs; the head's MatMuls (emission layer) stay fp32
    produced_by = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        fed = [produced_by[i].op_type if i in produced_by else "initializer" for i in node.input]
        quantized = node.name.startswith("/encoder/") and "/output/dense/" not in node.name.replace("attention/output", "")
        assert ("DequantizeLinear" in fed) == quantized, (node.name, fed)
    # 2 layers x 7 MatMuls (Q, K, V, scores, context, attention output, FFN in); FFN out stays fp32
    assert info["quantized_matmuls"] == 2 * 7 and info["fp32_matmuls"] >= 2 + 1
    tagger = Tagger(path, "int8", device="cpu")
    assert len(tagger.tag_words(CHECK_SENTENCES)) == len(CHECK_SENTENCES)


def test_static_int8_calibration_in_pieces_of_rows_gives_the_same_scales(tiny_bundles, windower, tmp_path):
    """Calibration batches reach ONNX Runtime a few rows at a time (its calibrator's memory grows
    with the batch); the min/max scales are those of whole batches, and every row is fed once."""
    from ner_batch.export.build import calibration_batches
    from ner_batch.export.variants import CALIBRATION_ROWS, _Calibration, quantize_int8_static

    path, _, manifest = tiny_bundles["crf"]
    assert manifest["variants"]["int8"]["calibration_rows_per_run"] == CALIBRATION_ROWS
    batches = calibration_batches(windower, CHECK_SENTENCES * 3)
    assert max(len(b["input_ids"]) for b in batches) > 2  # else the pieces would be the batches
    names = list(batches[0])
    pieces = list(iter(_Calibration(batches, names, rows=2).get_next, None))
    assert all(len(p["input_ids"]) <= 2 for p in pieces)
    assert sum(len(p["input_ids"]) for p in pieces) == sum(len(b["input_ids"]) for b in batches)
    assert [len(p["input_ids"]) for p in iter(_Calibration(batches, names).get_next, None)] == [len(b["input_ids"]) for b in batches]
    with pytest.raises(ValueError, match="expected 0 .whole batches. or more rows per calibration run, got -1"):
        _Calibration(batches, names, rows=-1)

    scales = {}
    for rows in (0, 1, 2):
        out = tmp_path / f"int8-{rows}.onnx"
        info = quantize_int8_static(path / "model.onnx", out, batches, rows=rows)
        assert info["calibration_rows_per_run"] == (rows or "whole batches")
        scales[rows] = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer
                        if i.name.endswith(("_scale", "_zero_point"))}
    assert scales[0] and scales[0].keys() == scales[1].keys() == scales[2].keys()
    for name, whole in scales[0].items():
        for rows in (1, 2):
            np.testing.assert_allclose(scales[rows][name], whole, rtol=1e-5, atol=0, err_msg=name)


def test_export_check_fails_naming_output_and_difference(tiny_bundles, tmp_path, windower):
    path, model, _ = tiny_bundles["softmax"]
    graph = onnx.load(str(path / "model.onnx"))
    bias = [t for t in graph.graph.initializer if t.name.endswith("classifier.bias")][0]
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.5, bias.name))
    onnx.save(graph, str(tmp_path / "broken.onnx"))
    windows = windower.windows(CHECK_SENTENCES)
    with pytest.raises(ExportCheckError, match=r"output 'emissions' differs from PyTorch by 0\.5 \(tolerance 0\.001\)"):
        check_export(model, tmp_path / "broken.onnx", windower, [windows[:3]], 1e-3)


def _copy(tiny_bundles, tmp_path, head="crf"):
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundles[head][0], dst)
    return dst


def _rewrite_manifest(path, **changes):
    m = json.loads((path / "manifest.json").read_text())
    m.update(changes)
    (path / "manifest.json").write_text(json.dumps(m))
    return m


def test_missing_file(tiny_bundles, tmp_path):
    b = _copy(tiny_bundles, tmp_path)
    (b / "model.onnx").unlink()
    bundle = Bundle.load(b)  # the other variants still load
    with pytest.raises(BundleError, match=r"expected model.onnx \(listed in manifest.json\), found it missing"):
        bundle.model_path("fp32")


def test_corrupted_file(tiny_bundles, tmp_path):
    b = _copy(tiny_bundles, tmp_path)
    with open(b / "model.int8.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(BundleError, match=r"model.int8.onnx does not match its checksum"):
        Bundle.load(b).model_path("int8")


def test_wrong_label_count(tiny_bundles, tmp_path):
    b = _copy(tiny_bundles, tmp_path)
    (b / "labels.json").write_text(json.dumps(LABELS[:5]))
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["labels.json"] = sha256(b / "labels.json")
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"expected 7 labels in labels.json \(manifest num_labels\), got 5"):
        Bundle.load(b)


def test_graph_and_labels_disagree(tiny_bundles, tmp_path):
    b = _copy(tiny_bundles, tmp_path, "softmax")
    labels = LABELS + ["B-Exp", "I-Exp"]
    (b / "labels.json").write_text(json.dumps(labels))
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["labels.json"] = sha256(b / "labels.json")
    m["num_labels"] = 9
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"expected the graph to emit 9 labels \(labels.json\), got 7"):
        Tagger(b, "fp32", device="cpu")


def test_no_manifest_wrong_version_and_missing_variant(tiny_bundles, tmp_path):
    b = _copy(tiny_bundles, tmp_path)
    with pytest.raises(BundleError, match="has no 'nope' variant|expected a variant among"):
        Bundle.load(b).model_path("nope")
    _rewrite_manifest(b, format_version=99)
    with pytest.raises(BundleError, match=r"expected bundle format version 2, found 99"):
        Bundle.load(b)
    (b / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"expected manifest.json in a model bundle, found none"):
        Bundle.load(b)
    with pytest.raises(BundleError, match=r"expected a model bundle directory at .*missing, found nothing"):
        Bundle.load(tmp_path / "missing")


def test_runtime_imports_and_tags_without_torch(tiny_bundles):
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "from ner_batch.runtime.tagger import Tagger\n"
        "import ner_batch.cli\n"
        f"t = Tagger({str(tiny_bundles['crf'][0])!r}, 'fp32', device='cpu')\n"
        "print(len(t.tag_words([['APT28', 'used', 'X-Agent']])[0].labels))\n"
        "assert 'transformers' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"


def test_evaluate_a_bundle_with_joined_sentences(tmp_path, tiny_bundles):
    from click.testing import CliRunner

    from conftest import TINY_SENTENCES, write_tiny_data
    from ner_batch.cli import main

    data = write_tiny_data(tmp_path / "data", TINY_SENTENCES * 4)
    runner = CliRunner()
    results = {}
    for join in (1, 3):
        res = runner.invoke(main, ["evaluate", "--bundle", str(tiny_bundles["crf"][0]), "--device", "cpu", "--data", str(data),
                                   "--join", str(join), "--json"])
        assert res.exit_code == 0, res.output
        assert "measured on this machine's CPU:" in res.output
        results[join] = json.loads(res.output.strip().splitlines()[-1])
        assert results[join]["join"] == join and results[join]["sentences"] == 8 and results[join]["cpu"]["class"]
    assert set(results[1]["confusion"]) == {"matrix", "exact", "top"}
    res = runner.invoke(main, ["evaluate", "--bundle", str(tiny_bundles["crf"][0]), "--device", "cpu", "--data", str(data),
                               "--confusions"])
    assert res.exit_code == 0 and "type confusion, span level" in res.output, res.output
    res = runner.invoke(main, ["evaluate", "--bundle", str(tiny_bundles["crf"][0]), "--data", str(data), "--join", "0"])
    assert res.exit_code == 2 and "--join" in res.output


def test_evaluate_reads_sentences_with_their_neighbours_from_a_bundle_and_a_run_alike(tmp_path, tiny_bundles, tokenizer):
    from click.testing import CliRunner

    from conftest import TINY_SENTENCES, write_tiny_data
    from ner_batch.cli import main

    data = write_tiny_data(tmp_path / "data", TINY_SENTENCES * 4)
    bundle, run = tiny_bundles["crf"][0], tmp_path / "run"
    tiny_bundles["crf"][1].save(run / "best", tokenizer)  # the bundle's own model as a run
    runner = CliRunner()
    base = ["evaluate", "--device", "cpu", "--data", str(data), "--json", "--bootstrap", "0"]
    out = {}
    for source in (["--bundle", str(bundle)], ["--run", str(run)]):
        for n in (0, 16):
            res = runner.invoke(main, base + source + ["--neighbours", str(n)])
            assert res.exit_code == 0, res.output
            out[source[0], n] = json.loads(res.output.strip().splitlines()[-1])
            assert out[source[0], n]["neighbours"] == n and out[source[0], n]["sentences"] == 8
    for n in (0, 16):  # ONNX and PyTorch read the neighbours the same way
        assert [out["--bundle", n][k] for k in ("f1", "accuracy")] == pytest.approx([out["--run", n][k] for k in ("f1", "accuracy")])
    for source in ("--bundle", "--run"):  # and the neighbours change what the (random) model tags
        assert out[source, 16]["accuracy"] != out[source, 0]["accuracy"]
    res = runner.invoke(main, ["evaluate", "--bundle", str(bundle), "--data", str(data), "--neighbours", "8", "--join", "3"])
    assert res.exit_code == 2 and "--neighbours reads each sentence with the ones around it; give it without --join" in res.output
    res = runner.invoke(main, ["evaluate", "--bundle", str(bundle), "--data", str(data), "--neighbours", "8",
                               "--swap-names", "synthetic"])
    assert res.exit_code == 2 and "give it without --swap-names" in res.output
    res = runner.invoke(main, ["evaluate", "--bundle", str(bundle), "--data", str(data), "--neighbours", "-1"])
    assert res.exit_code == 2 and "--neighbours" in res.output



@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "sub/model.onnx", "..", ""])
def test_manifest_paths_outside_the_bundle_are_refused(tiny_bundles, tmp_path, name):
    b = _copy(tiny_bundles, tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    m["files"][name] = "0" * 64
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="expected plain file names inside the bundle"):
        Bundle.load(b)


def test_a_model_file_the_manifest_does_not_list_is_not_loaded(tiny_bundles, tmp_path):
    b = _copy(tiny_bundles, tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    del m["files"]["model.opt.onnx"]
    (b / "manifest.json").write_text(json.dumps(m))
    with open(b / "model.opt.onnx", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(BundleError, match="model.opt.onnx is not listed with a checksum in manifest.json"):
        Tagger(b, "opt", device="cpu")


def test_a_bundle_file_that_links_out_is_refused(tiny_bundles, tmp_path):
    b = _copy(tiny_bundles, tmp_path)
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(b / "model.onnx", outside)
    (b / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="model.onnx is a link out of the bundle"):
        Bundle.load(b).model_path("fp32")


@pytest.mark.parametrize("change, message", [
    ({"files": ["model.onnx"]}, "expected 'files' to map file names to sha256 strings, found list"),
    ({"num_labels": "many"}, "expected num_labels to be a positive integer, found 'many'"),
    ({"max_length": None}, "expected max_length to be an integer"),
    ({"variants": []}, "expected 'variants' to be an object"),
])
def test_malformed_manifest_is_a_bundle_error(tiny_bundles, tmp_path, change, message):
    b = _copy(tiny_bundles, tmp_path)
    _rewrite_manifest(b, **change)
    with pytest.raises(BundleError, match=re.escape(message)):
        Bundle.load(b)


def test_crf_json_without_end_is_a_bundle_error(tiny_bundles, tmp_path):
    b = _copy(tiny_bundles, tmp_path)
    raw = json.loads((b / "crf.json").read_text())
    del raw["end"]
    (b / "crf.json").write_text(json.dumps(raw))
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["crf.json"] = sha256(b / "crf.json")
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"crf.json: expected keys transitions, start and end, found \['end'\] missing"):
        Bundle.load(b)
