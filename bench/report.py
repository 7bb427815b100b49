"""Benchmark results: ratios, targets, JSON + Markdown table + PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BASELINE = "HF pipeline (PyTorch eager), batch 32"


def _find(rows, section, prefix):
    return [r for r in rows if r["section"] == section and r["system"].startswith(prefix)]


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    base = _find(rows, "softmax", BASELINE)
    out: list[dict[str, Any]] = []

    def add(name, value, goal, met, note=""):
        out.append({"target": name, "value": value, "goal": goal, "met": bool(met), "note": note})

    if base:
        b = base[0]["sentences_per_s"]
        fp32 = max(_find(rows, "softmax", "ner-batch fp32"), key=lambda r: r["sentences_per_s"], default=None)
        int8 = max(_find(rows, "softmax", "ner-batch int8"), key=lambda r: r["sentences_per_s"], default=None)
        if fp32:
            add("ner-batch fp32 vs HF pipeline (batch 32)", f"{fp32['sentences_per_s'] / b:.2f}x ({fp32['system']})", ">= 3x",
                fp32["sentences_per_s"] / b >= 3)
        if int8:
            add("ner-batch int8 vs HF pipeline (batch 32)", f"{int8['sentences_per_s'] / b:.2f}x ({int8['system']})", ">= 6x",
                int8["sentences_per_s"] / b >= 6)
        if fp32 and int8:
            d = fp32["f1"] - int8["f1"]
            add("int8 test F1 vs fp32", f"{int8['f1']:.2f} vs {fp32['f1']:.2f} ({-d:+.2f})", "within 0.5 point", abs(d) <= 0.5)
    local, on_ray = _find(rows, "engines", "ner-batch int8, 2 workers, engine local"), _find(rows, "engines", "ner-batch int8, 2 workers, engine ray")
    if local and on_ray:
        slower = local[0]["sentences_per_s"] / on_ray[0]["sentences_per_s"] - 1
        add("--engine ray vs local, 2 workers, start-up excluded", f"{slower:+.1%} time", "at most 10% slower", slower <= 0.10)
    roof = _find(rows, "roofline", "ner-batch fp32")
    if roof:
        add("fp32 encoder share of the roofline", f"{roof[0]['share']:.0%}", ">= 75%", roof[0]["share"] >= 0.75)
    dec = _find(rows, "decode", "batch 256")
    if dec:
        add("NumPy Viterbi vs pytorch-crf decode, batch 256", f"{dec[0]['speedup']}x", ">= 20x", dec[0]["speedup"] >= 20)
    shares = [r for r in rows if r.get("decode_share") is not None and r["section"] == "crf"]
    shares = shares or [r for r in rows if r.get("decode_share") is not None]
    if shares:
        worst = max(shares, key=lambda r: r["decode_share"])
        add("decoding + post-processing share of end-to-end", f"{worst['decode_share']:.1%} ({worst['section']}, {worst['system']})",
            "<= 5%", worst["decode_share"] <= 0.05)
    scale = sorted((r for r in rows if r["section"] == "scaling"), key=lambda r: r["factor"])
    if len(scale) >= 2:
        lo, hi = scale[0], scale[-1]
        growth = hi["peak_rss_mb"] / lo["peak_rss_mb"] - 1
        add(f"peak RSS at {hi['factor']}x vs {lo['factor']}x", f"{hi['peak_rss_mb']:.0f} vs {lo['peak_rss_mb']:.0f} MB ({growth:+.1%})",
            "within 10%", abs(growth) <= 0.10)
    return out


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
        f"median of {result['repeats']} timed runs after a warm-up. Ratios are against `{BASELINE}` in this run.",
        "",
        "| section | system | sentences/s | word pieces/s | × HF pipeline | test F1 | unseen F1 | padding |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "sentences_per_s" in r and r["section"] != "scaling":
            lines.append(
                f"| {r['section']} | {r['system']} | {r['sentences_per_s']:,.1f} | {r.get('word_pieces_per_s', 0):,.0f} | "
                f"{r.get('ratio', '')} | {r.get('f1', '')} | {r.get('unseen_f1', '')} | {r.get('padding_ratio', '')} |"
            )
    dec = [r for r in rows if r["section"] == "decode"]
    if dec:
        lines += ["", "| decoding alone (27 labels, up to 40 words) | NumPy Viterbi ms | NumPy marginals ms | pytorch-crf decode ms | speed-up |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['system'].split(':')[0]} | {r['numpy_ms']} | {r['numpy_marginals_ms']} | {r['pytorch_crf_ms']} | {r['speedup']}x |" for r in dec]
    roof = [r for r in rows if r["section"] == "roofline"]
    if roof:
        lines += ["", "| roofline | matmul GFLOP/s | MFLOP/token | compute-bound tokens/s | measured word pieces/s | share |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['system']} | {r['matmul_gflops']} | {r['mflops_per_token']} | {r['roofline_tokens_per_s']:,.0f} | "
                  f"{r['word_pieces_per_s']:,.0f} | {r['share']:.0%} |" for r in roof]
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
    lines += ["", "| target | value | goal | met |", "|---|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | {t['goal']} | {'yes' if t['met'] else '**no**'} |" for t in result["targets"]]
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["section"] in ("softmax", "crf") and "sentences_per_s" in r]
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


def write_report(result: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    base = [r for r in result["rows"] if r["section"] == "softmax" and r["system"] == BASELINE]
    if base:
        for r in result["rows"]:
            if "sentences_per_s" in r and r["section"] in ("softmax", "crf", "raw text"):
                r["ratio"] = round(r["sentences_per_s"] / base[0]["sentences_per_s"], 2)
    result["targets"] = targets(result["rows"])
    paths = [out_dir / "latest.json", out_dir / "latest.md", out_dir / "latest.png"]
    paths[0].write_text(json.dumps(result, indent=1) + "\n")
    paths[1].write_text(markdown(result))
    chart(result, paths[2])
    return paths
