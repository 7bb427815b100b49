"""Build a model bundle from a training run: ONNX graph, variants, checks, scores, manifest.

The bundle is written to a temporary sibling directory and renamed into place at the
end, so ``export/<name>`` is either the previous bundle or the complete new one.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ..batching import BatchSettings, plan_batches
from ..cpu import cpu_info
from ..data.conll import Sentence
from ..encoding import Windower
from ..evaluation import score
from ..models.ensemble import EnsembleTagger
from ..models.tagger import WordTagger
from ..training.ensemble import load_runs
from ..runtime import bundle as fmt
from ..runtime.tagger import Tagger
from .check import ExportCheckError, check_batches, check_export, max_abs_diff
from .graph import INPUT_NAMES, OPSET, OUTPUT_NAME, export_onnx
from .variants import convert_fp16, optimize_fp32, quantize_int8_dynamic, quantize_int8_static

#: Largest |ORT - PyTorch| emission difference accepted for fp32 graphs.
FP32_TOLERANCE = 1e-3
CHECK_BATCH_SIZES = (1, 3, 7, 16)
VARIANTS = ("fp32", "opt", "int8", "int8-dynamic", "fp16")
#: Static int8 uses 7-bit weights on every CPU (see cpu.py): exact on VNNI CPUs and safe from
#: saturation on those without; its F1 cost is measured in the manifest (``int8`` vs ``fp32``).
INT8_REDUCE_RANGE = True

FALLBACK_SENTENCES = [
    "APT28 used X-Agent against government targets in Eastern Europe .".split(),
    "The Lazarus Group deployed a new variant of the Manuscrypt backdoor through spear-phishing emails in 2017 .".split(),
    "Kaspersky researchers attributed the campaign , which abused CVE-2017-11882 in Microsoft Office documents "
    "to drop a PowerShell loader , to a Chinese-speaking actor targeting the energy sector .".split(),
]


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("ner-batch", "torch", "transformers", "onnx", "onnxruntime-gpu", "onnxruntime", "tokenizers", "numpy", "optimum", "optimum-onnx"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def evaluate_tagger(tagger: Tagger, sentences: Sequence[Sentence], unseen: Sequence[bool] | None) -> dict[str, Any]:
    pred = tagger.tag_words([s.tokens for s in sentences])
    return score([s.labels for s in sentences], [p.labels for p in pred], unseen)


def calibration_batches(windower: Windower, sentences: Sequence[Sequence[str]], batching: BatchSettings | None = None) -> list[dict]:
    """Graph inputs for static int8 calibration, batched as the runtime batches."""
    batching = batching or BatchSettings()
    windows = windower.windows(sentences)
    return [windower.collate([windows[i] for i in idx]).inputs()
            for idx in plan_batches(windows, batching.token_budget, batching.max_batch)]


def calibration_sentences(train: Sequence[Sentence], n: int = 256, joined: int = 48, per_join: int = 8) -> list[list[str]]:
    """The first ``n`` train sentences, and ``joined`` runs of ``per_join`` consecutive ones
    made single long sequences, so that calibration sees full windows as the runtime does."""
    singles = [list(s.tokens) for s in train[:n]]
    runs = [[w for s in train[n + k * per_join : n + (k + 1) * per_join] for w in s.tokens] for k in range(joined)]
    return singles + [r for r in runs if r]


def build_bundle(
    run_dir: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    check_sentences: Sequence[Sequence[str]] | None = None,
    calibration: Sequence[Sequence[str]] | None = None,
    eval_split: tuple[str, Sequence[Sentence], Sequence[bool] | None] | None = None,
    variants: Sequence[str] = VARIANTS,
    tolerance: float = FP32_TOLERANCE,
    log: Callable[[str], None] = print,
    model: WordTagger | EnsembleTagger | None = None,
    tokenizer=None,
) -> dict[str, Any]:
    """Export ``run_dir`` (a run, or its ``best/``) to a bundle at ``out_dir``; given several
    runs, their output ensemble (one graph, one encoder per run; see models/ensemble.py).

    ``check_sentences`` feed the export check (default: a few built-in CTI sentences);
    ``calibration`` sentences fix the static int8 scales (default: ``check_sentences``);
    ``eval_split`` = (name, sentences, unseen mask) is scored with every variant.
    """
    runs = [Path(run_dir)] if isinstance(run_dir, (str, Path)) else [Path(r) for r in run_dir]
    if model is None:
        model, tokenizer = load_runs(runs)
    cfg = model.config
    encoders = len(model.members) if isinstance(model, EnsembleTagger) else 1
    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.time()

    windower = cfg.windower(tokenizer)
    tokenizer.backend_tokenizer.save(str(tmp / fmt.TOKENIZER))
    (tmp / fmt.LABELS).write_text(json.dumps(cfg.labels, indent=1) + "\n")
    params = model.decoder_params()
    if params:
        (tmp / fmt.CRF).write_text(json.dumps({k: v.tolist() for k, v in params.items()}) + "\n")

    sentences = list(check_sentences or FALLBACK_SENTENCES)
    windows = windower.windows(sentences)
    traced = windower.collate(windows[:2])
    fp32 = export_onnx(model, traced, tmp / fmt.VARIANT_FILES["fp32"])
    batches = check_batches(windows, CHECK_BATCH_SIZES)
    # Every check batch differs from the traced one in batch size or length.
    shapes = {(len(b), max(w.n_tokens for w in b)): b for b in batches}
    shapes.pop(tuple(traced.input_ids.shape), None)
    batches = list(shapes.values())
    log(f"exported {fp32.name}: traced at batch {traced.input_ids.shape[0]} x {traced.input_ids.shape[1]} tokens; "
        f"checking at {[(len(b), max(w.n_tokens for w in b)) for b in batches]}")

    checks: dict[str, Any] = {"fp32": check_export(model, fp32, windower, batches, tolerance)}
    log(f"  fp32 check: max |ORT - PyTorch| = {checks['fp32']['max_abs_diff']:.2e}")
    variant_info: dict[str, Any] = {"fp32": {}}
    if "opt" in variants:
        fused = optimize_fp32(fp32, tmp / fmt.VARIANT_FILES["opt"], cfg.encoder_config, encoders)
        checks["opt"] = check_export(model, tmp / fmt.VARIANT_FILES["opt"], windower, batches, tolerance)
        variant_info["opt"] = {"fused_operators": fused}
        log(f"  opt check: max diff {checks['opt']['max_abs_diff']:.2e}; fused {fused}")
    if "int8" in variants:
        calib = calibration_batches(windower, list(calibration or sentences))
        info = quantize_int8_static(fp32, tmp / fmt.VARIANT_FILES["int8"], calib, reduce_range=INT8_REDUCE_RANGE)
        diff, rows = max_abs_diff(model, tmp / fmt.VARIANT_FILES["int8"], windower, batches)
        checks["int8"] = {"max_abs_diff": diff, "tolerance": None, "batches": rows, "note": "quantized: judged by F1, not by tolerance"}
        variant_info["int8"] = {"quantized_from": fp32.name, **info}
        log(f"  int8 (static): max diff {diff:.3f} (judged by F1); {info['quantized_matmuls']} MatMuls quantized")
    if "int8-dynamic" in variants:
        # Quantized from the plain graph: ONNX Runtime then fuses the int8 ops at load, which ran
        # faster here (306 vs 259 sentences/s on one core) than quantizing the fused graph.
        quantize_int8_dynamic(fp32, tmp / fmt.VARIANT_FILES["int8-dynamic"])
        diff, rows = max_abs_diff(model, tmp / fmt.VARIANT_FILES["int8-dynamic"], windower, batches)
        checks["int8-dynamic"] = {"max_abs_diff": diff, "tolerance": None, "batches": rows, "note": "quantized: judged by F1, not by tolerance"}
        variant_info["int8-dynamic"] = {"quantized_from": fp32.name, "method": "dynamic (activation scales per batch)"}
        log(f"  int8-dynamic: max diff {diff:.3f} (judged by F1)")
    if "fp16" in variants:
        convert_fp16(fp32, tmp / fmt.VARIANT_FILES["fp16"], cfg.encoder_config, encoders)
        variant_info["fp16"] = {"device": "cuda"}
        try:
            diff, rows = max_abs_diff(model, tmp / fmt.VARIANT_FILES["fp16"], windower, batches)
            checks["fp16"] = {"max_abs_diff": diff, "tolerance": None, "batches": rows, "note": "run on CPU; not verified on CUDA"}
        except Exception as exc:  # ONNX Runtime's CPU provider lacks some fp16 kernels
            checks["fp16"] = {"max_abs_diff": None, "note": f"unverified: could not run on CPU ({type(exc).__name__})"}
        log(f"  fp16: {checks['fp16']['note']}")

    files = {p.name: fmt.sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    for name, info in variant_info.items():
        path = tmp / fmt.VARIANT_FILES[name]
        info.update({"file": path.name, "bytes": path.stat().st_size, "export_check": checks[name]["max_abs_diff"],
                     "batch_independent": name in fmt.BATCH_INDEPENDENT})
    training = [_training_summary(r) for r in runs]
    manifest: dict[str, Any] = {
        "format": fmt.FORMAT,
        "format_version": fmt.FORMAT_VERSION,
        "head": cfg.head,
        "backbone": cfg.backbone,
        "encoder_type": cfg.encoder_config.get("model_type"),
        "max_length": cfg.max_length,
        "shape_markers": cfg.shape_markers,
        "word_pooling": cfg.word_pooling,
        "label_scheme": "BIO",
        "num_labels": cfg.num_labels,
        "lstm": {"hidden": cfg.lstm_hidden, "bidirectional": cfg.lstm_bidirectional} if cfg.head == "crf" and cfg.lstm_hidden else None,
        "decoder": "viterbi" if cfg.head == "crf" else "bio-constrained-viterbi",
        "graph": {"inputs": INPUT_NAMES, "output": OUTPUT_NAME, "opset": OPSET, "emissions": "word-level (B, W, L)"},
        "source_run": str(runs[0]) if len(runs) == 1 else [str(r) for r in runs],
        "training": training[0] if len(runs) == 1 else training,
        "ensemble": {"members": encoders, "combine": "mean log-probabilities" if cfg.head == "softmax"
                     else "mean emissions and CRF scores"} if encoders > 1 else None,
        "export_check": checks,
        "variants": variant_info,
        "files": files,
        "versions": library_versions(),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (tmp / fmt.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    if eval_split is not None:
        name, sents, unseen = eval_split
        bundle = fmt.Bundle.load(tmp)
        for variant in variant_info:
            try:
                result = evaluate_tagger(Tagger(bundle, variant, device="cpu", say=lambda m: None), sents, unseen)
            except Exception as exc:  # fp16 kernels may be missing on CPU; the other variants must run
                if variant != "fp16":
                    raise
                variant_info[variant]["f1"] = {"split": name, "unverified": f"could not run on CPU ({type(exc).__name__})"}
                continue
            entry = {"split": name, "f1": result["f1"], "precision": result["precision"], "recall": result["recall"],
                     "device": "cpu", "cpu": cpu_info()}
            if "unseen" in result:
                entry["unseen_f1"] = result["unseen"]["f1"]
            if variant == "fp16":
                entry["unverified"] = "measured on CPU; no GPU ran it"
            variant_info[variant]["f1"] = entry
            log(f"  {variant}: {name} F1 {result['f1']*100:.2f}" + (f", unseen {result['unseen']['f1']*100:.2f}" if "unseen" in result else ""))
        (tmp / fmt.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)
    log(f"bundle {out_dir} written in {time.time() - started:.0f}s")
    return manifest


def _training_summary(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    out: dict[str, Any] = {"best_epoch": m.get("best_epoch"), "epochs_run": len(m.get("epochs", [])), "settings": m.get("settings")}
    for split in ("valid", "test"):
        if split in m:
            out[f"{split}_f1"] = m[split]["f1"]
            if "unseen" in m[split]:
                out[f"{split}_unseen_f1"] = m[split]["unseen"]["f1"]
    return out


__all__ = ["build_bundle", "ExportCheckError", "library_versions"]
