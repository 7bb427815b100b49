"""`make bench-text`: what a user who tags raw text gets, against the pre-tokenized F1 of the tables.

Every F1 in the README's tables tags DNRTI's own tokens. Analysts tag raw text, which ner-batch
cuts into words itself (``ner_batch.segment``), not always as DNRTI's annotators did
(``APT28 's``, ``C&C``, ``(C2)``, ``Instagram®`` are one DNRTI token each). For each bundle and
split (valid, test), each sentence becomes one document twice: its tokens (``{"tokens"}``) and
its text, the tokens joined by single spaces (``{"text"}``); both are tagged with ``ner-batch
tag`` (in process) and scored by ``ner-batch score`` against the same gold character spans.
With ``--joins 20`` (default: 1 and 20) 20 consecutive sentences make one document, as in a
report, and the records are cut back into sentences by offset for scoring (unseen F1 too).
The text rows are also split by whether the segmenter's words are DNRTI's tokens, and every
row is scored a second time with the edges of gold and predicted spans trimmed alike (leading and
trailing characters that are no letter or digit, and a possessive 's): how much of the gap is
where DNRTI's spans begin and end (``(EternalBlue)``, ``APT28's``) rather than what the model
finds. With
``--against NAME`` each other bundle's rows get the paired difference to bundle NAME on the same
sentences and input, with its 95% bootstrap interval (1000 resamples of the sentences, unseen
and seen drawn apart, seed 0), on the scores as they are and trimmed: is a raw-text gain larger
than the split's noise, and is it more than where spans begin and end?

No timing: F1 only, so it may run beside other work. Writes ``bench/results/text.json`` and
``text.md``, with the CPU model and flags.
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import machine  # noqa: E402

from ner_batch.data.dnrti import data_dir, load_split, unseen_mask  # noqa: E402
from ner_batch.evaluation import bootstrap  # noqa: E402
from ner_batch.gold_spans import GoldDoc, GoldFile, TaggedDoc, read_tags, score_spans, scored_units, unit_counts  # noqa: E402
from ner_batch.labels import bio_spans  # noqa: E402
from ner_batch.pipeline.run import tag_corpus  # noqa: E402
from ner_batch.segment import join_words, split_document, trim_span  # noqa: E402


def log(msg: str) -> None:
    print(f"[text {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def gold_of(sentences) -> GoldFile:
    """Each sentence a document: its tokens joined by single spaces, its entities as character spans."""
    docs = []
    for i, s in enumerate(sentences):
        text, (offsets,) = join_words([s.tokens])
        spans = sorted({(offsets[a][0], offsets[b - 1][1], t) for a, b, t in bio_spans(s.labels)})
        docs.append(GoldDoc(f"s{i}", i + 1, spans, text))
    return GoldFile("dnrti", docs, [])


def trim(text: str, span):
    """``span`` (start, end, label) trimmed by ``segment.trim_span``; None when nothing is left.
    A span that runs past the text (a joined document's entity across a sentence boundary) is
    kept as it is: it matches no gold."""
    start, end, label = span
    if end > len(text):
        return span
    kept = trim_span(text, start, end)
    return None if kept is None else (*kept, label)


def trimmed_spans(text: str, spans) -> list:
    return sorted({t for t in (trim(text, x) for x in spans) if t is not None})


def trimmed_gold(gold: GoldFile) -> GoldFile:
    """The gold with every span's edges trimmed (:func:`trim`)."""
    return GoldFile(gold.path, [GoldDoc(d.id, d.line, trimmed_spans(d.text, d.spans), d.text) for d in gold.docs], [])


def trimmed_tags(gold: GoldFile, tags: dict[str, TaggedDoc]) -> dict[str, TaggedDoc]:
    """The records of the gold's documents with their spans trimmed as :func:`trimmed_gold`
    trims the gold (their texts dropped: they no longer match the spans)."""
    out = {}
    for d in gold.docs:
        kept = trimmed_spans(d.text, tags[d.id].spans)
        out[d.id] = TaggedDoc(kept, [None] * len(kept))
    return out


def part(gold: GoldFile, keep) -> GoldFile:
    return GoldFile(gold.path, [d for d, k in zip(gold.docs, keep) if k], [])


def per_sentence(records: dict[str, TaggedDoc], gold: GoldFile, join: int) -> dict[str, TaggedDoc]:
    """The records of documents of ``join`` sentences (joined by one space), cut back into one
    record per sentence, offsets re-based: an entity belongs to the sentence it starts in."""
    out: dict[str, TaggedDoc] = {}
    for k in range(0, len(gold.docs), join):
        group, bases, pos = gold.docs[k : k + join], [], 0
        for d in group:
            bases.append(pos)
            out[d.id] = TaggedDoc([], [])
            pos += len(d.text) + 1
        rec = records[f"d{k // join}"]
        for (s, e, label), text in zip(rec.spans, rec.texts):
            i = bisect.bisect_right(bases, s) - 1
            out[group[i].id].spans.append((s - bases[i], e - bases[i], label))
            out[group[i].id].texts.append(text)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--export", default=str(ROOT / "export"))
    ap.add_argument("--bundles", nargs="+", default=["softmax", "crf"])
    ap.add_argument("--variant", default="opt")
    ap.add_argument("--splits", nargs="+", default=["valid", "test"])
    ap.add_argument("--joins", nargs="+", type=int, default=[1, 20],
                    help="sentences per document (joined by one space): 1, and 20 as in a report's paragraphs")
    ap.add_argument("--against", default=None, metavar="NAME",
                    help="a bundle to compare the others with: paired difference and its 95%% interval per row")
    ap.add_argument("--out", default=str(HERE / "results" / "text"))
    args = ap.parse_args()
    bundles = list(dict.fromkeys(([args.against] if args.against else []) + args.bundles))  # the reference first

    directory = data_dir(args.data)
    train, _ = load_split(directory, "train")
    tmp = Path(tempfile.mkdtemp(prefix="ner-batch-text-"))
    quiet = dict(progress=False, say=lambda m: None, device="cpu", variant=args.variant)
    rows = []
    for split in args.splits:
        sents, _ = load_split(directory, split)
        gold = gold_of(sents)
        gold_t = trimmed_gold(gold)
        unseen = unseen_mask(sents, train)
        same_words = [[w for sent in split_document(d.text)[0] for w in sent] == s.tokens for d, s in zip(gold.docs, sents)]
        inputs = []
        for join in args.joins:
            groups = [(f"d{k // join}", sents[k : k + join], gold.docs[k : k + join]) for k in range(0, len(sents), join)]
            inputs.append((join, "tokens", write_jsonl(tmp / f"{split}-{join}-tokens.jsonl", (
                {"id": i, "tokens": [w for s in ss for w in s.tokens]} for i, ss, _ in groups))))
            inputs.append((join, "text", write_jsonl(tmp / f"{split}-{join}-text.jsonl", (
                {"id": i, "text": " ".join(d.text for d in ds)} for i, _, ds in groups))))
        reference: dict[tuple[int, str, str], object] = {}  # (join, input, trimmed or not) -> the --against bundle's counts, shape (S, 3)
        for name in bundles:
            bundle = Path(args.export) / name
            if not (bundle / "manifest.json").is_file():
                if name == args.against:
                    sys.exit(f"--against {name}: expected a bundle at {bundle} (a directory with manifest.json), found none")
                log(f"{bundle}: no bundle, skipped (make train && make export)")
                continue
            for join, kind, path in inputs:
                out = tmp / f"{name}-{split}-{join}-{kind}-out.jsonl"
                tag_corpus([str(path)], bundle, out, **quiet)
                tags = per_sentence(read_tags(out)[0], gold, join)
                tags_t = trimmed_tags(gold, tags)

                def f1(keep, gold=gold, tags=tags):
                    return round(score_spans(part(gold, keep), tags, types=gold.types, rounds=0)["f1"] * 100, 2)
                row = {"bundle": name, "split": split, "join": join, "input": kind, "sentences": len(sents),
                       "f1": f1([True] * len(sents)), "unseen_f1": f1(unseen),
                       "same_words": sum(same_words), "f1_same_words": f1(same_words),
                       "f1_other_words": f1([not k for k in same_words]),
                       "f1_trimmed": f1([True] * len(sents), gold_t, tags_t), "unseen_f1_trimmed": f1(unseen, gold_t, tags_t)}
                if args.against:
                    for key, g, t in (("against", gold, tags), ("against_trimmed", gold_t, tags_t)):
                        units, _ = scored_units(g, t)
                        counts = unit_counts(units, gold.types)  # shape: (S, 3); every sentence has its record
                        if name == args.against:
                            reference[(join, kind, key)] = counts
                        else:
                            b = bootstrap(counts, unseen, against=reference[(join, kind, key)])
                            row[key] = {"bundle": args.against, **{
                                which: {"difference": round(b[which]["difference"]["f1"] * 100, 2),
                                        "interval": [round(x * 100, 2) for x in b[which]["difference"]["interval"]]}
                                for which in ("all", "unseen")}}
                log(f"{name} {split} join {join} {kind}: F1 {row['f1']} (unseen {row['unseen_f1']}); sentences the segmenter cuts "
                    f"as DNRTI does ({row['same_words']}): {row['f1_same_words']}, the others: {row['f1_other_words']}")
                rows.append(row)
    info = machine()
    from ner_batch.cpu import cpu_info

    info["cpu_features"] = cpu_info()
    result = {"machine": info, "command": "make bench-text", "variant": args.variant, "against": args.against, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"Machine: {info['cpu']} ({info['cpu_features']['class']}), {info['cores']} cores; variant {args.variant}",
             "Command: `make bench-text`. Each DNRTI sentence one document, scored by `ner-batch score` (exact character spans).", "",
             "| bundle | split | sentences per document | input | F1 | unseen F1 | sentences cut into DNRTI's tokens | F1 on them | F1 on the others "
             "| span edges trimmed: F1 / unseen |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    if args.against:
        lines[-2] += (f" minus {args.against} (95% interval) | unseen minus {args.against} "
                      f"| trimmed minus {args.against} (95% interval) | trimmed unseen minus {args.against} |")
        lines[-1] += "---:|---:|---:|---:|"

    def diff(part):
        return f"{part['difference']:+.2f} ({part['interval'][0]:+.2f} to {part['interval'][1]:+.2f})"

    for r in rows:
        lines.append(f"| {r['bundle']} | {r['split']} | {r['join']} | {r['input']} | {r['f1']} | {r['unseen_f1']} | "
                     f"{r['same_words']} of {r['sentences']} | {r['f1_same_words']} | {r['f1_other_words']} | "
                     f"{r['f1_trimmed']} / {r['unseen_f1_trimmed']} |")
        if args.against:
            for key in ("against", "against_trimmed"):
                lines[-1] += f" {diff(r[key]['all'])} | {diff(r[key]['unseen'])} |" if key in r else " – | – |"
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
