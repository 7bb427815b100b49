"""`make bench`: ner-batch against its peers, side by side, in one run on one machine.

Rows (each with sentences/s, word pieces/s, the ratio to the best peer row of the same
precision measured in the same run, and that configuration's F1 on DNRTI test):

* each peer at its best: Hugging Face ``pipeline("token-classification")`` (PyTorch), optimum's
  ``ORTModelForTokenClassification`` fp32, the same after ``ORTOptimizer`` O2, and an int8 peer
  quantized with the ``ORTQuantizer`` preset of this CPU; each at the batch size its own
  search picked (1, 8, 16, 32, 64), in plain order and with inputs sorted by length; F1 both
  as the pipeline groups it and with the peer fed the words (first sub-word's label);
* PyTorch eager with ner-batch's batching (the tagger module, length-sorted token-budget batches);
* ner-batch ``tag`` end to end, fp32 / opt / int8, 1 and 2 workers;
* the CRF model: PyTorch + pytorch-crf's decode against ner-batch;
* decoding alone: NumPy Viterbi against pytorch-crf's decode at batch 1, 32, 256;
* the roofline: measured fp32 matmul GFLOP/s turned into the encoder's compute-bound tokens/s;
* scaling: throughput and peak RSS at 1x, 10x and 100x corpus size, and the padding ratio;
* markers, pooling and ensembles: bundles side by side in interleaved rounds (with and without
  shape markers; a bundle trained with ``--word-pooling mean`` against the same weights read by
  first pieces; each named ensemble bundle ``export/<head>-xN`` against its head's default).

Writes ``bench/results/latest.json``, ``latest.md`` and ``latest.png`` (``--stem`` other names:
``make bench-ensembles`` writes ``ensembles.*``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

sys.path.insert(0, str(HERE))

from common import machine, peak_rss_mb, timed  # noqa: E402

from ner_batch.data.dnrti import data_dir, load_split, unseen_mask  # noqa: E402
from ner_batch.evaluation import score  # noqa: E402


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def shown(path: Path) -> str:
    """A path as the committed results show it: relative to the project when inside it (no machine's home)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def source_run(manifest: dict[str, Any]) -> Path:
    """The run a one-model bundle was exported from (manifest ``source_run``; `make export` writes it
    relative to the project)."""
    source = Path(manifest["source_run"])
    return source if source.is_absolute() else ROOT / source


# ---------------------------------------------------------------- data


class Data:
    def __init__(self, directory: Path, repeat: int, raw_mb: float):
        self.directory = directory
        train, _ = load_split(directory, "train")
        self.train = train
        self.test, _ = load_split(directory, "test")
        self.unseen = unseen_mask(self.test, train)
        self.test_tokens = [s.tokens for s in self.test]
        self.timing = self.test_tokens * repeat  # "DNRTI test repeated"
        self.repeat = repeat
        # A few MB of raw text: train sentences (detokenized by spaces) in documents of 10.
        docs, size, k = [], 0, 0
        while size < raw_mb * 1e6:
            chunk = train[(k * 10) % len(train) : (k * 10) % len(train) + 10]
            text = " ".join(" ".join(s.tokens) for s in chunk)
            docs.append({"id": f"raw-{k}", "text": text})
            size += len(text.encode())
            k += 1
        self.raw_docs = docs
        self.raw_bytes = size

    @cached_property
    def valid_tokens(self) -> list[list[str]]:
        """DNRTI valid's words, read on first use (only the sections that export a bundle need them)."""
        return [s.tokens for s in load_split(self.directory, "valid")[0]]

    def f1(self, pred: list[list[str]]) -> dict[str, float]:
        r = score([s.labels for s in self.test], pred, self.unseen)
        return {"f1": round(r["f1"] * 100, 2), "unseen_f1": round(r["unseen"]["f1"] * 100, 2)}


def write_jsonl(path: Path, rows) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def tags_from_records(path: Path, n: int) -> list[list[str]]:
    """BIO tags of the first ``n`` token documents of a tags.jsonl."""
    out = []
    with open(path, encoding="utf-8") as f:
        for _, line in zip(range(n), f):
            rec = json.loads(line)
            tags = ["O"] * rec["counts"]["words"]
            for e in rec["entities"]:
                for i in range(e["token_start"], e["token_end"]):
                    tags[i] = ("B-" if i == e["token_start"] else "I-") + e["label"]
            out.append(tags)
    return out


def word_fed_tags(model, tok, sentences: list[list[str]], labels: list[str], batch_size: int = 32) -> list[list[str]]:
    """A peer fed the words it was trained on: word ids from the tokenizer, each word's first
    sub-word's argmax label (the peer's own decoding, without the pipeline's pre-tokenizer)."""
    import torch

    out: list[list[str]] = []
    for k in range(0, len(sentences), batch_size):
        chunk = sentences[k : k + batch_size]
        pieces = tok(chunk, is_split_into_words=True, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**{n: pieces[n] for n in ("input_ids", "attention_mask", "token_type_ids") if n in pieces}).logits
        best = logits.argmax(-1).tolist()
        for i, words in enumerate(chunk):
            ids, tags, prev = pieces.word_ids(i), ["O"] * len(words), None
            for pos, w in enumerate(ids):
                if w is not None and w != prev:
                    tags[w] = labels[best[i][pos]]
                prev = w
            out.append(tags)
    return out


def entities_to_tags(tokens: list[str], entities: list[dict]) -> list[str]:
    """HF pipeline entity groups (character spans over the space-joined tokens) -> BIO tags."""
    starts, pos = [], 0
    for t in tokens:
        starts.append((pos, pos + len(t)))
        pos += len(t) + 1
    tags = ["O"] * len(tokens)
    for e in entities:
        inside = [i for i, (s, t) in enumerate(starts) if s < e["end"] and t > e["start"]]
        for j, i in enumerate(inside):
            tags[i] = ("B-" if j == 0 else "I-") + e["entity_group"]
    return tags


# ---------------------------------------------------------------- sections


def precision_of(variant: str) -> str:
    """The precision a bundle variant computes in: int8 for int8 and int8-dynamic, fp32 otherwise."""
    return "int8" if variant.startswith("int8") else "fp32"


class Bench:
    def __init__(self, args):
        self.args = args
        self.rows: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="ner-batch-bench-"))

    def timing_files(self, data: Data) -> tuple[Path, Path]:
        """The timing corpus and its 64-sentence warm-up as pre-tokenized JSONL, written once per run."""
        corpus, warm = self.tmp / "timing.jsonl", self.tmp / "warm.jsonl"
        if not corpus.is_file():
            write_jsonl(corpus, ({"id": f"s{i}", "tokens": t} for i, t in enumerate(data.timing)))
            write_jsonl(warm, ({"id": f"w{i}", "tokens": t} for i, t in enumerate(data.timing[:64])))
        return corpus, warm

    def row(self, section: str, system: str, n_sent: int, n_pieces: int, t: dict, **kw) -> dict:
        r = {"section": section, "system": system, "sentences": n_sent, "median_s": round(t["median_s"], 3),
             "runs_s": t["runs_s"], "sentences_per_s": round(n_sent / t["median_s"], 1),
             "word_pieces_per_s": round(n_pieces / t["median_s"], 1), **kw}
        self.rows.append(r)
        log(f"{section:<10} {system:<48} {r['sentences_per_s']:>9.1f} sent/s  F1 {kw.get('f1', '-')}")
        return r

    # -- peers on the softmax checkpoint, each at its best
    def peers(self, data: Data, hf_dir: Path) -> None:
        """What a competent engineer does with each peer in ten lines: its best batch size
        (searched, 32 included), inputs sorted by length, ORTOptimizer, ORTQuantizer."""
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

        from ner_batch.cpu import cpu_info

        torch.set_num_threads(os.cpu_count() or 1)
        tok = AutoTokenizer.from_pretrained(hf_dir)
        texts = [" ".join(t) for t in data.timing]
        pieces = sum(len(x) for x in tok(texts)["input_ids"])
        order = sorted(range(len(texts)), key=lambda i: len(data.timing[i]))
        sorted_texts = [texts[i] for i in order]
        torch_model = AutoModelForTokenClassification.from_pretrained(hf_dir).eval()
        peers = [("HF pipeline (PyTorch)", "fp32", torch_model)]

        from optimum.onnxruntime import ORTModelForTokenClassification, ORTOptimizer, ORTQuantizer
        from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

        plain = self.tmp / "optimum"
        ORTModelForTokenClassification.from_pretrained(hf_dir, export=True, provider="CPUExecutionProvider").save_pretrained(plain)
        peers.append(("optimum ORTModel fp32", "fp32", ORTModelForTokenClassification.from_pretrained(plain)))
        o2 = self.tmp / "optimum-o2"
        ORTOptimizer.from_pretrained(plain).optimize(save_dir=o2, optimization_config=AutoOptimizationConfig.O2())
        peers.append(("optimum ORTModel fp32 + ORTOptimizer O2", "fp32", ORTModelForTokenClassification.from_pretrained(o2)))
        cls = cpu_info()["class"]
        preset = {"avx512-vnni": "avx512_vnni", "avx512": "avx512"}.get(cls, "avx2")
        q = self.tmp / "optimum-int8"
        ORTQuantizer.from_pretrained(plain).quantize(save_dir=q, quantization_config=getattr(AutoQuantizationConfig, preset)(is_static=False,
                                                                                                                      per_channel=False))
        peers.append((f"optimum int8 (ORTQuantizer {preset} dynamic)", "int8", ORTModelForTokenClassification.from_pretrained(q)))
        self.extra["optimum_int8_preset"] = preset
        for name, precision, model in peers:
            pipe = pipeline("token-classification", model=model, tokenizer=tok, aggregation_strategy="first", device=-1)
            out = pipe([" ".join(t) for t in data.test_tokens], batch_size=32)
            f1 = data.f1([entities_to_tags(t, e) for t, e in zip(data.test_tokens, out)])
            fed = data.f1(word_fed_tags(model, tok, data.test_tokens, [lab for _, lab in sorted(model.config.id2label.items())]))
            f1.update(word_fed_f1=fed["f1"], word_fed_unseen_f1=fed["unseen_f1"])
            probe = texts[: min(len(texts), 400)]
            speeds = {}
            for bs in (1, 8, 16, 32, 64):
                pipe(probe[:32], batch_size=bs)
                t0 = time.perf_counter()
                pipe(probe, batch_size=bs)
                speeds[bs] = len(probe) / (time.perf_counter() - t0)
            best = max(speeds, key=speeds.get)
            self.extra.setdefault("peer_batch_search_sent_per_s", {})[name] = {str(k): round(v, 1) for k, v in speeds.items()}
            warm = lambda: pipe(texts[:64], batch_size=best)  # noqa: E731
            for label, inputs in (("plain order", texts), ("sorted by length", sorted_texts)):
                t = timed(lambda: pipe(inputs, batch_size=best), warm=warm, repeats=self.args.repeats)
                self.row("softmax", f"{name}, batch {best}, {label}", len(texts), pieces, t, precision=precision, peer=True, **f1)

    def torch_eager(self, data: Data, run: Path, section: str) -> None:
        import torch

        from ner_batch.models.tagger import load_model
        from ner_batch.training.trainer import predict_tokens

        torch.set_num_threads(os.cpu_count() or 1)
        model, tok = load_model(run / "best")
        enc = model.config.windower(tok)
        pieces = sum(w.n_tokens for w in enc.windows(data.timing))
        f1 = data.f1(predict_tokens(model, enc, data.test_tokens))
        with torch.inference_mode():
            t = timed(lambda: predict_tokens(model, enc, data.timing), warm=lambda: predict_tokens(model, enc, data.timing[:64]),
                      repeats=self.args.repeats)
        decode = "pytorch-crf decode" if section == "crf" else "NumPy BIO decode"
        self.row(section, f"PyTorch eager + ner-batch batching ({decode})", len(data.timing), pieces, t, precision="fp32", **f1)

    def ner_batch(self, data: Data, bundle: Path, section: str, variants, workers_list) -> dict:
        from ner_batch.pipeline.run import tag_corpus

        corpus, warm = self.timing_files(data)
        summaries = {}
        for variant in variants:
            for workers in workers_list:
                out = self.tmp / f"tags-{section}-{variant}-{workers}.jsonl"
                run = lambda c=corpus: tag_corpus([str(c)], bundle, out, variant=variant, workers=workers,  # noqa: E731
                                                  progress=False, say=lambda m: None)
                t = timed(run, warm=lambda: run(warm), repeats=self.args.repeats)
                s = t["result"]
                f1 = data.f1(tags_from_records(out, len(data.test)))
                summaries[(variant, workers)] = s
                self.row(section, f"ner-batch {variant}, {workers} worker{'s' if workers > 1 else ''}", s.sentences,
                         s.word_pieces, t, padding_ratio=round(s.padding_ratio, 4), **f1,
                         precision=precision_of(variant),
                         decode_share=round((s.seconds_decode + s.seconds_records) / max(s.seconds, 1e-9), 4) if workers == 1 else None)
        return summaries

    def interleaved(self, data: Data, section: str, sides: dict[str, Path], variant: str, rounds: int = 5) -> dict[str, dict]:
        """Bundles side by side (``sides``: row name -> bundle), one ``variant``, 1 worker: all warmed,
        then ``rounds`` timed rounds interleaved (AB, BA, AB, ...) so that drift of the machine falls
        on all alike; one row each (median), returned by name, with its speed as a share of the first's."""
        from ner_batch.pipeline.run import tag_corpus

        corpus, warm = self.timing_files(data)
        rounds = max(rounds, self.args.repeats)
        outs = {name: self.tmp / f"tags-{section}-{variant}-{k}.jsonl" for k, name in enumerate(sides)}

        def run(name, c=corpus):
            return tag_corpus([str(c)], sides[name], outs[name], variant=variant, workers=1, progress=False, say=lambda m: None)

        for name in sides:
            run(name, warm)
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        result = {}
        for k in range(rounds):
            for name in (list(sides) if k % 2 == 0 else list(sides)[::-1]):
                t0 = time.perf_counter()
                result[name] = run(name)
                seconds[name].append(time.perf_counter() - t0)
        rows, first = {}, None
        for name in sides:
            s = result[name]
            t = {"median_s": statistics.median(seconds[name]), "runs_s": [round(x, 4) for x in seconds[name]]}
            f1 = data.f1(tags_from_records(outs[name], len(data.test)))
            rows[name] = self.row(section, f"{name}, ner-batch {variant}, 1 worker", s.sentences, s.word_pieces, t,
                                  padding_ratio=round(s.padding_ratio, 4), precision=precision_of(variant),
                                  word_pieces=s.word_pieces, rounds=rounds, **f1)
            first = first or rows[name]
            rows[name]["speed_vs_first"] = round(rows[name]["sentences_per_s"] / first["sentences_per_s"], 3)
        return rows

    def markers(self, data: Data, head: str, plain: Path, marked: Path) -> None:
        """A head's bundle without and with shape markers, fp32 and int8 (see :meth:`interleaved`)."""
        for variant in ("fp32", "int8"):
            rows = self.interleaved(data, "markers", {f"{head} no markers": plain, f"{head} + shape markers": marked}, variant)
            ratio = rows[f"{head} + shape markers"]["speed_vs_no_markers"] = rows[f"{head} + shape markers"]["speed_vs_first"]
            log(f"markers   {head} {variant}: with markers at {ratio:.3f} of the plain speed")

    def pooling(self, data: Data, bundle: Path, manifest: dict[str, Any]) -> None:
        """A bundle of a model trained with ``--word-pooling mean`` against its first-piece twin: the same
        run's weights exported with first-piece pooling (pooling has no weights of its own, so the two
        graphs differ only there), exported as ``make export`` exports (checked on valid, int8 scales
        from train), opt and int8, side by side (see :meth:`interleaved`). The twin's F1 is that of
        weights read in a way they were not trained for: its rows are for speed only."""
        from ner_batch.export.build import build_bundle, calibration_sentences
        from ner_batch.training.ensemble import load_runs

        source = source_run(manifest)
        model, tokenizer = load_runs([source])
        model.config.word_pooling = "first"  # read at every forward: the twin's graph gathers first pieces
        twin = self.tmp / f"{bundle.name}-first-twin"
        build_bundle(source, twin, check_sentences=data.valid_tokens, calibration=calibration_sentences(data.train),
                     variants=("fp32", "opt", "int8"), log=lambda m: None, model=model, tokenizer=tokenizer)
        self.extra.setdefault("pooling", {})[bundle.name] = {
            "source_run": shown(source), "word_pooling": manifest["word_pooling"],
            "twin_word_pooling": json.loads((twin / "manifest.json").read_text())["word_pooling"]}
        for variant in ("opt", "int8"):
            rows = self.interleaved(data, "pooling", {f"{bundle.name} first-piece twin (speed only)": twin,
                                                     f"{bundle.name} (mean pooling)": bundle}, variant)
            ratio = list(rows.values())[-1]["speed_vs_first"]
            log(f"pooling   {bundle.name} {variant}: mean pooling at {ratio:.3f} of first-piece pooling's speed")

    def ensembles(self, data: Data, default: Path, ensemble: Path, members: int) -> None:
        """A named ensemble bundle (export/<head>-xN, of ``members`` models) against the default bundle
        of its head, fp32 (fused) and int8, side by side (see :meth:`interleaved`): what its F1 costs in speed."""
        source = json.loads((default / "manifest.json").read_text()).get("source_run")  # which run the row measures
        source = shown(Path(source)) if isinstance(source, str) else f"{len(source or [])} runs"
        for variant in ("opt", "int8"):
            rows = self.interleaved(data, "ensembles", {f"{default.name} (default, from {source})": default,
                                                        f"{ensemble.name} (ensemble of {members})": ensemble}, variant)
            ratio = list(rows.values())[-1]["speed_vs_first"]
            log(f"ensembles {ensemble.name} {variant}: at {ratio:.3f} of {default.name}'s speed")

    def raw_text(self, data: Data, bundle: Path, hf_dir: Path | None) -> None:
        """Raw text end to end, medians like the rest, against its own HF baseline: the
        pipeline given the same sentences (ner-batch's splitter), at the batch size its search
        picked on DNRTI, sorted by length (its best practice there), on the same documents."""
        from ner_batch.pipeline.run import tag_corpus
        from ner_batch.segment import split_document

        corpus = write_jsonl(self.tmp / "raw.jsonl", data.raw_docs)
        self.extra["raw_text_mb"] = round(data.raw_bytes / 1e6, 2)
        warm = write_jsonl(self.tmp / "raw-warm.jsonl", data.raw_docs[:5])
        rows = []
        for variant, workers in (("opt", 1), ("int8", 2)):
            out = self.tmp / "raw-tags.jsonl"
            run = lambda c=corpus: tag_corpus([str(c)], bundle, out, variant=variant, workers=workers, progress=False,  # noqa: E731
                                              say=lambda m: None)
            t = timed(run, warm=lambda: run(warm), repeats=self.args.repeats)
            s = t["result"]
            rows.append(self.row("raw text", f"ner-batch {variant}, {workers} worker{'s' if workers > 1 else ''} "
                                 f"({self.extra['raw_text_mb']} MB)", s.sentences, s.word_pieces, t, padding_ratio=round(s.padding_ratio, 4)))
        if hf_dir is None:
            return
        from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

        tok = AutoTokenizer.from_pretrained(hf_dir)
        pipe = pipeline("token-classification", model=AutoModelForTokenClassification.from_pretrained(hf_dir).eval(),
                        tokenizer=tok, aggregation_strategy="first", device=-1)
        sents = sorted((" ".join(w) for d in data.raw_docs for w in split_document(d["text"])[0]), key=len)
        searched = self.extra.get("peer_batch_search_sent_per_s", {}).get("HF pipeline (PyTorch)")
        best = int(max(searched, key=searched.get)) if searched else 16
        pieces = sum(len(x) for x in tok(sents)["input_ids"])
        t = timed(lambda: pipe(sents, batch_size=best), warm=lambda: pipe(sents[:64], batch_size=best), repeats=self.args.repeats)
        base = self.row("raw text", f"HF pipeline (PyTorch), batch {best}, sorted by length (same text)", len(sents), pieces, t)
        for r in rows:
            r["raw_ratio"] = round(r["sentences_per_s"] / base["sentences_per_s"], 2)
            r["ratio_vs"] = base["system"]

    def decode_only(self) -> None:
        import torch
        from torchcrf import CRF

        from ner_batch.decode import forward_backward, viterbi

        torch.set_num_threads(os.cpu_count() or 1)
        rng = np.random.default_rng(0)
        n_labels, width = 27, 40
        crf = CRF(n_labels, batch_first=True)
        p = {k: getattr(crf, a).detach().numpy() for k, a in (("transitions", "transitions"), ("start", "start_transitions"), ("end", "end_transitions"))}
        for b in (1, 32, 256):
            em = rng.normal(size=(b, width, n_labels)).astype(np.float32)
            lengths = rng.integers(10, width + 1, size=b)
            lengths[0] = width
            mask = torch.from_numpy(np.arange(width)[None, :] < lengths[:, None])
            tem = torch.from_numpy(em)
            reps = max(3, 256 // b)
            t_np = timed(lambda: [viterbi(em, lengths, p["transitions"], p["start"], p["end"]) for _ in range(reps)], repeats=self.args.repeats)
            t_fb = timed(lambda: [forward_backward(em, lengths, p["transitions"], p["start"], p["end"]) for _ in range(reps)], repeats=self.args.repeats)
            with torch.inference_mode():
                t_pt = timed(lambda: [crf.decode(tem, mask) for _ in range(reps)], repeats=self.args.repeats)
            per = lambda t: t["median_s"] / reps * 1e3  # noqa: E731
            self.rows.append({"section": "decode", "system": f"batch {b}: NumPy Viterbi vs pytorch-crf decode",
                              "numpy_ms": round(per(t_np), 3), "numpy_marginals_ms": round(per(t_fb), 3),
                              "pytorch_crf_ms": round(per(t_pt), 3),
                              "speedup": round(per(t_pt) / (per(t_np) + per(t_fb)), 2)})
            log(f"decode     batch {b:<4} numpy {per(t_np):.3f} + {per(t_fb):.3f} ms  pytorch-crf {per(t_pt):.3f} ms")

    def roofline(self, data: Data, bundle: Path) -> None:
        import onnx

        from ner_batch.batching import plan_batches
        from ner_batch.runtime.tagger import Tagger

        code = ("import numpy as np, time, json\n"
                "a = np.random.rand(4096, 384).astype(np.float32); b = np.random.rand(384, 1536).astype(np.float32)\n"
                "for _ in range(5): a @ b\n"
                "best = []\n"
                "for _ in range(5):\n"
                "    t = time.perf_counter()\n"
                "    for _ in range(10): a @ b\n"
                "    best.append(2 * 4096 * 384 * 1536 * 10 / (time.perf_counter() - t) / 1e9)\n"
                "print(json.dumps(sorted(best)[len(best) // 2]))\n")
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        numpy_gflops = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout)
        ort_gflops = self._ort_matmul_gflops()
        gflops = max(numpy_gflops, ort_gflops)  # the roofline: the faster sgemm this machine has
        self.extra["sgemm_gflops"] = {"numpy": round(numpy_gflops, 1), "onnxruntime": round(ort_gflops, 1)}
        log(f"roofline   sgemm 4096x384 @ 384x1536: NumPy {numpy_gflops:.0f}, ONNX Runtime {ort_gflops:.0f} GFLOP/s")
        graph = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
        inits = {t.name: list(t.dims) for t in graph.graph.initializer}
        flops = sum(2 * inits[n.input[1]][0] * inits[n.input[1]][1] for n in graph.graph.node
                    if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits and len(inits[n.input[1]]) == 2)
        for variant in ("fp32", "opt"):
            tagger = Tagger(bundle, variant, device="cpu", say=lambda m: None)
            windows = tagger.windower.windows(data.timing)
            batches = [tagger.windower.collate([windows[i] for i in idx]) for idx in plan_batches(windows, 8192, 128)]
            real = sum(int(b.attention_mask.sum()) for b in batches)
            padded = sum(b.attention_mask.size for b in batches)
            mean_t = statistics.mean(b.input_ids.shape[1] for b in batches)
            n_layers = max(1, sum(1 for n in onnx.load(str(tagger.bundle.model_path("opt")), load_external_data=False).graph.node
                                  if n.op_type == "Attention"))
            hidden = next((t.dims[1] for t in graph.graph.initializer if "word_embeddings" in t.name and len(t.dims) == 2), 384)
            per_token = flops + n_layers * 4 * mean_t * hidden  # weights + attention scores
            roof = gflops * 1e9 / per_token
            t = timed(lambda: [tagger.emit(b) for b in batches], repeats=self.args.repeats)
            got = real / t["median_s"]
            self.rows.append({"section": "roofline", "system": f"ner-batch {variant} encoder (softmax bundle)",
                              "matmul_gflops": round(gflops, 1), "mflops_per_token": round(per_token / 1e6, 2),
                              "roofline_tokens_per_s": round(roof, 0), "word_pieces_per_s": round(got, 0),
                              "padded_positions_per_s": round(padded / t["median_s"], 0), "share": round(got / roof, 3)})
            log(f"roofline   {variant}: {gflops:.0f} GFLOP/s -> {roof:,.0f} tokens/s; measured {got:,.0f} ({got / roof:.0%})")

    def _ort_matmul_gflops(self) -> float:
        """fp32 GFLOP/s of ONNX Runtime's own MatMul (MLAS) at the encoder's feed-forward shape."""
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        from ner_batch.runtime.session import session_options

        w = numpy_helper.from_array(np.random.rand(384, 1536).astype(np.float32), "w")
        graph = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], "mm",
                                  [helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 384])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1536])], [w])
        path = self.tmp / "matmul.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
        sess = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
        a = np.random.rand(4096, 384).astype(np.float32)
        for _ in range(5):
            sess.run(None, {"a": a})
        best = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(10):
                sess.run(None, {"a": a})
            best.append(2 * 4096 * 384 * 1536 * 10 / (time.perf_counter() - t0) / 1e9)
        return sorted(best)[len(best) // 2]

    def scaling(self, data: Data, bundle: Path, variant: str) -> None:
        base = [{"id": f"s{i}", "tokens": t} for i, t in enumerate(data.test_tokens)]
        for factor in self.args.scales:
            corpus = write_jsonl(self.tmp / f"scale-{factor}.jsonl", (dict(d, id=f"{d['id']}-{k}") for k in range(factor) for d in base))
            out, summ = self.tmp / f"scale-{factor}.out.jsonl", self.tmp / f"scale-{factor}.summary.json"
            cmd = [str(Path(sys.executable).with_name("ner-batch")), "tag", str(corpus), "--bundle", str(bundle), "--out", str(out),
                   "--variant", variant, "--summary-json", str(summ), "-q"]
            rss, seconds, _ = peak_rss_mb(cmd)
            s = json.loads(summ.read_text())
            self.rows.append({"section": "scaling", "system": f"ner-batch {variant}, 1 worker, {factor}x DNRTI test",
                              "factor": factor, "sentences": s["sentences"], "sentences_per_s": round(s["sentences"] / s["seconds"], 1),
                              "process_seconds": round(seconds, 2), "peak_rss_mb": round(rss, 1), "padding_ratio": s["padding_ratio"]})
            log(f"scaling    {factor:>4}x: {s['sentences'] / s['seconds']:.1f} sent/s, peak RSS {rss:.0f} MB, padding {s['padding_ratio']:.3f}")
            out.unlink(missing_ok=True)
            corpus.unlink(missing_ok=True)


    def startup(self, bundle: Path, variant: str = "int8") -> None:
        """Seconds from `ner-batch tag` start to exit on a one-sentence corpus: imports, bundle
        checks, session start (paid once per process; the timed rows include it)."""
        one = write_jsonl(self.tmp / "one.jsonl", [{"id": "x", "tokens": ["APT28", "struck"]}])
        cmd = [str(Path(sys.executable).with_name("ner-batch")), "tag", str(one), "--bundle", str(bundle), "--out",
               str(self.tmp / "one.out.jsonl"), "--variant", variant, "-q"]
        subprocess.run(cmd, check=True, capture_output=True)
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            runs.append(time.perf_counter() - t0)
        self.extra["startup_s"] = {"variant": variant, "median_s": round(statistics.median(runs), 3), "runs_s": [round(r, 3) for r in runs]}
        log(f"startup    {statistics.median(runs):.2f}s (process start to exit, one sentence, {variant})")

    def profile(self, data: Data, bundle: Path) -> None:
        """Where the time goes: ONNX Runtime's profiler, summed per operator type, once per variant."""
        import onnxruntime as ort

        from ner_batch.runtime.bundle import Bundle
        from ner_batch.runtime.session import session_options
        from ner_batch.runtime.tagger import Tagger

        tagger = Tagger(bundle, "opt", device="cpu", say=lambda m: None)
        plan = tagger.plan(data.test_tokens)
        out = {}
        for variant in ("opt", "int8"):
            so = session_options()
            so.enable_profiling = True
            so.profile_file_prefix = str(self.tmp / f"profile-{variant}")
            sess = ort.InferenceSession(str(Bundle.load(bundle).model_path(variant)), so, providers=["CPUExecutionProvider"])
            names = [i.name for i in sess.get_inputs()]
            for _, batch in plan.batches:
                sess.run(None, {k: v for k, v in batch.inputs().items() if k in names})
            events = json.loads(Path(sess.end_profiling()).read_text())
            per_op: dict[str, float] = {}
            for e in events:
                if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                    op = e.get("args", {}).get("op_name", "?")
                    per_op[op] = per_op.get(op, 0.0) + e.get("dur", 0) / 1e6
            total = sum(per_op.values()) or 1.0
            out[variant] = {op: {"seconds": round(t, 3), "share": round(t / total, 3)}
                            for op, t in sorted(per_op.items(), key=lambda kv: -kv[1])[:10]}
            log(f"profile    {variant}: " + ", ".join(f"{op} {v['share']:.0%}" for op, v in list(out[variant].items())[:5]))
        self.extra["ort_profile_top_ops"] = out

    def candidates(self, data: Data, bundle: Path) -> None:
        """Speed candidates, one by one, in one process at steady state (sessions started and
        warmed before timing; timed rounds interleaved across candidates): session options
        (spinning off, ``session.dynamic_block_base``), batch caps per variant, static int8 of
        the ORT-fused graph against that of the plain graph, and static int8 of every encoder
        MatMul (MinMax and percentile calibration). Each gets its F1 through the same tagging
        path, so a faster candidate that costs accuracy shows it."""
        import onnxruntime as ort

        from ner_batch.batching import BatchSettings
        from ner_batch.export.build import INT8_REDUCE_RANGE, calibration_batches, calibration_sentences
        from ner_batch.export.variants import quantize_int8_static
        from ner_batch.runtime.bundle import Bundle
        from ner_batch.runtime.session import session_options
        from ner_batch.tagging import SentenceTagger
        from ner_batch.runtime.tagger import Tagger

        b = Bundle.load(bundle)
        base = Tagger(b, "fp32", device="cpu", say=lambda m: None)
        calib = calibration_batches(base.windower, calibration_sentences(data.train))

        def build(name: str, source: Path, **how) -> Path | None:
            out = self.tmp / f"cand-{name}.onnx"
            t0 = time.perf_counter()
            try:
                done = quantize_int8_static(source, out, calib, reduce_range=INT8_REDUCE_RANGE, **how)
            except Exception as exc:  # a candidate that cannot be built is reported, not fatal
                log(f"candidates {name}: could not build ({type(exc).__name__}: {str(exc)[:200]})")
                return None
            log(f"candidates built {name} ({done['quantized_matmuls']} MatMuls quantized) in {time.perf_counter() - t0:.0f}s")
            return out

        fused_int8 = build("int8-fused", b.model_path("opt"))
        all_minmax = build("int8-all-minmax", b.model_path("fp32"), down_projections=True)
        all_pct = build("int8-all-percentile", b.model_path("fp32"), down_projections=True, method="Percentile")
        default = BatchSettings()
        # The same session options and batch caps, each alone, on the fused fp32 graph and on static int8.
        tweaks = [("defaults", {}, default), ("spinning off", {"session.intra_op.allow_spinning": "0"}, default),
                  ("dynamic_block_base 4", {"session.dynamic_block_base": "4"}, default)]
        tweaks += [(f"token budget {t}, max batch {m}", {}, BatchSettings(t, m)) for t, m in ((2048, 8), (4096, 16), (16384, 64))]
        cands: list[tuple[str, str, Path | None, dict[str, str], BatchSettings]] = [
            ("fp32", "fp32 (plain graph), defaults", b.model_path("fp32"), {}, default)]
        for precision, label, path in (("fp32", "opt (fused graph)", b.model_path("opt")),
                                       ("int8", "int8 static (plain graph)", b.model_path("int8"))):
            cands += [(precision, f"{label}, {what}", path, config, batching) for what, config, batching in tweaks]
        cands += [
            ("int8", "int8 static of the fused graph", fused_int8, {}, default),
            ("int8", "int8 static, every encoder MatMul, MinMax", all_minmax, {}, default),
            ("int8", "int8 static, every encoder MatMul, percentile 99.999", all_pct, {}, default),
            ("int8", "int8-dynamic, defaults", b.model_path("int8-dynamic"), {}, default),
        ]
        runners = []
        for precision, name, path, config, batching in cands:
            if path is None:
                continue
            so = session_options()
            for k, v in config.items():
                so.add_session_config_entry(k, v)
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            names = [i.name for i in sess.get_inputs()]
            emit = lambda batch, s=sess, n=names: s.run(None, {k: v for k, v in batch.inputs().items() if k in n})[0]  # noqa: E731
            tagger = SentenceTagger(base.windower, emit, base.decoder, batching)
            plan = tagger.plan(data.timing)
            pieces = int(plan.pieces_per_sentence().sum())
            labels = [t.labels for t in tagger.run(plan)[: len(data.test)]]
            runners.append((precision, name, tagger, plan, pieces, data.f1(labels)))
            log(f"candidates ready: {name}")
        times: dict[str, list[float]] = {r[1]: [] for r in runners}
        for _ in range(self.args.repeats):
            for _, name, tagger, plan, _, _ in runners:
                t0 = time.perf_counter()
                tagger.run(plan)
                times[name].append(time.perf_counter() - t0)
        baselines = {"fp32": "opt (fused graph), defaults", "int8": "int8 static (plain graph), defaults"}
        med = {name: statistics.median(ts) for name, ts in times.items()}
        for precision, name, _, _, pieces, f1 in runners:
            ref = med.get(baselines[precision])
            row = {"section": "candidates", "system": name, "precision": precision, "sentences": len(data.timing),
                   "median_s": round(med[name], 3), "runs_s": [round(t, 3) for t in times[name]],
                   "sentences_per_s": round(len(data.timing) / med[name], 1), "pieces_per_s": round(pieces / med[name], 0),
                   "vs_default": round(ref / med[name], 3) if ref else None, **f1}
            self.rows.append(row)
            log(f"candidates {name:<52} {row['sentences_per_s']:>7.1f} sent/s  x{row['vs_default']}  F1 {f1['f1']}")

    def engines(self, data: Data, bundle: Path, variant: str = "int8", workers: int = 2) -> None:
        """--engine ray against local worker processes: same corpus, cores, workers; Ray's
        start-up timed apart; interleaved rounds; peak RSS of driver + workers/actors + Ray."""
        try:
            import ray
        except ImportError:
            log("engines: the [ray] extra is not installed; skipped")
            return
        from common import RssSampler

        from ner_batch.pipeline.run import tag_corpus

        corpus, warm = self.timing_files(data)
        t0 = time.perf_counter()
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        startup = time.perf_counter() - t0
        self.extra["ray_startup_s"] = round(startup, 2)
        try:
            kinds = {"local": {}, "ray": {"engine": "ray"}}
            outs = {k: self.tmp / f"engines-{k}.jsonl" for k in kinds}
            for k, kw in kinds.items():
                tag_corpus([str(warm)], bundle, outs[k], variant=variant, workers=workers, progress=False, say=lambda m: None, **kw)
            times: dict[str, list[float]] = {k: [] for k in kinds}
            peaks: dict[str, float] = {k: 0.0 for k in kinds}
            for _ in range(self.args.repeats):
                for k, kw in kinds.items():
                    with RssSampler(lambda cmd: "ner-batch-worker" in cmd or "multiprocessing" in cmd or "ray" in cmd) as rss:
                        t1 = time.perf_counter()
                        s = tag_corpus([str(corpus)], bundle, outs[k], variant=variant, workers=workers, progress=False,
                                       say=lambda m: None, **kw)
                        times[k].append(time.perf_counter() - t1)
                    peaks[k] = max(peaks[k], rss.peak_mb)
            same = outs["local"].read_bytes() == outs["ray"].read_bytes()
            for k in kinds:
                med = statistics.median(times[k])
                self.row("engines", f"ner-batch {variant}, {workers} workers, engine {k}", s.sentences, s.word_pieces,
                         {"median_s": med, "runs_s": [round(t, 3) for t in times[k]]}, peak_rss_mb=round(peaks[k], 1),
                         **({"startup_s": round(startup, 2), "same_output_as_local": same} if k == "ray" else {}))
            log(f"engines    ray start-up {startup:.1f}s; ray/local time {statistics.median(times['ray']) / statistics.median(times['local']):.3f}")
        finally:
            ray.shutdown()


# ---------------------------------------------------------------- main


# Sections that time the softmax run (runs/softmax) or its bundle (export/softmax).
SOFTMAX_SECTIONS = {"peers", "ner-batch", "roofline", "raw", "scaling", "engines", "startup", "profile", "candidates"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="DNRTI directory [default: ../shared/data/dnrti]")
    ap.add_argument("--runs", default=str(ROOT / "runs"), help="training runs (softmax, crf)")
    ap.add_argument("--export", default=str(ROOT / "export"), help="bundles (softmax, crf)")
    ap.add_argument("--repeat", type=int, default=3, help="DNRTI test repeated this many times for timing")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per row (median reported)")
    ap.add_argument("--raw-mb", type=float, default=1.0, help="MB of raw text")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 10, 100])
    every = ["peers", "ner-batch", "crf", "decode", "roofline", "raw", "scaling", "engines", "startup", "profile", "candidates", "markers",
             "pooling", "ensembles"]
    ap.add_argument("--sections", nargs="+", default=every)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--stem", default="latest", help="file names of the results: OUT/STEM.{json,md,png}")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    runs, export = Path(args.runs), Path(args.export)
    # The sections that time a trained run and its bundle need them: "crf" the crf, the others in
    # SOFTMAX_SECTIONS the softmax model. "decode" times random emissions; "markers" and
    # "ensembles" find the bundle pairs they compare themselves and skip a head without them.
    heads_run = tuple(head for head, wanted in (("softmax", SOFTMAX_SECTIONS & set(args.sections)),
                                                ("crf", {"crf"} & set(args.sections))) if wanted)
    for need in [p for h in heads_run for p in (runs / h / "best", export / h / "manifest.json")]:
        if not need.exists():
            print(f"bench: expected {need}; run `make train` and `make export` first", file=sys.stderr)
            return 2
    # The peers can only be fed plain words: when the shipped models use shape markers and the
    # plain ones are kept beside them (<head>-plain), the peer comparison runs on the plain ones,
    # so that every system gets the same weights and the same input.
    run_of, bundle_of = {}, {}
    for head in heads_run:
        marked = json.loads((runs / head / "best" / "tagger.json").read_text()).get("shape_markers")
        plain = marked and (runs / f"{head}-plain" / "best").is_dir() and (export / f"{head}-plain" / "manifest.json").is_file()
        run_of[head] = runs / (f"{head}-plain" if plain else head)
        bundle_of[head] = export / (f"{head}-plain" if plain else head)
        if marked and not plain:
            log(f"{head}: the model uses shape markers and no {head}-plain model is beside it: the peers get words without markers")
    data = Data(data_dir(args.data), args.repeat, args.raw_mb)
    bench = Bench(args)
    started = time.time()
    hf_dir = None
    if "peers" in args.sections or "raw" in args.sections:
        from hf_checkpoint import write_hf_checkpoint

        hf_dir = write_hf_checkpoint(run_of["softmax"], bench.tmp / "hf-softmax")
    if "peers" in args.sections:
        bench.peers(data, hf_dir)
        bench.torch_eager(data, run_of["softmax"], "softmax")
    if "ner-batch" in args.sections:
        bench.ner_batch(data, bundle_of["softmax"], "softmax", ("fp32", "opt", "int8", "int8-dynamic"), (1, 2))
    if "crf" in args.sections:
        bench.torch_eager(data, run_of["crf"], "crf")
        bench.ner_batch(data, bundle_of["crf"], "crf", ("opt", "int8", "int8-dynamic"), (1, 2))
    if "decode" in args.sections:
        bench.decode_only()
    if "roofline" in args.sections:
        bench.roofline(data, bundle_of["softmax"])
    if "raw" in args.sections:
        bench.raw_text(data, bundle_of["softmax"], hf_dir)
    if "scaling" in args.sections:
        bench.scaling(data, bundle_of["softmax"], "int8")
    if "engines" in args.sections:
        bench.engines(data, bundle_of["softmax"])
    if "startup" in args.sections:
        bench.startup(bundle_of["softmax"])
    if "profile" in args.sections:
        bench.profile(data, bundle_of["softmax"])
    if "candidates" in args.sections:
        bench.candidates(data, bundle_of["softmax"])
    if "markers" in args.sections:
        # The cost of shape markers (issue 10), side by side in this run, fp32 and int8: a head's bundle
        # with --shape-markers against the same head without (export/<head>-shape beside a plain
        # export/<head>, or export/<head>-plain beside a marker export/<head>).
        for head in ("softmax", "crf"):
            pairs = [(export / head, export / f"{head}-shape"), (export / f"{head}-plain", export / head)]
            pair = next(((p, m) for p, m in pairs if (p / "manifest.json").is_file() and (m / "manifest.json").is_file()
                         and json.loads((m / "manifest.json").read_text()).get("shape_markers")
                         and not json.loads((p / "manifest.json").read_text()).get("shape_markers")), None)
            if pair is None:
                log(f"markers: no {head} bundle pair with and without shape markers; skipped")
                continue
            bench.markers(data, head, *pair)
    if "pooling" in args.sections:
        # The cost of `train --word-pooling mean` (issue 10): every mean-pooled bundle in export/ against
        # its first-piece twin (built here from the same run), opt and int8.
        manifests = {p.parent: json.loads(p.read_text()) for p in sorted(export.glob("*/manifest.json"))}
        pooled = [b for b, m in manifests.items() if m.get("word_pooling") == "mean" and isinstance(m.get("source_run"), str)]
        if not pooled:
            log("pooling: no bundle of a model trained with --word-pooling mean in export/; skipped")
        for bundle in pooled:
            if not source_run(manifests[bundle]).is_dir():
                log(f"pooling: {bundle.name}'s run {manifests[bundle]['source_run']} (manifest source_run) is not on this machine; skipped")
                continue
            bench.pooling(data, bundle, manifests[bundle])
    if "ensembles" in args.sections:
        # Named ensemble bundles (export/<head>-xN, `make export-ensemble`) against their head's default.
        for head in ("softmax", "crf"):
            members = {p.parent: (json.loads(p.read_text()).get("ensemble") or {}).get("members")
                       for p in sorted(export.glob(f"{head}-x*/manifest.json"))}
            named = {path: n for path, n in members.items() if n}
            if not named:
                log(f"ensembles: no {head} ensemble bundle (export/{head}-xN); skipped")
            elif not (export / head / "manifest.json").is_file():
                log(f"ensembles: no default {head} bundle (export/{head}) to compare {head}-xN with; skipped (make export)")
            else:
                for ensemble, n in named.items():
                    bench.ensembles(data, export / head, ensemble, n)

    from report import write_report

    command = "make bench" if sorted(args.sections) == sorted(every) else f"bench/run.py --sections {' '.join(args.sections)}"
    result = {"machine": machine(), "command": command, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
              "seconds": round(time.time() - started, 1), "timing_corpus": f"DNRTI test x{args.repeat} ({len(data.timing)} sentences)",
              "repeats": args.repeats, "rows": bench.rows, "extra": bench.extra,
              "models": {h: {"run": shown(run_of[h]), "bundle": shown(bundle_of[h])} for h in run_of}}
    paths = write_report(result, Path(args.out), args.stem)
    log(f"wrote {', '.join(str(p) for p in paths)} in {time.time() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
