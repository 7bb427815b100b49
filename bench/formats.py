"""`make bench-formats`: the cost of `--output-format stix` against JSONL, measured side by side.

DNRTI test x3 as pre-tokenized JSONL, one bundle and variant, 1 worker; jsonl, conll and stix
in interleaved rounds after one warm-up each; the median of ``--repeats``. Also counts the
bundles and objects that tagging ``examples/corpus`` gives, and validates every bundle.
Writes ``bench/results/formats.json`` and ``formats.md`` with the machine's CPU flags.
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

from ner_batch.data.dnrti import data_dir, load_split  # noqa: E402
from ner_batch.output.stix import validate_line  # noqa: E402
from ner_batch.pipeline.run import tag_corpus  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--bundle", default=str(ROOT / "export" / "crf"))
    ap.add_argument("--variant", default="int8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--repeat-corpus", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "formats"))
    args = ap.parse_args()
    test, _ = load_split(data_dir(args.data), "test")
    tmp = Path(tempfile.mkdtemp(prefix="ner-batch-formats-"))
    corpus = tmp / "timing.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"t{i}", "tokens": s.tokens}) + "\n" for i, s in enumerate(list(test) * args.repeat_corpus)))
    warm = tmp / "warm.jsonl"
    warm.write_text("".join(json.dumps({"id": f"w{i}", "tokens": s.tokens}) + "\n" for i, s in enumerate(test[:64])))
    quiet = dict(progress=False, say=lambda m: None, variant=args.variant, device="cpu")
    formats = ["jsonl", "conll", "stix"]
    for f in formats:
        tag_corpus([str(warm)], args.bundle, tmp / f"warm-out.{f}", output_format=f, **quiet)
    times: dict[str, list[float]] = {f: [] for f in formats}
    for _ in range(args.repeats):
        for f in formats:
            t0 = time.perf_counter()
            tag_corpus([str(corpus)], args.bundle, tmp / f"out.{f}", output_format=f, **quiet)
            times[f].append(time.perf_counter() - t0)
    n = len(test) * args.repeat_corpus
    rows = [{"format": f, "sentences_per_s": round(n / statistics.median(times[f]), 1), "runs_s": [round(t, 3) for t in times[f]]}
            for f in formats]
    base = rows[0]["sentences_per_s"]
    for r in rows:
        r["vs_jsonl"] = round(r["sentences_per_s"] / base, 3)
    examples = tmp / "examples.stix.jsonl"
    tag_corpus([str(ROOT / "examples" / "corpus")], args.bundle, examples, output_format="stix", **quiet)
    lines = examples.read_text().splitlines()
    objects = [validate_line(line) for line in lines]
    kinds: dict[str, int] = {}
    for line in lines:
        for o in json.loads(line)["objects"]:
            kinds[o["type"]] = kinds.get(o["type"], 0) + 1
    info = machine()
    result = {"machine": info, "command": "make bench-formats", "bundle": args.bundle, "variant": args.variant,
              "corpus": f"DNRTI test x{args.repeat_corpus} (pre-tokenized), 1 worker", "rows": rows,
              "examples": {"bundles": len(lines), "objects": sum(objects), "by_type": dict(sorted(kinds.items())), "valid": True}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    cpu = info["cpu_features"]
    md = [f"Machine: {info['cpu']} ({cpu['class']}: {', '.join(cpu['flags'])}), {info['cores']} cores. "
          f"Command: `make bench-formats`; {result['corpus']}, {args.variant}, median of {args.repeats} interleaved rounds.", "",
          "| output format | sentences/s | vs jsonl |", "|---|---:|---:|"]
    md += [f"| {r['format']} | {r['sentences_per_s']} | {r['vs_jsonl']} |" for r in rows]
    md += ["", f"examples/corpus as STIX: {len(lines)} bundles, {sum(objects)} objects "
               f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); every bundle parses with "
               "stix2.parse(allow_custom=False) once the declared x_ner_batch_* properties are set aside."]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
