"""Slow tests on the real offline backbone (run with `make test-all` or `pytest -m slow`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CHECK_SENTENCES, DNRTI, LABELS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_real_backbone_exports_with_parity(head, tmp_path, tokenizer):
    from ner_batch.export.build import build_bundle
    from ner_batch.models import TaggerConfig, build_model

    model = build_model(TaggerConfig(head=head, labels=LABELS)).eval()
    manifest = build_bundle(tmp_path / "run", tmp_path / "bundle", model=model, tokenizer=tokenizer,
                            check_sentences=CHECK_SENTENCES, variants=("fp32", "opt"), log=lambda m: None)
    assert manifest["export_check"]["fp32"]["max_abs_diff"] < 1e-3
    assert manifest["variants"]["opt"]["fused_operators"]["Attention"] == 6


@pytest.mark.skipif(not (ROOT / "runs" / "crf" / "metrics.json").is_file() or not (DNRTI / "test.txt").is_file(),
                    reason="needs `make train` (runs/crf) and DNRTI")
def test_evaluate_reproduces_the_run_metrics():
    metrics = json.loads((ROOT / "runs" / "crf" / "metrics.json").read_text())
    out = subprocess.run([sys.executable, "-m", "ner_batch.cli", "evaluate", "--run", str(ROOT / "runs" / "crf"),
                          "--data", str(DNRTI), "--split", "test", "--json"], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert set(result) >= {"split", "precision", "recall", "f1", "accuracy", "per_type", "unseen"}
    assert result["f1"] == pytest.approx(metrics["test"]["f1"], abs=1e-9)
    assert result["unseen"]["sentences"] == 300
