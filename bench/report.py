"""Benchmark results: ratios, targets, JSON + Markdown table + PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any



def _find(rows, section, prefix):
    return [r for r in rows if r["section"] == section and r["system"].startswith(prefix)]


def best_peer(rows: list[dict[str, Any]], precision: str) -> dict[str, Any] | None:
    peers = [r for r in rows if r.get("peer") and r.get("precision") == precision]
    return max(peers, key=lambda r: r["sentences_per_s"], default=None)


def fp32_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(_find(rows, "softmax", "ner-batch fp32"), key=lambda r: r["sentences_per_s"], default=None)


def targets(rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name, value, goal, met, note=""):
        out.append({"target": name, "value": value, "goal": goal, "met": bool(met), "note": note})

    for precision, ours in (("fp32", ("ner-batch fp32", "ner-batch opt")), ("int8", ("ner-batch int8",))):
        peer = best_peer(rows, precision)
        mine = max((r for r in rows if r["section"] == "softmax" and r["system"].startswith(ours)
                    and not r["system"].startswith("ner-batch int8-dynamic")), key=lambda r: r["sentences_per_s"], default=None)
        if peer and mine:
            x = mine["sentences_per_s"] / peer["sentences_per_s"]
            add(f"ner-batch {precision} vs the best {precision} peer", f"{x:.2f}x ({mine['system']} vs {peer['system']})", ">= 2x", x >= 2)
            d = mine["f1"] - peer.get("word_fed_f1", peer["f1"])
            add(f"{precision}: ner-batch F1 vs that peer fed the words", f"{mine['f1']:.2f} vs {peer.get('word_fed_f1', peer['f1']):.2f} ({d:+.2f})",
                "equal or better (within 0.5)", d >= -0.5)
    peer = best_peer(rows, "int8")
    dyn = max(_find(rows, "softmax", "ner-batch int8-dynamic"), key=lambda r: r["sentences_per_s"], default=None)
    if peer and dyn:
        x = dyn["sentences_per_s"] / peer["sentences_per_s"]
        d = dyn["f1"] - peer.get("word_fed_f1", peer["f1"])
        add("int8-dynamic (not batch-independent) vs the best int8 peer", f"{x:.2f}x ({dyn['system']}), F1 {dyn['f1']:.2f} vs "
            f"{peer.get('word_fed_f1', peer['f1']):.2f} ({d:+.2f})", ">= 2x at equal F1", x >= 2 and d >= -0.5)
    fp32 = max(_find(rows, "softmax", "ner-batch fp32"), key=lambda r: r["sentences_per_s"], default=None)
    int8 = max(_find(rows, "softmax", "ner-batch int8,"), key=lambda r: r["sentences_per_s"], default=None)
    if fp32 and int8:
        d = fp32["f1"] - int8["f1"]
        add("int8 test F1 vs fp32", f"{int8['f1']:.2f} vs {fp32['f1']:.2f} ({-d:+.2f})", "within 0.5 point", abs(d) <= 0.5)
    roof = _find(rows, "roofline", "ner-batch fp32")
    if roof:
        add("fp32 encoder share of the roofline (steady state)", f"{roof[0]['share']:.0%}", ">= 90%", roof[0]["share"] >= 0.90)
    peer = best_peer(rows, "fp32")
    if roof and peer and fp32_row(rows):
        mine = fp32_row(rows)
        per_sentence = mine["word_pieces_per_s"] / mine["sentences_per_s"]  # word pieces ner-batch feeds per sentence
        need = 2 * peer["sentences_per_s"] * per_sentence / roof[0]["roofline_tokens_per_s"]
        add("feasibility: 2x the best fp32 peer needs this share of the fp32 roofline, encoder alone", f"{need:.0%} "
            f"(2 x {peer['sentences_per_s']:.1f} sent/s x {per_sentence:.1f} pieces / {roof[0]['roofline_tokens_per_s']:,.0f} tokens/s)",
            "<= 100% (else out of reach on this machine)", need <= 1.0)
    dec = _find(rows, "decode", "batch 256")
    if dec:
        add("NumPy Viterbi vs pytorch-crf decode, batch 256", f"{dec[0]['speedup']}x", ">= 20x", dec[0]["speedup"] >= 20)
    shares = [r for r in rows if r.get("decode_share") is not None]
    if shares:
        worst = max(shares, key=lambda r: r["decode_share"])
        add("decoding + records share of end-to-end, every row", f"{worst['decode_share']:.1%} worst ({worst['section']}, {worst['system']})",
            "<= 3%", worst["decode_share"] <= 0.03)
    scale = sorted((r for r in rows if r["section"] == "scaling"), key=lambda r: r["factor"])
    if len(scale) >= 2:
        lo, hi = scale[0], scale[-1]
        growth = hi["peak_rss_mb"] / lo["peak_rss_mb"] - 1
        add(f"peak RSS at {hi['factor']}x vs {lo['factor']}x", f"{hi['peak_rss_mb']:.0f} vs {lo['peak_rss_mb']:.0f} MB ({growth:+.1%})",
            "within 10%", abs(growth) <= 0.10)
    startup = (extra or {}).get("startup_s")
    if scale and startup:
        big = scale[-1]
        share = startup["median_s"] / big["process_seconds"]
        add(f"start-up share of the {big['factor']}x run", f"{share:.1%} ({startup['median_s']} s of {big['process_seconds']} s)",
            "< 5%", share < 0.05)
    return out


def _interleaved_table(rows: list[dict[str, Any]], what: str, ratio: str) -> list[str]:
    """Lines of a table of bundles timed side by side (bench/run.py ``interleaved``); none without rows."""
    if not rows:
        return []
    lines = ["", f"{what}, 1 worker, all warmed, {rows[0].get('rounds', '')} timed rounds interleaved; medians:", "",
             f"| bundle | precision | sentences/s | word pieces/s | × {ratio} | test F1 | unseen F1 |", "|---|---|---:|---:|---:|---:|---:|"]
    return lines + [f"| {r['system']} | {r['precision']} | {r['sentences_per_s']:,.1f} | {r['word_pieces_per_s']:,.0f} | "
                    f"{r.get('speed_vs_first', r.get('speed_vs_no_markers', ''))} | {r['f1']} | {r['unseen_f1']} |" for r in rows]


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    m = result["machine"]
    lines = [
        f"# ner-batch benchmark — {result['started']}",
        "",
        f"Machine: {m['cpu']} ({m.get('cpu_features', {}).get('class', '?')}: {', '.join(m.get('cpu_features', {}).get('flags', []))}), "
        f"{m['cores']} cores, {m['memory']}, no GPU; Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"Command: `{result['command']}` ({result['seconds']:.0f} s). Timing corpus: {result['timing_corpus']}; "
        f"median of {result['repeats']} timed runs after a warm-up. "
        + (f"Each ratio is against the best peer row of the same precision in this run: fp32 "
           f"`{result['best_peers'].get('fp32', '-')}`, int8 `{result['best_peers'].get('int8', '-')}`. Peers are timed warm "
           "in-process; ner-batch" if result.get("best_peers") else "No peers in this run, so no ratios; ner-batch")
        + " rows include reading, writing and (per run) the session start."
        + (" Models: " + ", ".join(f"{h} `{v['run']}` / `{v['bundle']}`" for h, v in result["models"].items()) + "."
           if result.get("models") else ""),
    ]
    main_rows = [r for r in rows if "sentences_per_s" in r and r["section"] not in ("scaling", "engines", "candidates", "markers", "pooling", "ensembles")]
    if main_rows:  # a run of other sections only has none
        lines += ["", "| section | system | precision | sentences/s | word pieces/s | × best peer | test F1 | unseen F1 | F1, fed the words | padding |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in main_rows:
        lines.append(
            f"| {r['section']} | {r['system']} | {r.get('precision', '')} | {r['sentences_per_s']:,.1f} | {r.get('word_pieces_per_s', 0):,.0f} | "
            f"{r.get('ratio', r.get('raw_ratio', ''))} | {r.get('f1', '')} | {r.get('unseen_f1', '')} | {r.get('word_fed_f1', '')} | {r.get('padding_ratio', '')} |"
        )
    raw = next((r for r in rows if r.get("raw_ratio") is not None), None)
    if raw:
        lines.append(f"\nRaw-text rows: the ratio is against `{raw['ratio_vs']}` (same documents, same sentence splitter, "
                     "medians like the rest); the DNRTI rows' ratios are against the best peer of their precision.")
    dec = [r for r in rows if r["section"] == "decode"]
    if dec:
        lines += ["", "| decoding alone (27 labels, up to 40 words) | NumPy Viterbi ms | NumPy marginals ms | pytorch-crf decode ms | "
                  "speed-up of what the CRF path runs (Viterbi + marginals) |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['system'].split(':')[0]} | {r['numpy_ms']} | {r['numpy_marginals_ms']} | {r['pytorch_crf_ms']} | {r['speedup']}x |" for r in dec]
    roof = [r for r in rows if r["section"] == "roofline"]
    if roof:
        lines += ["", "| roofline | matmul GFLOP/s | MFLOP/token | compute-bound tokens/s | measured word pieces/s | share |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['system']} | {r['matmul_gflops']} | {r['mflops_per_token']} | {r['roofline_tokens_per_s']:,.0f} | "
                  f"{r['word_pieces_per_s']:,.0f} | {r['share']:.0%} |" for r in roof]
        sg = result.get("extra", {}).get("sgemm_gflops")
        if sg:
            lines.append(f"\nfp32 sgemm at 4096x384 @ 384x1536 on this machine: NumPy {sg['numpy']} GFLOP/s, ONNX Runtime MatMul "
                         f"{sg['onnxruntime']} GFLOP/s; the roofline takes the faster. MFLOP/token counts the encoder's weight "
                         "MatMuls and the attention scores; measured word pieces/s is the encoder alone at steady state.")
    eng = [r for r in rows if r["section"] == "engines"]
    if eng:
        lines += ["", "| engines (same corpus, cores, workers) | sentences/s | median s | peak RSS MB (driver + workers/actors + Ray) | same output |",
                  "|---|---:|---:|---:|---|"]
        lines += [f"| {r['system']} | {r['sentences_per_s']:,.1f} | {r['median_s']} | {r['peak_rss_mb']} | {r.get('same_output_as_local', '')} |"
                  for r in eng]
        if result.get("extra", {}).get("ray_startup_s") is not None:
            lines.append(f"\nRay start-up (`ray.init`, a local Ray), timed apart: {result['extra']['ray_startup_s']} s.")
    sc = [r for r in rows if r["section"] == "scaling"]
    if sc:
        lines += ["", "| scaling | sentences | sentences/s | process s | peak RSS MB | padding |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['system']} | {r['sentences']:,} | {r['sentences_per_s']:,.1f} | {r['process_seconds']} | {r['peak_rss_mb']} | {r['padding_ratio']} |" for r in sc]
    cand = [r for r in rows if r["section"] == "candidates"]
    if cand:
        lines += ["", "Speed candidates (softmax bundle, DNRTI test x3, one process with 2 ONNX Runtime threads, steady state: "
                  "sessions started and warmed before timing, rounds interleaved; the ratio is against the shipped default "
                  "of the same precision, first row of each):", "",
                  "| candidate | precision | sentences/s | word pieces/s | × default | test F1 | unseen F1 |", "|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['system']} | {r['precision']} | {r['sentences_per_s']:,.1f} | {r['pieces_per_s']:,.0f} | {r['vs_default']} | "
                  f"{r['f1']} | {r['unseen_f1']} |" for r in cand]
    for section, what, ratio in (
        ("markers", "Shape markers (issue 10): each head's bundle without and with markers", "no markers"),
        ("pooling", "Word pooling (issue 10): each bundle of a model trained with `--word-pooling mean` beside the same "
                    "weights exported with first-piece pooling (the shipped models' pooling; F1 of those rows is not a model's)", "first piece"),
        ("ensembles", "Ensemble bundles (issue 10): each named ensemble bundle beside its head's default bundle", "default"),
    ):
        lines += _interleaved_table([r for r in rows if r["section"] == section], what, ratio)
    extra = result.get("extra", {})
    if extra.get("startup_s"):
        lines.append(f"\nStart-up of `ner-batch tag` (process start to exit on one sentence, {extra['startup_s']['variant']}): "
                     f"{extra['startup_s']['median_s']} s, median of 3.")
    for variant, ops in (extra.get("ort_profile_top_ops") or {}).items():
        lines.append(f"\nONNX Runtime profile, {variant} (share of kernel time by operator type): "
                     + ", ".join(f"{op} {v['share']:.0%}" for op, v in ops.items()))
    if result["targets"]:  # a run of some sections only may have none to judge
        lines += ["", "| target | value | goal | met |", "|---|---|---|---|"]
        lines += [f"| {t['target']} | {t['value']} | {t['goal']} | {'yes' if t['met'] else '**no**'} |" for t in result["targets"]]
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["section"] in ("softmax", "crf") and "sentences_per_s" in r]
    if not rows:  # a run of other sections only
        return
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(rows) + 1.2))
    names = [f"[{r['section']}] {r['system']}" for r in rows]
    vals = [r["sentences_per_s"] for r in rows]
    colors = ["C1" if r["system"].startswith("ner-batch") else "C0" for r in rows]
    ax.barh(names[::-1], vals[::-1], color=colors[::-1])
    for i, (v, r) in enumerate(zip(vals[::-1], rows[::-1])):
        ax.text(v, i, f" {v:,.0f}  (F1 {r.get('f1', '-')})", va="center", fontsize=8)
    ax.set_xlabel("sentences/s (DNRTI test, CPU, 2 cores)")
    ax.set_xlim(0, max(vals) * 1.3)
    ax.set_title(f"ner-batch vs peers — {result['started']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(result: dict[str, Any], out_dir: Path, stem: str = "latest") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    best = {p: best_peer(result["rows"], p) for p in ("fp32", "int8")}
    result["best_peers"] = {p: b["system"] for p, b in best.items() if b}
    for r in result["rows"]:
        b = best.get(r.get("precision", ""))
        if b and "sentences_per_s" in r and r["section"] in ("softmax", "crf"):
            r["ratio"] = round(r["sentences_per_s"] / b["sentences_per_s"], 2)
            r["ratio_vs"] = b["system"]
    result["targets"] = targets(result["rows"], result.get("extra"))
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md", out_dir / f"{stem}.png"]
    paths[0].write_text(json.dumps(result, indent=1) + "\n")
    paths[1].write_text(markdown(result))
    chart(result, paths[2])
    return [p for p in paths if p.exists()]
