"""Benchmark helpers: timing with warm-up and repeats, peak RSS of a command, machine facts."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable


def timed(fn: Callable[[], Any], *, warm: Callable[[], Any] | None = None, repeats: int = 3) -> dict[str, Any]:
    """Run ``warm`` (default: ``fn``) once untimed, then ``fn`` ``repeats`` times; median and all seconds."""
    result = (warm or fn)()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(runs), "runs_s": [round(r, 4) for r in runs], "result": result}


def peak_rss_mb(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run ``cmd`` in a fresh wrapper process; (peak RSS of its largest process in MB, seconds, stderr tail)."""
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "dt = time.perf_counter() - t\n"
        "print(json.dumps({'rc': p.returncode, 'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
        " 'seconds': dt, 'stderr': p.stderr[-2000:]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, env=env)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    if info["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{info['stderr']}")
    return info["maxrss_kb"] / 1024.0, info["seconds"], info["stderr"]


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    import importlib.metadata as md

    versions = {}
    for name in ("torch", "transformers", "onnxruntime-gpu", "onnxruntime", "optimum", "optimum-onnx", "numpy", "tokenizers"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    from ner_batch.cpu import cpu_info

    return {"cpu": cpu, "cpu_features": cpu_info(), "cores": os.cpu_count(), "memory": mem, "python": platform.python_version(),
            "platform": platform.platform(), "gpu": "none", "versions": versions}
