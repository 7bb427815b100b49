"""`make bench-cuts`: what issue 8 promises, measured on the trained bundles in one run.

For each bundle (``export/softmax``, ``export/crf``) and each variant (opt, int8, int8-dynamic,
fp32 with ``--full``):

* **speed**: ``ner-batch tag`` (in process, model load included) on DNRTI test x3 as
  pre-tokenized JSONL, 1 worker; the variants run in interleaved rounds after one warm-up
  each; the median of ``--repeats`` rounds.
* **F1**, whole test and unseen, from the records the CLI wrote (one sentence per document),
  and with the test sentences **joined 20 at a time** into single pre-tokenized documents
  (no sentence boundary the tagger can see).
* **cuts**: the same 664 one-sentence documents tagged with ``--shard-docs 7``,
  ``--token-budget 1024 --max-batch 4``, ``--max-batch 1`` and ``--shard-docs 50 --workers 2``;
  the number of documents whose entities (offsets, labels) differ from the default cut, and
  the largest score difference.

Writes ``bench/results/cuts.json`` and ``cuts.md``, with the CPU model and flags.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import machine  # noqa: E402

from ner_batch.data.dnrti import data_dir, load_split, unseen_mask  # noqa: E402
from ner_batch.evaluation import score  # noqa: E402
from ner_batch.pipeline.run import tag_corpus  # noqa: E402

CUTS = {"shard-docs 7": dict(shard_docs=7), "token-budget 1024, max-batch 4": dict(token_budget=1024, max_batch=4),
        "max-batch 1": dict(max_batch=1), "shard-docs 50, 2 workers": dict(shard_docs=50, workers=2)}


def log(msg: str) -> None:
    print(f"[cuts {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def doc_tags(rec: dict) -> list[str]:
    tags = ["O"] * rec["counts"]["words"]
    for e in rec["entities"]:
        for i in range(e["token_start"], e["token_end"]):
            tags[i] = ("B-" if i == e["token_start"] else "I-") + e["label"]
    return tags


def split_back(records: list[dict], lengths: list[int]) -> list[list[str]]:
    flat = [t for r in records for t in doc_tags(r)]
    out, at = [], 0
    for n in lengths:
        out.append(flat[at : at + n])
        at += n
    return out


def compare(ref: list[dict], got: list[dict]) -> tuple[int, float]:
    changed, worst = 0, 0.0
    for a, b in zip(ref, got):
        ka = [(e["start"], e["end"], e["label"]) for e in a["entities"]]
        kb = [(e["start"], e["end"], e["label"]) for e in b["entities"]]
        if ka != kb:
            changed += 1
        else:
            worst = max([worst] + [abs(x["score"] - y["score"]) for x, y in zip(a["entities"], b["entities"])])
    return changed, worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--export", default=str(ROOT / "export"))
    ap.add_argument("--bundles", nargs="+", default=["softmax", "crf"])
    ap.add_argument("--variants", nargs="+", default=["opt", "int8", "int8-dynamic"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--repeat-corpus", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "cuts"))
    args = ap.parse_args()

    directory = data_dir(args.data)
    train, _ = load_split(directory, "train")
    test, _ = load_split(directory, "test")
    unseen = unseen_mask(test, train)
    gold = [s.labels for s in test]
    lengths = [len(s.tokens) for s in test]
    tmp = Path(tempfile.mkdtemp(prefix="ner-batch-cuts-"))
    singles = write_jsonl(tmp / "test.jsonl", ({"id": f"s{i}", "tokens": s.tokens} for i, s in enumerate(test)))
    joined = write_jsonl(tmp / "joined.jsonl", ({"id": f"j{k}", "tokens": [w for s in test[k : k + 20] for w in s.tokens]}
                                               for k in range(0, len(test), 20)))
    timing = write_jsonl(tmp / "timing.jsonl", ({"id": f"t{i}", "tokens": s.tokens}
                                               for i, s in enumerate(list(test) * args.repeat_corpus)))
    warm = write_jsonl(tmp / "warm.jsonl", ({"id": f"w{i}", "tokens": s.tokens} for i, s in enumerate(test[:64])))
    quiet = dict(progress=False, say=lambda m: None, device="cpu")
    rows = []
    for name in args.bundles:
        bundle = Path(args.export) / name
        if not (bundle / "manifest.json").is_file():
            log(f"{bundle}: no bundle, skipped (make train && make export)")
            continue
        for variant in args.variants:
            row = {"bundle": name, "variant": variant}
            ref_path = tmp / f"{name}-{variant}-ref.jsonl"
            tag_corpus([str(singles)], bundle, ref_path, variant=variant, **quiet)
            ref = read(ref_path)
            r = score(gold, split_back(ref, lengths), unseen)
            row.update(f1=round(r["f1"] * 100, 2), unseen_f1=round(r["unseen"]["f1"] * 100, 2))
            jp = tmp / f"{name}-{variant}-joined.jsonl"
            tag_corpus([str(joined)], bundle, jp, variant=variant, **quiet)
            r = score(gold, split_back(read(jp), lengths), unseen)
            row.update(joined20_f1=round(r["f1"] * 100, 2), joined20_unseen_f1=round(r["unseen"]["f1"] * 100, 2))
            row["cuts"] = {}
            for cut, kw in CUTS.items():
                p = tmp / f"{name}-{variant}-cut.jsonl"
                tag_corpus([str(singles)], bundle, p, variant=variant, **quiet, **kw)
                changed, worst = compare(ref, read(p))
                row["cuts"][cut] = {"documents_changed": changed, "max_score_diff": round(worst, 6)}
            log(f"{name} {variant}: F1 {row['f1']} (unseen {row['unseen_f1']}), joined-20 {row['joined20_f1']}; "
                f"cuts changed {[c['documents_changed'] for c in row['cuts'].values()]}")
            rows.append(row)
        # speed: interleaved rounds, one warm-up per variant
        times: dict[str, list[float]] = {v: [] for v in args.variants}
        sentences = len(test) * args.repeat_corpus
        for v in args.variants:
            tag_corpus([str(warm)], bundle, tmp / "warm-out.jsonl", variant=v, **quiet)
        for _ in range(args.repeats):
            for v in args.variants:
                t0 = time.perf_counter()
                tag_corpus([str(timing)], bundle, tmp / "timing-out.jsonl", variant=v, **quiet)
                times[v].append(time.perf_counter() - t0)
        for row in rows:
            if row["bundle"] == name:
                med = statistics.median(times[row["variant"]])
                row.update(sentences_per_s=round(sentences / med, 1), runs_s=[round(t, 3) for t in times[row["variant"]]])
                log(f"{name} {row['variant']}: {row['sentences_per_s']} sentences/s")
    for row in rows:
        base = next((r for r in rows if r["bundle"] == row["bundle"] and r["variant"] == "int8-dynamic"), None)
        if base:
            row["speed_vs_int8_dynamic"] = round(row["sentences_per_s"] / base["sentences_per_s"], 3)
    info = machine()
    from ner_batch.cpu import cpu_info

    info["cpu_features"] = cpu_info()
    result = {"machine": info, "command": "make bench-cuts", "corpus": f"DNRTI test x{args.repeat_corpus} (pre-tokenized), 1 worker",
              "repeats": args.repeats, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    cut_names = list(CUTS)
    lines = [f"Machine: {info['cpu']} ({info['cpu_features']['class']}: {', '.join(info['cpu_features']['flags'])}), "
             f"{info['cores']} cores, {info['memory']}; onnxruntime {info['versions'].get('onnxruntime-gpu', info['versions'].get('onnxruntime'))}",
             f"Command: `make bench-cuts`. Speed: {result['corpus']}, median of {args.repeats} interleaved rounds.", "",
             "| bundle | variant | sentences/s | vs int8-dynamic | test F1 | unseen F1 | joined 20: F1 | joined 20: unseen | "
             + " | ".join(f"docs changed: {c}" for c in cut_names) + " |",
             "|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(cut_names)]
    for r in rows:
        lines.append(f"| {r['bundle']} | {r['variant']} | {r['sentences_per_s']} | {r.get('speed_vs_int8_dynamic', '')} | {r['f1']} | "
                     f"{r['unseen_f1']} | {r['joined20_f1']} | {r['joined20_unseen_f1']} | "
                     + " | ".join(f"{r['cuts'][c]['documents_changed']} (max Δscore {r['cuts'][c]['max_score_diff']:.1e})" for c in cut_names) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
